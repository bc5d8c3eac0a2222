"""Turning a transcript into a model's label ids and token strings, with errors a user can act on.

Two kinds cover the command line's models: :class:`CharacterTokenizer` (one label per character,
attnprobe's Conformer and torchaudio CTC heads) and :class:`HuggingFaceTokenizer` (a
``transformers`` tokenizer: Whisper's byte-level BPE, Wav2Vec2's CTC characters).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
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


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
