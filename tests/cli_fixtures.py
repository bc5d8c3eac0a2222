"""Small inputs for the command-line tests: a tiny random Conformer checkpoint, clips of the
shipped utterance written in any format, and a command runner that captures what it prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from attnprobe.audio import SHIPPED_UTTERANCE
from attnprobe.cli import main
from attnprobe.loading.conformer_checkpoint import save_conformer_checkpoint
from attnprobe.models import ConformerAED, ConformerAEDConfig

TINY_CONFORMER = dict(vocab_size=30, frontend_channels=(4, 4), d_model=16, heads=2, ff_dim=32,
                      conv_kernel=3, blocks=2, embed_dim=8, lstm_dim=16, attention_dim=16,
                      readout_dim=16, dropout=0.0)
CLIP_SECONDS = 0.8
CLIP_TEXT = "my brother"
"""The first two words of the shipped utterance end at 0.705 s, inside the first 0.8 s."""


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-block Conformer AED with character labels, saved to ``folder``."""
    torch.manual_seed(seed)
    model = ConformerAED(ConformerAEDConfig.tiny(**TINY_CONFORMER))
    return save_conformer_checkpoint(model, folder / "model.pt", description="tiny test model")


def shipped_words() -> list[dict]:
    return json.loads(SHIPPED_UTTERANCE.with_suffix(".json").read_text())["words"]


def write_clip(path: Path, seconds: float = CLIP_SECONDS, rate: int = 16000,
               channels: int = 1, sidecar_text: str | None = None) -> Path:
    """The first ``seconds`` of the shipped utterance, written by soundfile in the format of
    ``path``'s suffix, at ``rate`` with ``channels`` identical channels; with ``sidecar_text``
    also ``<name>.json`` holding the text and the words' exact times."""
    import soundfile
    import torchaudio.functional

    samples, source_rate = soundfile.read(str(SHIPPED_UTTERANCE), dtype="float32")
    clip = torch.from_numpy(samples[: int(seconds * source_rate)])
    if rate != source_rate:
        clip = torchaudio.functional.resample(clip, source_rate, rate)
    data = np.repeat(clip.numpy()[:, None], channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate)
    if sidecar_text is not None:
        count = len(sidecar_text.split())
        path.with_suffix(".json").write_text(json.dumps(
            {"text": sidecar_text, "words": shipped_words()[:count]}))
    return path


@dataclass
class Run:
    """What one command-line call returned and printed."""

    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *arguments: object) -> Run:
    """``attnprobe <arguments>`` in this process, with its output captured."""
    capsys.readouterr()
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)
