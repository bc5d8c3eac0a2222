"""What torchaudio's encoder families called as ``model(input, lengths)`` share (Conformer,
Emformer): valid lengths from the ``lengths`` argument, and a runner with no subsampling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attnprobe.batch import SpeechBatch
from attnprobe.capture import pick_argument

from .runner import Runner
from .site_map import LengthEntry, SiteMap


class LengthsArgumentRunner(Runner):
    """Runs ``model(inputs (batch, frames, dim), input_lengths)``; no decoder, no labels."""

    def run(self, batch: SpeechBatch) -> Any:
        return self.model(batch.inputs, batch.input_lengths)

    @property
    def subsampling(self) -> int:
        return 1


class LengthsArgumentSites(SiteMap):
    """Base of site maps for ``model(input (batch, frames, dim), lengths (batch,))`` encoders."""

    def length_entries(self) -> list[LengthEntry]:
        def lengths(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
            valid = pick_argument(args, kwargs, 1, "lengths")
            return {} if valid is None else {"features": valid, "encoder": valid}

        return [LengthEntry(self.model, lengths)]
