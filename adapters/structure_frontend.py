"""Where the frontend starts, as one forward pass shows it (:mod:`.structure_calls`): the first
module outside the encoder's ancestors that receives the audio the model received (its storage:
views and transposes count), else the first one fed from it; and how what that module receives
becomes ``(batch, frames, features)``."""

from __future__ import annotations

from .structure import Stack, inside
from .structure_calls import Call


def frontend_of(encoder: Stack, calls: dict[str, Call]) -> tuple[str | None, str | None]:
    """The frontend module's path (module docstring) and a note when it was a second choice."""
    first_block = calls.get(encoder.blocks[0])
    if first_block is None:
        return None, "the encoder's first block did not run"
    parts = encoder.path.split(".")
    ancestors = {""} | {".".join(parts[:index]) for index in range(1, len(parts) + 1)}
    before = sorted((call.order, path) for path, call in calls.items()
                    if call.order < first_block.order and path not in ancestors
                    and not inside(path, encoder.path))
    receiving = [path for _, path in before if calls[path].receives_audio]
    if receiving:
        return receiving[0], None
    tainted = [path for _, path in before if calls[path].tainted]
    if tainted:
        return tainted[0], ("no module receives the audio tensor itself (the model changes it "
                            "first); the frontend starts at the first module fed from it")
    return None, "no module before the encoder's first block depends on the audio"


def to_frames_kind(received: tuple[int, ...] | None, audio: tuple[int, ...]) -> str:
    """How the frontend's received tensor becomes ``(batch, frames, features)``, given the audio
    as the runner takes it (``(batch, frames, features)`` or ``(batch, samples)``):
    ``"frames"`` (as is), ``"transposed"`` (``(batch, features, frames)``), ``"samples"``
    (``(batch, samples)``: one frame per sample) or ``"unknown"``."""
    if received is None or not received or received[0] != audio[0]:
        return "unknown"
    if len(audio) == 2:
        if len(received) == 2:
            return "samples"
        if len(received) == 3 and received[1] == 1:
            return "transposed"
        return "unknown"
    if len(received) == 3 and len(audio) == 3:
        if received[-1] == audio[-1]:
            return "frames"
        if received[1] == audio[-1]:
            return "transposed"
    return "unknown"
