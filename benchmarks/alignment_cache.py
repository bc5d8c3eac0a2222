"""Per-utterance score matrices for the alignment evaluation, computed once and kept on disk.

The expensive part of gradient alignment is the batched backward; the Viterbi over a score matrix
takes milliseconds. :func:`utterance_scores` therefore runs the model once per utterance and input
(10 ms log-mel features, 20 ms encoder input), times it, and stores the score matrices with the
cross-attention DTW baseline's word times in ``<cache>/<utterance id>.npz``, keyed by everything
that changes them (the scoring code's hash, the model, the settings, the transcript's tokens, the
audio's bytes, the torch version), so that a rerun after any change recomputes, never reuses. Every alignment variant the
evaluation compares (blank scoring, normalisation over time) then runs on the stored matrices.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnprobe.alignment import DEFAULT_SETTINGS
from attnprobe.alignment.scoring import gradient_scores, model_forward
from attnprobe.batch import SpeechBatch
from attnprobe.loading import LoadedModel, Transcript
from attnprobe.reporting.alignments import by_cross_attention
from benchmarks.code_version import code_version
from benchmarks.corpus import Manifest, read_wav
from benchmarks.corpus.manifest import Utterance

INPUTS = ("features", "encoder_input")


@dataclass
class UtteranceScores:
    """What the evaluation needs of one utterance.

    Attributes:
        tokens: the transcript's token strings, one per score row.
        scores: per input (``"features"``, ``"encoder_input"``), ``(labels, frames)`` gradient
            norms over the valid frames.
        subsampling: per input, input feature frames per score column.
        seconds: per input, wall-clock seconds of the forward and batched backward; and
            ``"cross_attention"`` for the DTW baseline.
        cross_attention_words: ``(word, start s, end s)`` from the cross-attention DTW baseline.
        valid_frames: valid 10 ms feature frames (the evenly spaced baseline spreads over them).
    """

    tokens: list[str]
    scores: dict[str, np.ndarray]
    subsampling: dict[str, int]
    seconds: dict[str, float]
    cross_attention_words: list[tuple[str, float, float]]
    valid_frames: int


def utterance_scores(loaded: LoadedModel, manifest: Manifest, utterance: Utterance,
                     cache: Path | None) -> UtteranceScores:
    """The stored scores of ``utterance`` when ``cache`` holds them for this model and text, else
    computed (and stored when ``cache`` is given)."""
    transcript = loaded.transcript(utterance.text)
    samples, rate = read_wav(manifest.wav_path(utterance))
    key = json.dumps({"code": code_version(), "torch": torch.__version__, "model": loaded.name,
                      "settings": repr(DEFAULT_SETTINGS), "inputs": INPUTS,
                      "tokens": transcript.tokens,
                      "audio": hashlib.sha1(np.ascontiguousarray(samples).tobytes()).hexdigest()})
    path = None if cache is None else cache / f"{utterance.id}.npz"
    if path is not None and path.exists():
        stored = np.load(path, allow_pickle=False)
        if str(stored["key"]) == key:
            return _from_arrays(stored)
    if rate != loaded.sample_rate:
        raise ValueError(f"{utterance.wav} is at {rate} Hz but the model reads "
                         f"{loaded.sample_rate} Hz; rebuild the corpus with "
                         f"benchmarks/build_timed_corpus.py")
    batch = loaded.batch(samples, transcript)
    result = _compute(loaded, batch, transcript)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **_to_arrays(result, key))
    return result


def _compute(loaded: LoadedModel, batch: SpeechBatch, transcript: Transcript) -> UtteranceScores:
    scores, subsampling, seconds = {}, {}, {}
    for scored_input in INPUTS:
        started = time.perf_counter()
        forward = model_forward(loaded.model, batch, gradient_input=scored_input,
                                adapter=loaded.adapter)
        result = gradient_scores(forward, require_alignable=True)
        seconds[scored_input] = time.perf_counter() - started
        scores[scored_input] = result.item(0).float().numpy()
        subsampling[scored_input] = result.subsampling
    started = time.perf_counter()
    cross = by_cross_attention(loaded, batch, transcript, DEFAULT_SETTINGS)  # under no_grad
    seconds["cross_attention"] = time.perf_counter() - started
    words = [(word.text, word.start_s, word.end_s) for word in cross.words]
    return UtteranceScores(list(transcript.tokens), scores, subsampling, seconds, words,
                           int(batch.input_lengths[0]))


def _to_arrays(result: UtteranceScores, key: str) -> dict[str, np.ndarray]:
    meta = {"tokens": result.tokens, "subsampling": result.subsampling,
            "seconds": result.seconds, "cross_attention_words": result.cross_attention_words,
            "valid_frames": result.valid_frames}
    arrays = {f"scores_{name}": matrix for name, matrix in result.scores.items()}
    return {**arrays, "key": np.array(key), "meta": np.array(json.dumps(meta))}


def _from_arrays(stored: np.lib.npyio.NpzFile) -> UtteranceScores:
    meta = json.loads(str(stored["meta"]))
    scores = {name: stored[f"scores_{name}"] for name in INPUTS}
    words = [(word, float(start), float(end)) for word, start, end in meta["cross_attention_words"]]
    return UtteranceScores(meta["tokens"], scores, meta["subsampling"], meta["seconds"], words,
                           int(meta["valid_frames"]))
