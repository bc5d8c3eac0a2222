"""Tokens to words, and label frame spans to word times.

Four tokenizer conventions are understood:

- ``"sentencepiece"``: SentencePiece / BPE pieces where ``"▁"`` starts a word (``"▁he" "llo"``).
- ``"byte_bpe"``: Whisper / GPT-2 byte-level BPE where ``"Ġ"`` (raw vocabulary strings) or a
  leading space (decoded token strings) starts a word (``"Ġhe" "llo"`` or ``" he" "llo"``).
- ``"continuation"``: subword-nmt BPE where a trailing ``"@@"`` joins a token to the next one.
- ``"characters"``: one token per character with a word-separator token (``"|"`` or ``" "``).

Pass only the tokens being aligned: special tokens (start/end of sentence, language tags) would
become words of their own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from .result import Alignment, LabelSpan, WordSpan

WordStyle = Literal["auto", "sentencepiece", "byte_bpe", "continuation", "characters"]
WORD_STYLES = ("sentencepiece", "byte_bpe", "continuation", "characters")

SENTENCEPIECE_MARK = "▁"
BYTE_BPE_SPACE = "Ġ"
CONTINUATION_MARK = "@@"
CHARACTER_SEPARATORS = ("|", " ")


@dataclass(frozen=True)
class WordTokens:
    """One word and the tokens it is made of: ``tokens[token_start:token_end]``."""

    text: str
    token_start: int
    token_end: int


def detect_word_style(tokens: Sequence[str]) -> str:
    """Guess the tokenizer convention of ``tokens`` from its word markers.

    Raises:
        ValueError: when no marker decides it (several tokens, none with a marker).
    """
    if any(SENTENCEPIECE_MARK in token for token in tokens):
        return "sentencepiece"
    if any(token.startswith(BYTE_BPE_SPACE) for token in tokens):
        return "byte_bpe"
    if any(token.endswith(CONTINUATION_MARK) for token in tokens):
        return "continuation"
    if all(len(token) == 1 for token in tokens) and any(
        token in CHARACTER_SEPARATORS for token in tokens
    ):
        return "characters"
    if any(token.startswith(" ") for token in tokens[1:]):
        return "byte_bpe"
    if len(tokens) == 1:
        # One token without markers is one word under every style.
        return "sentencepiece"
    raise ValueError(
        f"cannot tell how tokens {list(tokens[:8])}... form words: none carries a word marker "
        f"('▁', 'Ġ', leading space, '@@', or a '|' / ' ' separator); pass style= one of "
        f"{WORD_STYLES} explicitly"
    )


def tokens_to_words(
    tokens: Sequence[str],
    style: WordStyle = "auto",
    *,
    separator: str | None = None,
    attach_punctuation: bool = True,
) -> list[WordTokens]:
    """Group token strings into words.

    Args:
        tokens: the transcript's token strings, ``(labels,)``.
        style: tokenizer convention (see the module docstring), or ``"auto"`` to detect it.
        separator: word-separator token for ``style="characters"``; default ``"|"`` if present,
            else ``" "``.
        attach_punctuation: a word made only of punctuation joins the previous word (the next
            one when it comes first), as in ``"hello" "," -> "hello,"``.

    Returns:
        Words in order; separator tokens and words with no text belong to no word.
    """
    if not tokens:
        return []
    chosen = detect_word_style(tokens) if style == "auto" else style
    if chosen == "sentencepiece":
        words = _split_at_word_starts(tokens, SENTENCEPIECE_MARK, _sentencepiece_text)
    elif chosen == "byte_bpe":
        is_raw_bytes = any(BYTE_BPE_SPACE in token for token in tokens)
        marker = BYTE_BPE_SPACE if is_raw_bytes else " "
        words = _split_at_word_starts(
            tokens, marker, _byte_level_text if is_raw_bytes else _plain_text
        )
    elif chosen == "continuation":
        words = _split_after_continuations(tokens)
    elif chosen == "characters":
        words = _split_at_separators(tokens, separator)
    else:
        raise ValueError(f"unknown word style {style!r}; use 'auto' or one of {WORD_STYLES}")
    return _attach_punctuation(words) if attach_punctuation else words


def _split_at_word_starts(
    tokens: Sequence[str], marker: str, to_text: Callable[[Sequence[str]], str]
) -> list[WordTokens]:
    starts = [0] + [i for i, token in enumerate(tokens) if i > 0 and token.startswith(marker)]
    ends = starts[1:] + [len(tokens)]
    words = [WordTokens(to_text(tokens[start:end]), start, end) for start, end in zip(starts, ends)]
    return [word for word in words if word.text]


def _sentencepiece_text(pieces: Sequence[str]) -> str:
    return "".join(pieces).replace(SENTENCEPIECE_MARK, " ").strip()


def _plain_text(pieces: Sequence[str]) -> str:
    return "".join(pieces).strip()


def _byte_level_text(pieces: Sequence[str]) -> str:
    """Decode GPT-2 byte-level strings (``"Ġcaf" "Ã©"`` -> ``"café"``) joined over the word."""
    decoder = _byte_decoder()
    joined = "".join(pieces)
    if not all(char in decoder for char in joined):
        return joined.replace(BYTE_BPE_SPACE, " ").strip()
    return bytes(decoder[char] for char in joined).decode("utf-8", errors="replace").strip()


@cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = list(printable)
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + shifted)
            shifted += 1
    return {chr(character): byte for byte, character in zip(printable, characters)}


def _split_after_continuations(tokens: Sequence[str]) -> list[WordTokens]:
    words: list[WordTokens] = []
    start = 0
    for i, token in enumerate(tokens):
        if not token.endswith(CONTINUATION_MARK) or i == len(tokens) - 1:
            pieces = [piece.removesuffix(CONTINUATION_MARK) for piece in tokens[start : i + 1]]
            words.append(WordTokens("".join(pieces).strip(), start, i + 1))
            start = i + 1
    return [word for word in words if word.text]


def _split_at_separators(tokens: Sequence[str], separator: str | None) -> list[WordTokens]:
    if separator is None:
        separator = "|" if "|" in tokens else " "
    words: list[WordTokens] = []
    start: int | None = None
    for i, token in enumerate([*tokens, separator]):
        if token == separator:
            if start is not None:
                words.append(WordTokens("".join(tokens[start:i]).strip(), start, i))
            start = None
        elif start is None:
            start = i
    return [word for word in words if word.text]


def _is_punctuation(text: str) -> bool:
    return all(unicodedata.category(char).startswith("P") for char in text)


def _attach_punctuation(words: list[WordTokens]) -> list[WordTokens]:
    if all(_is_punctuation(word.text) for word in words):
        return words
    merged: list[WordTokens] = []
    leading: WordTokens | None = None
    for word in words:
        if leading is not None:
            word, leading = _join(leading, word), None
        if not _is_punctuation(word.text):
            merged.append(word)
        elif merged:
            merged[-1] = _join(merged[-1], word)
        else:
            leading = word
    return merged


def _join(first: WordTokens, second: WordTokens) -> WordTokens:
    return WordTokens(first.text + second.text, first.token_start, second.token_end)


def frame_to_seconds(frame: int, frame_shift_s: float | None, subsampling: int = 1
                     ) -> float | None:
    """Start of model ``frame`` in seconds: it covers ``[frame, frame + 1) * subsampling * shift``;
    ``None`` when the frame shift is unknown.

    Frames at subsampling ``f`` map back to input frames: model frame ``i`` is input frames
    ``i * f .. (i + 1) * f - 1``.
    """
    return None if frame_shift_s is None else frame * subsampling * frame_shift_s


def label_spans(
    label_frames: np.ndarray,
    tokens: Sequence[str],
    *,
    frame_shift_s: float | None,
    subsampling: int = 1,
) -> list[LabelSpan]:
    """Label frame spans ``(labels, 2)`` as ``[start, end)`` -> :class:`LabelSpan` objects."""
    _check_label_frames(label_frames, len(tokens))
    return [
        LabelSpan(
            index=index,
            text=token,
            start_frame=int(start),
            end_frame=int(end),
            start_s=frame_to_seconds(int(start), frame_shift_s, subsampling),
            end_s=frame_to_seconds(int(end), frame_shift_s, subsampling),
        )
        for index, (token, (start, end)) in enumerate(zip(tokens, label_frames))
    ]


def word_spans(
    words: Sequence[WordTokens],
    label_frames: np.ndarray,
    *,
    frame_shift_s: float | None,
    subsampling: int = 1,
) -> list[WordSpan]:
    """Word times: from the first frame of a word's first token to the last frame of its last.

    Args:
        words: from :func:`tokens_to_words`.
        label_frames: ``(labels, 2)`` int, ``[start, end)`` model frames of every label.
        frame_shift_s: input feature shift in seconds (0.01 for 10 ms features); ``None`` when
            unknown (the spans then carry frames only).
        subsampling: frames of the score matrix per input feature frame (e.g. 6 for 60 ms).
    """
    spans = []
    for word in words:
        first = label_frames[word.token_start : word.token_end, 0].min()
        last = label_frames[word.token_start : word.token_end, 1].max()
        spans.append(
            WordSpan(
                text=word.text,
                start_s=frame_to_seconds(int(first), frame_shift_s, subsampling),
                end_s=frame_to_seconds(int(last), frame_shift_s, subsampling),
                start_frame=int(first),
                end_frame=int(last),
                label_start=word.token_start,
                label_end=word.token_end,
            )
        )
    return spans


def alignment_from_label_frames(
    label_frames: np.ndarray,
    tokens: Sequence[str],
    *,
    frame_shift_s: float | None,
    subsampling: int = 1,
    num_frames: int,
    method: str,
    word_style: WordStyle = "auto",
    path: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    path_score: float | None = None,
) -> Alignment:
    """Assemble an :class:`Alignment` from per-label frame spans ``(labels, 2)`` (in frames only
    when ``frame_shift_s`` is ``None``)."""
    if (frame_shift_s is not None and frame_shift_s <= 0) or subsampling < 1:
        raise ValueError(
            f"frame_shift_s={frame_shift_s} and subsampling={subsampling}: need a positive shift "
            f"in seconds (0.01 for 10 ms features) and an integer subsampling >= 1"
        )
    label_frames = np.asarray(label_frames, dtype=np.int64)
    if label_frames.size and label_frames[:, 1].max() > num_frames:
        raise ValueError(
            f"a label ends at frame {label_frames[:, 1].max()} but the utterance has {num_frames} "
            f"frames; pass num_frames= the valid frame count the spans were computed on"
        )
    timing = {"frame_shift_s": frame_shift_s, "subsampling": subsampling}
    return Alignment(
        labels=label_spans(label_frames, tokens, **timing),
        words=word_spans(tokens_to_words(tokens, word_style), label_frames, **timing),
        frame_shift_s=frame_shift_s,
        subsampling=subsampling,
        num_frames=num_frames,
        method=method,
        path=path,
        scores=scores,
        path_score=path_score,
    )


def _check_label_frames(label_frames: np.ndarray, num_tokens: int) -> None:
    if label_frames.shape != (num_tokens, 2):
        raise ValueError(
            f"label frame spans have shape {tuple(label_frames.shape)} but there are {num_tokens} "
            f"tokens; pass one [start, end) row per token, shape ({num_tokens}, 2)"
        )
    if num_tokens and (label_frames[:, 1] <= label_frames[:, 0]).any():
        raise ValueError(
            "a label span is empty (end <= start); every label needs at least one frame"
        )
