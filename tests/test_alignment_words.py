"""Tokens to words, word times, the Alignment result, TextGrid / CTM export and the plot."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.decoding import (
    alignment_from_label_frames,
    ctm_text,
    detect_word_style,
    frame_to_seconds,
    textgrid_text,
    tokens_to_words,
    write_ctm,
    write_textgrid,
)

SETTINGS = settings(max_examples=20, deadline=None)

word_lists = st.lists(
    st.text(alphabet="abcdefghij", min_size=1, max_size=6), min_size=1, max_size=6
)


def _pieces(word: str, cut: int) -> list[str]:
    """Split a word in two at ``cut`` (if that leaves two non-empty pieces)."""
    cut = cut % len(word)
    return [word[:cut], word[cut:]] if cut else [word]


def _tokenise(words: list[str], style: str, cuts: list[int]) -> tuple[list[str], list[range]]:
    tokens: list[str] = []
    ranges = []
    for index, (word, cut) in enumerate(zip(words, cuts)):
        start = len(tokens)
        pieces = _pieces(word, cut)
        if style == "sentencepiece":
            pieces[0] = "▁" + pieces[0]
        elif style == "byte_bpe":
            pieces[0] = ("Ġ" if index else "") + pieces[0]
        elif style == "decoded_byte_bpe":
            pieces[0] = (" " if index else "") + pieces[0]
        elif style == "continuation":
            pieces = [piece + "@@" for piece in pieces[:-1]] + [pieces[-1]]
        elif style == "characters":
            pieces = list(word)
        tokens += pieces
        ranges.append(range(start, len(tokens)))
        if style == "characters" and index < len(words) - 1:
            tokens.append("|")
    return tokens, ranges


@SETTINGS
@given(
    word_lists,
    st.lists(st.integers(0, 5), min_size=6, max_size=6),
    st.sampled_from(
        ["sentencepiece", "byte_bpe", "decoded_byte_bpe", "continuation", "characters"]
    ),
)
def test_every_tokenizer_style_round_trips_words(words, cuts, style):
    tokens, ranges = _tokenise(words, style, cuts)
    if style == "continuation":
        # Continuation marks sit only on split words: words that stay whole carry no marker.
        detectable = any(token.endswith("@@") for token in tokens)
    else:
        detectable = len(words) > 1 or style == "sentencepiece" and len(tokens) > 1
    chosen = "byte_bpe" if style == "decoded_byte_bpe" else style
    for requested in [chosen, "auto"] if detectable else [chosen]:
        grouped = tokens_to_words(tokens, requested)
        assert [word.text for word in grouped] == words
        assert [range(w.token_start, w.token_end) for w in grouped] == ranges


def test_detection_examples_and_ambiguity():
    assert detect_word_style(["▁he", "llo", "▁world"]) == "sentencepiece"
    assert detect_word_style(["he", "llo", "Ġworld"]) == "byte_bpe"
    assert detect_word_style(["he", "llo", " world"]) == "byte_bpe"
    assert detect_word_style(["he@@", "llo", "world"]) == "continuation"
    assert detect_word_style(["h", "i", "|", "y", "o"]) == "characters"
    with pytest.raises(ValueError, match="pass style="):
        detect_word_style(["hello", "world"])


def test_byte_level_tokens_are_decoded_to_text():
    # GPT-2 byte-level strings: "Ġcaf" + "Ã©" is " café" in UTF-8 bytes.
    words = tokens_to_words(["Ġcaf", "Ã©", "Ġau", "Ġlait"])
    assert [word.text for word in words] == ["café", "au", "lait"]


def test_punctuation_tokens_join_the_neighbouring_word():
    words = tokens_to_words(["▁hello", "▁,", "▁world", "▁."])
    assert [(w.text, w.token_start, w.token_end) for w in words] == [
        ("hello,", 0, 2),
        ("world.", 2, 4),
    ]
    leading = tokens_to_words(["▁\u00bf", "▁que", "?"])
    assert [(w.text, w.token_start, w.token_end) for w in leading] == [("\u00bfque?", 0, 3)]
    kept = tokens_to_words(["▁hello", "▁,"], attach_punctuation=False)
    assert [w.text for w in kept] == ["hello", ","]


def test_frames_map_back_to_input_frames():
    # Frame 3 at subsampling 6 over 10 ms features covers [0.18 s, 0.24 s).
    assert frame_to_seconds(3, 0.01, 6) == pytest.approx(0.18)
    assert frame_to_seconds(4, 0.01, 6) == pytest.approx(0.24)


def _example_alignment():
    tokens = ["▁the", "▁ca", "t", "▁sat"]
    label_frames = np.array([[1, 3], [4, 5], [5, 7], [9, 12]])
    return alignment_from_label_frames(
        label_frames,
        tokens,
        frame_shift_s=0.01,
        subsampling=4,
        num_frames=14,
        method="test",
        path=np.array([[0, 1], [0, 2], [1, 4], [2, 5], [2, 6], [3, 9], [3, 10], [3, 11]]),
        scores=np.random.default_rng(0).normal(size=(4, 14)),
    )


def test_word_spans_run_from_first_to_last_token_frame():
    alignment = _example_alignment()
    assert [(w.text, w.start_frame, w.end_frame) for w in alignment.words] == [
        ("the", 1, 3),
        ("cat", 4, 7),
        ("sat", 9, 12),
    ]
    cat = alignment.words[1]
    assert (cat.start_s, cat.end_s) == pytest.approx((0.16, 0.28))
    assert (cat.label_start, cat.label_end) == (1, 3)
    assert alignment.duration_s == pytest.approx(0.56)


def test_result_serialises_and_summarises():
    alignment = _example_alignment()
    data = json.loads(alignment.to_json())
    assert [word["text"] for word in data["words"]] == ["the", "cat", "sat"]
    assert data["labels"][2]["start_frame"] == 5 and "scores" not in data
    assert len(alignment.to_dict(include_scores=True)["scores"]) == 4
    table = alignment.summary()
    assert "3 words, 4 labels" in table and re.search(r"cat\s+0\.160\s+0\.280", table)


def _parse_textgrid(text: str) -> dict[str, list[tuple[float, float, str]]]:
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    current = None
    for name, xmin, xmax, label in re.findall(
        r'name = "([^"]*)"|xmin = ([\d.]+) \n\s+xmax = ([\d.]+) \n\s+text = "((?:[^"]|"")*)"', text
    ):
        if name:
            current = tiers.setdefault(name, [])
        elif current is not None:
            current.append((float(xmin), float(xmax), label.replace('""', '"')))
    return tiers


def _assert_tiles(intervals, duration):
    assert intervals[0][0] == 0.0 and intervals[-1][1] == pytest.approx(duration)
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:]):
        assert start == end
    assert all(end > start for start, end, _ in intervals)


def test_textgrid_tiles_the_duration_with_empty_gaps(tmp_path):
    alignment = _example_alignment()
    path = write_textgrid(alignment, tmp_path / "utt.TextGrid", duration_s=0.6)
    tiers = _parse_textgrid(path.read_text(encoding="utf-8"))
    assert set(tiers) == {"words", "labels"}
    for intervals in tiers.values():
        _assert_tiles(intervals, 0.6)
    words = tiers["words"]
    assert [text for _, _, text in words if text] == ["the", "cat", "sat"]
    assert words[0] == (0.0, 0.04, "")
    assert (0.16, 0.28, "cat") in words


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), min_size=1, max_size=8))
def test_textgrid_tiles_any_monotone_alignment(gaps_and_lengths):
    spans, cursor = [], 0
    for gap, length in gaps_and_lengths:
        spans.append((cursor + gap, cursor + gap + length))
        cursor += gap + length
    tokens = [f"▁w{index}" for index in range(len(spans))]
    alignment = alignment_from_label_frames(
        np.array(spans),
        tokens,
        frame_shift_s=0.01,
        subsampling=3,
        num_frames=cursor + 2,
        method="test",
    )
    tiers = _parse_textgrid(textgrid_text(alignment))
    _assert_tiles(tiers["words"], alignment.duration_s)
    assert [text for _, _, text in tiers["words"] if text] == [t[1:] for t in tokens]


def test_textgrid_splits_a_shared_frame_between_neighbours():
    alignment = alignment_from_label_frames(
        np.array([[0, 3], [2, 5]]),
        ["▁a", "▁b"],
        frame_shift_s=0.02,
        subsampling=1,
        num_frames=5,
        method="dtw-like",
    )
    words = _parse_textgrid(textgrid_text(alignment))["words"]
    assert words == [(0.0, 0.05, "a"), (0.05, 0.1, "b")]


def test_ctm_lines(tmp_path):
    alignment = _example_alignment()
    assert ctm_text("utt1", alignment).splitlines()[1] == "utt1 1 0.160 0.120 cat"
    path = write_ctm({"a": alignment, "b": alignment}, tmp_path / "all.ctm")
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and lines[3].startswith("b 1 0.040 0.080 the")


def test_plot_returns_a_figure_with_the_words():
    pytest.importorskip("matplotlib")
    figure = _example_alignment().plot()
    ax = figure.axes[0]
    assert ax.get_xlabel() == "time (s)"
    (words_axis,) = ax.child_axes
    assert [label.get_text() for label in words_axis.get_xticklabels()] == ["the", "cat", "sat"]
    assert ax.get_xlim() == pytest.approx((0.0, 0.56))
