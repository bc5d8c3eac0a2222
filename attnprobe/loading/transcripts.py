"""Turning a transcript into a model's label ids and token strings, with errors a user can act on.

Two kinds cover the command line's models: :class:`CharacterTokenizer` (one label per character,
attnprobe's Conformer and torchaudio CTC heads) and :class:`HuggingFaceTokenizer` (a
``transformers`` tokenizer: Whisper's byte-level BPE, Wav2Vec2's CTC characters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from attnprobe.errors import InputError


@dataclass(frozen=True)
class Transcript:
    """A transcript as labels: ``ids[i]`` is the label id of token string ``tokens[i]``."""

    text: str
    ids: list[int]
    tokens: list[str]


class TextTokenizer(ABC):
    """Text -> :class:`Transcript`. ``word_style`` tells :mod:`attnprobe.alignment.words` how the
    token strings form words."""

    word_style: str

    def encode(self, text: str) -> Transcript:
        """The labels of ``text``.

        Raises:
            InputError: the text is empty, or has characters the model has no label for.
        """
        cleaned = " ".join(text.split())
        if not cleaned:
            raise InputError("the transcript is empty; give the words spoken in the audio "
                             "(--text 'the words', or a text column in the manifest)")
        return self._encode(cleaned)

    @abstractmethod
    def _encode(self, text: str) -> Transcript:
        """Labels of ``text``: non-empty, single spaces between words."""

    def spell(self, text: str) -> Transcript:
        """The labels of ``text`` one character each (a character tokenizer's own labels)."""
        return self.encode(text)


class CharacterTokenizer(TextTokenizer):
    """One label per character; spaces become ``separator``.

    Args:
        ids: symbol -> label id (the separator included).
        separator: the word-separator symbol (``" "`` or ``"|"``).
        case: ``"lower"`` / ``"upper"``: the case the labels are written in.
    """

    word_style = "characters"

    def __init__(self, ids: Mapping[str, int], separator: str,
                 case: Literal["lower", "upper"]) -> None:
        self.ids = dict(ids)
        self.separator = separator
        self.case = case

    def _encode(self, text: str) -> Transcript:
        text = text.lower() if self.case == "lower" else text.upper()
        symbols = [self.separator if character == " " else character for character in text]
        unknown = sorted({symbol for symbol in symbols if symbol not in self.ids})
        if unknown:
            raise InputError(
                f"the transcript has characters the model has no label for: "
                f"{' '.join(repr(symbol) for symbol in unknown)}; write numbers as words and "
                f"drop punctuation (labels: {''.join(sorted(self.ids))})")
        return Transcript(text, [self.ids[symbol] for symbol in symbols], symbols)


class HuggingFaceTokenizer(TextTokenizer):
    """A ``transformers`` tokenizer without its special tokens.

    Args:
        tokenizer: e.g. ``WhisperTokenizer`` or ``Wav2Vec2CTCTokenizer``.
        word_style: how its token strings form words (``"byte_bpe"``, ``"characters"``).
        prefix_space: start the text with a space, as Whisper's decoder sees words mid-sentence.
        case: ``"upper"`` / ``"lower"`` to change the text's case first (CTC vocabularies are
            often upper-case letters only), ``None`` to keep it.
    """

    def __init__(self, tokenizer: Any, word_style: str, prefix_space: bool,
                 case: Literal["lower", "upper"] | None = None) -> None:
        self.tokenizer = tokenizer
        self.word_style = word_style
        self.prefix_space = prefix_space
        self.case = case

    def _encode(self, text: str) -> Transcript:
        if self.case is not None:
            text = text.lower() if self.case == "lower" else text.upper()
        ids = list(self.tokenizer((" " if self.prefix_space else "") + text,
                                  add_special_tokens=False).input_ids)
        unknown_id = self.tokenizer.unk_token_id
        tokens = list(self.tokenizer.convert_ids_to_tokens(ids))
        if unknown_id is not None and unknown_id in ids:
            letters = sorted({character for character in text
                              if self.tokenizer.convert_tokens_to_ids(character) == unknown_id
                              and character != " "})
            raise InputError(
                f"the transcript has characters the model's tokenizer does not know: "
                f"{' '.join(repr(letter) for letter in letters) or tokens}; write numbers as words "
                f"and use the model's alphabet (check its vocab.json)")
        if not ids:
            raise InputError(f"the tokenizer turned {text!r} into no labels; give the words "
                             f"spoken in the audio")
        return Transcript(text, ids, tokens)

    def spell(self, text: str) -> Transcript:
        """``text`` spelled with single-character tokens of the same vocabulary: for byte-level
        BPE, every byte of the text is its own token, except that a word's leading space joins
        its first character (``" the"`` -> ``"Ġt" "h" "e"``), so the tokens still mark where each
        word starts. Character vocabularies give their usual labels."""
        if self.word_style != "byte_bpe":
            return self.encode(text)
        cleaned = " ".join(text.split())
        if not cleaned:
            return self.encode(cleaned)
        if self.case is not None:
            cleaned = cleaned.lower() if self.case == "lower" else cleaned.upper()
        to_unicode = byte_level_characters()
        tokens: list[str] = []
        for index, word in enumerate(cleaned.split(" ")):
            space = " " if index > 0 or self.prefix_space else ""
            pieces = [to_unicode[byte] for byte in (space + word).encode("utf-8")]
            if space and self._known(pieces[0] + pieces[1]):
                pieces = [pieces[0] + pieces[1], *pieces[2:]]
            tokens += pieces
        ids = [self.tokenizer.convert_tokens_to_ids(token) for token in tokens]
        missing = sorted({token for token, label in zip(tokens, ids) if not self._known(token)})
        if missing:
            raise InputError(f"the tokenizer has no single-character tokens {missing}, so "
                             f"{text!r} cannot be spelled; align with targets='tokens'")
        return Transcript(cleaned, ids, tokens)

    def _known(self, token: str) -> bool:
        label = self.tokenizer.convert_tokens_to_ids(token)
        return label is not None and label != self.tokenizer.unk_token_id and \
            self.tokenizer.convert_ids_to_tokens(label) == token


@cache
def byte_level_characters() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte -> the printable character that stands for it in
    byte-level BPE vocabularies (``" "`` -> ``"Ġ"``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in mapping]
    mapping.update({byte: chr(256 + shift) for shift, byte in enumerate(others)})
    return mapping


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
