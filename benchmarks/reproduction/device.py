"""Where a reproduction run trains, and in which precision.

On the CPU a run trains in float32, as every run so far did (bit-identical for the same seed and
thread count). On a GPU (``--device cuda``) the forward pass and the loss run under autocast:
bfloat16 where the GPU supports it, else float16 with a gradient scaler; parameters, optimiser
state and the monitor's probes stay float32. ``--precision`` chooses explicitly; bf16 and fp16
autocast also run on the CPU, slowly, which is how the tests check that code path without a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("auto", "float32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceUnavailableError(RuntimeError):
    """The asked-for device does not exist here; the message says what to do instead."""


@dataclass(frozen=True)
class Placement:
    """A device and a resolved precision (``"float32"``, ``"bf16"`` or ``"fp16"``)."""

    device: torch.device
    precision: str

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast for the forward pass and the loss; nothing for float32."""
        if self.precision == "float32":
            yield
            return
        with torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision]):
            yield

    def gradient_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for float16 (its range is too narrow for small gradients), else
        ``None``."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def to_dict(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": self.precision}


def resolve_placement(device: str = "cpu", precision: str = "auto") -> Placement:
    """Check ``device`` exists and resolve ``precision``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
        precision: one of :data:`PRECISIONS`; ``"auto"`` is bf16 on a GPU that supports it, fp16
            on one that does not, float32 on the CPU.

    Raises:
        DeviceUnavailableError: a CUDA device where torch sees none, or an unknown device.
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise DeviceUnavailableError(f"unknown device {device!r}; use cpu, cuda or cuda:<index>"
                                     ) from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False); train with --device cpu, or on a machine "
                f"with an NVIDIA GPU, its driver and a CUDA build of torch")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"--device {device}: this machine has "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type != "cpu":
        raise DeviceUnavailableError(f"device {device!r} is not supported by the reproduction; "
                                     f"use cpu or cuda")
    if precision == "auto":
        if chosen.type == "cpu":
            precision = "float32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Placement(chosen, precision)
