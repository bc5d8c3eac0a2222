"""Acceptance of the localisation rule on the shipped induced reversal
(``checkpoints/induced-reversal-seed0``): ``reversal_report`` names one block on the shipped
utterance and on the reproduction's dev batch, at 16 and at 48 probed frames, and that block is
the one the rule reads off the probes' own scores.

Before the rule the same reports named block 3 or 4 on the shipped utterance and 4, 5 or none on
the dev batch (``docs/reproduction/localisation-before.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnprobe.audio import SHIPPED_UTTERANCE, read_audio
from attnprobe.batch import SpeechBatch
from attnprobe.loading import load_model
from attnprobe.probes import reversal_report
from attnprobe.probes.verdict import DECIDED_BY_DECODER, turning_block
from benchmarks.corpus.espeak import espeak_available
from benchmarks.corpus.training_set import INDEX_NAME, first_utterances
from benchmarks.reproduction.data import collate, fixed_examples, load_split
from benchmarks.reproduction.localisation import (
    DEV_EXAMPLES,
    SHIPPED_TEXT,
    dev_split,
    last_checkpoint,
)
from benchmarks.reproduction.train import load_checkpoint

RUN = Path(__file__).resolve().parents[1] / "checkpoints" / "induced-reversal-seed0"
FRAMES = (16, 48)

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="libespeak-ng.so.1 is not installed (apt-get install -y espeak-ng)")


def shipped_input() -> tuple[torch.nn.Module, SpeechBatch]:
    loaded = load_model(str(RUN))
    audio = read_audio(SHIPPED_UTTERANCE).at_rate(loaded.sample_rate)
    return loaded.model, loaded.batch(audio.samples, loaded.transcript(SHIPPED_TEXT))


def dev_input() -> tuple[torch.nn.Module, SpeechBatch]:
    checkpoint = last_checkpoint(RUN)
    model, _ = load_checkpoint(checkpoint)
    return model, collate(fixed_examples(dev_split(RUN, checkpoint), DEV_EXAMPLES))


def named_blocks(model: torch.nn.Module, batch: SpeechBatch) -> list[int | None]:
    """The report's block at each probed-frame count, after checking each against the rule."""
    blocks = []
    for frames in FRAMES:
        report = reversal_report(model, batch, projections=1, max_frames=frames)
        # What the rule says the probes show: an aligned decoder, so the gradient maps decide,
        # and the block is where their oriented scores turn.
        assert report.decided_by == DECIDED_BY_DECODER, report.summary()
        layers, scores, input_score = report.gradient_maps.oriented_scores()
        assert report.reversed_at == turning_block(scores, layers, report.frame_mapping.threshold,
                                                   input_score)
        # An independent probe sees the same block: its self-attention is the anti-diagonal one.
        assert report.reversed_at == report.diagonality.reversed_at, report.summary()
        blocks.append(report.reversed_at)
    return blocks


@pytest.fixture(scope="module")
def shipped_blocks() -> list[int | None]:
    """Block ``0`` on the shipped utterance (asserted on its own in
    ``tests/test_shipped_checkpoints.py``)."""
    return named_blocks(*shipped_input())


@needs_espeak
def test_the_dev_batch_names_the_same_block_as_the_shipped_utterance(
        shipped_blocks: list[int | None]) -> None:
    assert shipped_blocks == [shipped_blocks[0]] * len(FRAMES) and shipped_blocks[0] is not None
    assert named_blocks(*dev_input()) == shipped_blocks


@needs_espeak
def test_the_dev_utterances_spoken_again_are_those_of_the_built_corpus() -> None:
    """:func:`first_utterances` (what the tests use without the 4200-utterance corpus) gives the
    built corpus's own dev utterances, bit for bit."""
    corpus = json.loads((RUN / "config.json").read_text())["corpus"]
    if not (Path(corpus) / INDEX_NAME).is_file():
        pytest.skip(f"{corpus} is not built (python benchmarks/build_training_corpus.py)")
    built = load_split(corpus, "dev")
    spoken = first_utterances("dev", DEV_EXAMPLES, 4000, 200, mean=built.mean, std=built.std)
    for index in range(DEV_EXAMPLES):
        for ours, theirs in zip(spoken[index][:2], built[index][:2]):
            assert torch.equal(ours, theirs)
        assert spoken.utterances[index] == built.utterances[index]
