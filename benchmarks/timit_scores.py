"""Gradient score matrices of TIMIT utterances, computed once per scoring option and kept on disk.

Scoring (the model's forward and batched backward passes) is the expensive part; decoding a
stored matrix with any blank or gap setting takes milliseconds. Every file is keyed by everything
that changes its content: the scoring code (a hash of the library files it runs), the model, the
scoring option and the utterance's audio and text, so a stale matrix is never reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from attnprobe.alignment import AlignmentSettings
from attnprobe.alignment.gradient import gradient_score_matrices
from attnprobe.alignment.scoring.loudness import input_loudness
from attnprobe.alignment.transcript import LABELS_PER_BACKWARD
from attnprobe.loading import LoadedModel

from .code_version import code_version
from .timit import TimitUtterance

SCORING_CODE = ("adapters", "attnprobe/alignment/scoring", "attnprobe/alignment/gradient.py",
                "attnprobe/loading/transcripts.py", "attnprobe/loading/whisper_ctranslate2.py",
                "attnprobe/loading/whisper_prompt.py", "attnprobe/trace.py",
                "attnprobe/capture.py", "attnprobe/vjp.py", "attnprobe/features.py")


@dataclass(frozen=True)
class ScoringOption:
    """How the score matrix is made: the targets, where the gradients are taken, the window."""

    name: str
    targets: str = "characters"
    gradient_input: str = "encoder.last"
    window_margin_s: float | None = None
    fit_decoder_only: bool = False

    def settings(self) -> AlignmentSettings:
        return AlignmentSettings(gradient_input=self.gradient_input, targets=self.targets,  # type: ignore[arg-type]
                                 window_margin_s=self.window_margin_s,
                                 fit_decoder_only=self.fit_decoder_only)


@dataclass
class StoredScores:
    """One utterance's scores: ``(labels, frames)`` over its valid frames, with what decoding
    needs and the CPU seconds the scoring took (feature extraction included)."""

    scores: np.ndarray
    tokens: list[str]
    subsampling: int
    loudness: np.ndarray
    cpu_seconds: float


def cache_key(loaded: LoadedModel, option: ScoringOption, utterance: TimitUtterance) -> str:
    runner = loaded.adapter.runner
    content = {"code": code_version(SCORING_CODE), "model": loaded.name,
               "prompt": list(getattr(runner, "prompt_ids", [])), "option": asdict(option),
               "text": utterance.text,
               "audio": hashlib.sha1(utterance.samples.tobytes()).hexdigest()}
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


def utterance_scores(loaded: LoadedModel, option: ScoringOption, utterance: TimitUtterance,
                     cache: Path | None) -> StoredScores:
    """The stored scores if ``cache`` holds them for exactly this content, else computed."""
    path = None
    if cache is not None:
        path = cache / f"{utterance.id.replace('/', '__')}-{cache_key(loaded, option, utterance)}.npz"
        if path.exists():
            stored = np.load(path, allow_pickle=False)
            return StoredScores(stored["scores"], json.loads(str(stored["tokens"])),
                                int(stored["subsampling"]), stored["loudness"],
                                float(stored["cpu_seconds"]))
    result = compute_scores(loaded, option, utterance)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, scores=result.scores, tokens=np.array(json.dumps(result.tokens)),
                            subsampling=result.subsampling, loudness=result.loudness,
                            cpu_seconds=result.cpu_seconds)
    return result


def compute_scores(loaded: LoadedModel, option: ScoringOption,
                   utterance: TimitUtterance) -> StoredScores:
    """Score one utterance as :func:`attnprobe.gradient_alignment` would, timed with the
    process's CPU clock."""
    started = time.process_time()
    transcript = (loaded.spelled_transcript(utterance.text) if option.targets == "characters"
                  else loaded.transcript(utterance.text))
    batch = loaded.batch(utterance.samples, transcript)
    scores, _ = gradient_score_matrices(loaded.model, batch, settings=option.settings(),
                                        ctc_blank=loaded.ctc_blank, adapter=loaded.adapter,
                                        chunk_size=LABELS_PER_BACKWARD)
    matrix = scores.item(0).detach().float().numpy()
    cpu = time.process_time() - started
    loudness = input_loudness(batch.inputs, batch.input_lengths, scores.subsampling,
                              matrix.shape[1])[0].numpy()
    return StoredScores(matrix, list(transcript.tokens), scores.subsampling, loudness, cpu)


def decoded(stored: StoredScores, settings: AlignmentSettings, frame_shift_s: float):
    """The alignment of stored scores under decoding ``settings``, and its CPU seconds."""
    from attnprobe.alignment.decoding.silence import quietness
    from attnprobe.alignment.decoding.viterbi import align_score_matrix

    started = time.process_time()
    quiet = quietness(torch.from_numpy(stored.loudness)[None])[0]
    alignment = align_score_matrix(stored.scores, stored.tokens, frame_shift_s=frame_shift_s,
                                   subsampling=stored.subsampling, settings=settings,
                                   word_style="byte_bpe", quietness=quiet)
    return alignment, time.process_time() - started
