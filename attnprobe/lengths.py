"""Valid lengths and padding masks: the one convention every part of attnprobe uses.

A padded batch is ``(batch, frames, ...)`` with ``lengths (batch,)`` valid frames per sequence,
counted from the start; everything past a sequence's length is padding. These helpers turn
lengths into masks and back, and check that lengths fit a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def valid_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` bool: ``True`` on the first ``lengths[i]`` frames of sequence ``i``.

    The mask lives on ``lengths``' device.
    """
    return torch.arange(frames, device=lengths.device) < lengths[:, None]


def full_lengths(batch: int, frames: int, device: torch.device | str | None = None
                 ) -> torch.Tensor:
    """``(batch,)`` int64, every sequence ``frames`` long (a batch without padding)."""
    return torch.full((batch,), frames, dtype=torch.long, device=device)


def lengths_from_mask(mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
    """``(batch,)`` valid positions of a ``(batch, frames)`` mask that marks them with 1 (a Hugging
    Face ``attention_mask``); every frame when there is no mask."""
    if mask is None:
        return full_lengths(batch, frames)
    return mask.sum(-1).long()


def right_padded_lengths(mask: object, valid_is_one: bool = False) -> torch.Tensor | None:
    """``(batch,)`` valid lengths of a ``(batch, frames)`` mask that pads at the end; ``None`` for
    anything else.

    Key-padding masks mark padding (boolean ``True`` or a negative additive value); with
    ``valid_is_one`` the mask marks valid positions with 1 / ``True`` instead.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    if valid_is_one:
        padded = mask == 0
    else:
        padded = mask if mask.dtype == torch.bool else mask < 0
    valid = (~padded).sum(dim=1)
    if not torch.equal(~valid_mask(valid, mask.shape[1]), padded):
        return None
    return valid


def zero_padding(inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs`` ``(batch, frames, ...)`` with zeros past each length, and the ``(batch, frames)``
    int64 attention mask saying which frames are valid.

    Feature extractors pad with zeros, and convolutional frontends read past the last valid frame;
    zeroing makes a padded batch compute what each sequence computes alone, whatever the padding
    held, and gives padded positions exactly zero gradient.
    """
    valid = valid_mask(lengths.to(inputs.device), inputs.shape[1])
    shaped = valid.view(*valid.shape, *(1,) * (inputs.dim() - 2))
    return torch.where(shaped, inputs, inputs.new_zeros(())), valid.long()


def checked_lengths(lengths: torch.Tensor | Sequence[int] | None, batch: int, size: int,
                    name: str, device: torch.device | str | None = None,
                    minimum: int = 1) -> torch.Tensor:
    """``lengths`` as ``(batch,)`` int64 on ``device``, each in ``[minimum, size]``; ``None`` means
    every sequence is ``size`` long.

    Raises:
        ValueError: a length is missing, too short or longer than the padded axis.
    """
    if lengths is None:
        return full_lengths(batch, size, device)
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.shape != (batch,) or bool((lengths < minimum).any()) or bool((lengths > size).any()):
        raise ValueError(f"{name}={lengths.tolist()} does not fit a batch of {batch} padded to "
                         f"{size}; pass one length in [{minimum}, {size}] per item")
    return lengths


def lengths_from_attention_mask(mask: object, batch: int, frames: int) -> torch.Tensor | None:
    """``(batch,)`` valid key frames of a mask whose meaning is not known in advance, or ``None``.

    Accepts the masks blocks receive in practice: ``(batch, frames)`` key-padding masks and
    ``(batch, [heads,] queries, frames)`` attention masks; boolean or 0/1 (either polarity) or
    additive (0 where attended, a large negative number where not; a float mask of only 0 and 1
    counts as 0/1). A key is valid when some
    query may attend it; which boolean value means "attend" is read from the first key of the
    first query, which a right-padded sequence always attends. ``None`` when the mask has another
    shape, is not right-padded, or leaves a sequence no valid key.
    """
    if not isinstance(mask, torch.Tensor) or mask.is_nested or not 2 <= mask.dim() <= 4:
        return None
    if mask.shape[0] != batch or mask.shape[-1] != frames:
        return None
    if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
        attended = mask > -1e3
    else:
        first = mask.reshape(batch, -1)[:, :1]
        attended = mask == first.view(batch, *(1,) * (mask.dim() - 1))
    keys = attended.reshape(batch, -1, frames).any(dim=1)
    valid = keys.sum(dim=1)
    if bool((valid == 0).any()) or not torch.equal(keys, valid_mask(valid, frames)):
        return None
    return valid.long()
