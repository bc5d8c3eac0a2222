"""The TIMIT sample in ``../shared/timit`` (80 utterances, 8 speakers, hand-labelled word
boundaries), read at run time for evaluation only: nothing of it is copied anywhere (CC BY-NC-SA,
see its README).

Halves: the tuning half (:data:`TUNING_SPEAKERS`, dialect regions 1-4) chooses settings, the
report half (:data:`REPORT_SPEAKERS`, regions 5-8) is where the figures are reported.

Byte order: 22 of the 80 wav files of this sample switch from little- to big-endian 16-bit samples
for a stretch (usually from some point of the speech to the end); read as little-endian those
stretches are full-scale noise, and Whisper hears noise or hallucinates. :func:`read_samples`
undoes it (``repair=True``): a two-state Viterbi over the samples (state: the byte order of that
sample) minimising the summed absolute difference between neighbouring samples plus a penalty per
switch. Speech is smooth, byte-swapped speech is not, so the path finds the swapped stretches.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TUNING_SPEAKERS = ("dr1-fvmh0", "dr2-marc0", "dr3-falk0", "dr4-maeb0")
REPORT_SPEAKERS = ("dr5-ftlg0", "dr6-mbma1", "dr7-fblv0", "dr8-mbcg0")
SAMPLE_RATE = 16000
SWITCH_PENALTY = 30000.0
"""Cost of one change of byte order, in summed sample differences (16-bit units)."""


@dataclass(frozen=True)
class TimitUtterance:
    """One utterance: ``words`` are ``(word, start s, end s)``, hyphenated words merged."""

    id: str
    samples: np.ndarray
    text: str
    words: list[tuple[str, float, float]]
    repaired: bool

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_half(corpus: Path, half: str, repair: bool = True) -> list[TimitUtterance]:
    """The utterances of ``half`` (``"tune"``, ``"report"`` or ``"all"``), sorted by id."""
    speakers = {"tune": TUNING_SPEAKERS, "report": REPORT_SPEAKERS,
                "all": TUNING_SPEAKERS + REPORT_SPEAKERS}[half]
    utterances = []
    for speaker in speakers:
        for wav in sorted((corpus / speaker).glob("*.wav")):
            text = wav.with_suffix(".txt").read_text().split(maxsplit=2)[2].strip()
            words = merged_words(text, [(word, int(start) / SAMPLE_RATE, int(end) / SAMPLE_RATE)
                                        for start, end, word in
                                        (line.split() for line in
                                         wav.with_suffix(".wrd").read_text().splitlines())])
            samples, repaired = read_samples(wav, repair)
            utterances.append(TimitUtterance(f"{speaker}/{wav.stem}", samples, text, words,
                                             repaired))
    return utterances


def merged_words(text: str, words: list[tuple[str, float, float]]
                 ) -> list[tuple[str, float, float]]:
    """The ``.wrd`` words, with the parts of a hyphenated word of ``text`` joined into one."""
    merged, index = [], 0
    for token in text.split():
        parts = [part for part in token.split("-") if any(char.isalnum() for char in part)]
        group = words[index:index + len(parts)]
        merged.append(("".join(word for word, _, _ in group), group[0][1], group[-1][2]))
        index += len(parts)
    if index != len(words):
        raise ValueError(f"{text!r} does not match its {len(words)} labelled words")
    return merged


def read_samples(path: Path, repair: bool = True) -> tuple[np.ndarray, bool]:
    """``(samples,)`` float32 in [-1, 1] and whether a byte-swapped stretch was repaired."""
    with wave.open(str(path)) as handle:
        if handle.getframerate() != SAMPLE_RATE or handle.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz 16-bit audio")
        raw = handle.readframes(handle.getnframes())
    little = np.frombuffer(raw, "<i2").astype(np.float64)
    if not repair:
        return (little / 32768).astype(np.float32), False
    big = np.frombuffer(raw, ">i2").astype(np.float64)
    order = byte_order_path(little, big)
    repaired = bool(order.any())
    return (np.where(order, big, little) / 32768).astype(np.float32), repaired


def byte_order_path(little: np.ndarray, big: np.ndarray) -> np.ndarray:
    """``(samples,)`` bool, True where a sample reads big-endian on the smoothest path."""
    readings = np.stack([little, big])
    # Cheap exit: a file where big-endian is never the smoother reading needs no search.
    blocks = len(little) // 160
    roughness = np.abs(np.diff(readings[:, :blocks * 160].reshape(2, blocks, 160), axis=2))
    if not (roughness.mean(axis=2)[1] < 0.7 * roughness.mean(axis=2)[0]).any():
        return np.zeros(len(little), dtype=bool)
    cost = [0.0, SWITCH_PENALTY]
    came_from = np.zeros((len(little), 2), dtype=bool)  # True: the previous sample's order differs
    previous = (float(little[0]), float(big[0]))
    for index in range(1, len(little)):
        current = (float(little[index]), float(big[index]))
        new_cost = []
        for state in (0, 1):
            stay = cost[state] + abs(current[state] - previous[state])
            switch = cost[1 - state] + abs(current[state] - previous[1 - state]) + SWITCH_PENALTY
            came_from[index, state] = switch < stay
            new_cost.append(min(stay, switch))
        cost, previous = new_cost, current
    state = int(cost[1] < cost[0])
    path = np.empty(len(little), dtype=bool)
    for index in range(len(little) - 1, -1, -1):
        path[index] = bool(state)
        if came_from[index, state]:
            state = 1 - state
    return path
