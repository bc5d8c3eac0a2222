"""Errors attnprobe raises. Each message names the fix."""

from __future__ import annotations


class AttnprobeError(Exception):
    """Base class of attnprobe's own errors."""


class UnsupportedModelError(AttnprobeError, TypeError):
    """No adapter knows this model, and the generic fallback found nothing to trace."""


class MemoryBudgetExceeded(AttnprobeError, MemoryError):
    """Storing the requested tensors would pass the trace's memory budget."""


class GradientUnavailableError(AttnprobeError, RuntimeError):
    """A gradient probe was asked for where autograd cannot run (e.g. under inference_mode)."""


class InputError(AttnprobeError, ValueError):
    """Shapes, lengths or values of the user's input cannot be used (wrong shape, NaN, too short)."""


class CapabilityError(AttnprobeError, RuntimeError):
    """The model family cannot do what a probe asked (e.g. teacher forcing on an encoder only)."""


class ModelLoadError(AttnprobeError, ValueError):
    """A model specification names nothing loadable; the message says what was found and what to
    pass instead."""


class CheckpointError(AttnprobeError, ValueError):
    """A file or folder is not a readable attnprobe Conformer checkpoint."""


class OutputError(InputError):
    """An output place that cannot be written; the message names another choice."""


class TraceThreadError(AttnprobeError, RuntimeError):
    """A model already traced in one thread was traced from another: a trace belongs to the thread
    that entered it."""


class CompiledModelError(AttnprobeError, RuntimeError):
    """A traced model ran through a ``torch.compile`` wrapper, whose graphs skip or replay the
    trace's hooks, so its records cannot be trusted."""


class JobError(AttnprobeError, RuntimeError):
    """A corpus or checkpoint job cannot start or finish: its output folder belongs to another job,
    or a rank of a distributed run did not report in time."""
