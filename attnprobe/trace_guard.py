"""What keeps a trace's records honest beyond its own hooks: the thread it belongs to, and calls
through a ``torch.compile`` wrapper.

- A trace belongs to the thread that entered it. Calls of the model from other threads are left out
  (:meth:`TraceGuard.in_own_thread`) and counted in a :class:`ForeignThreadWarning` at exit; a
  second thread that tries to trace the same model while the first trace is open gets a
  :class:`~attnprobe.errors.TraceThreadError` naming the thread (:meth:`TraceGuard.claim`).
  Nested traces in one thread are fine.
- Compiled graphs skip or replay module hooks, so a trace whose model ran through a compiled
  wrapper holds records that may be empty or stale. A pre-hook on the model notes
  ``torch.compiler.is_compiling()`` (dynamo replays the attribute write as a side effect), and the
  trace ends with a :class:`~attnprobe.errors.CompiledModelError` (:meth:`TraceGuard.verdict`).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from .errors import CompiledModelError, TraceThreadError

_owners_lock = threading.Lock()
# model -> (thread id, thread name, open traces in that thread)
_owners: weakref.WeakKeyDictionary[nn.Module, tuple[int, str, int]] = weakref.WeakKeyDictionary()


class ForeignThreadWarning(UserWarning):
    """A traced model ran in a thread other than the trace's: those calls were not recorded."""


class TraceGuard:
    """The thread and compile checks of one trace of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.thread: int | None = None
        self.foreign_calls = 0
        self.compiled_call = False
        self._claimed = False

    def claim(self) -> None:
        """Make this thread the model's tracing thread.

        Raises:
            TraceThreadError: another thread traces the model now.
        """
        current = threading.current_thread()
        with _owners_lock:
            owner = _owners.get(self.model)
            if owner is not None and owner[0] != current.ident:
                raise TraceThreadError(
                    f"{type(self.model).__name__} is already traced in thread {owner[1]!r}; a "
                    f"trace belongs to one thread, and two threads tracing one model would mix "
                    f"their records. Trace from one thread at a time (hold a lock around the "
                    f"with block), or give each thread its own copy of the model "
                    f"(copy.deepcopy(model))")
            count = 0 if owner is None else owner[2]
            _owners[self.model] = (current.ident or 0, current.name, count + 1)
        self.thread = current.ident
        self._claimed = True

    def release(self) -> None:
        """Give the model back (idempotent)."""
        if not self._claimed:
            return
        with _owners_lock:
            owner = _owners.get(self.model)
            if owner is not None:
                if owner[2] <= 1:
                    del _owners[self.model]
                else:
                    _owners[self.model] = (owner[0], owner[1], owner[2] - 1)
        self._claimed = False

    def in_own_thread(self) -> bool:
        """Whether the calling thread is the trace's (a call from any other is counted)."""
        if torch.compiler.is_compiling() or threading.get_ident() == self.thread:
            # Under dynamo the call ends in CompiledModelError anyway (see verdict).
            return True
        self.foreign_calls += 1
        return False

    def is_own_thread(self) -> bool:
        return torch.compiler.is_compiling() or threading.get_ident() == self.thread

    def install_compile_check(self) -> Callable[[], None]:
        """Watch for compiled calls of the model; returns the function that stops watching."""

        def before_forward(_module: nn.Module, _args: tuple) -> None:
            if torch.compiler.is_compiling():
                self.compiled_call = True

        return self.model.register_forward_pre_hook(before_forward).remove

    def verdict(self, failed: bool) -> None:
        """At the end of the trace: warn of foreign calls; unless the block ``failed`` already,
        raise :class:`CompiledModelError` after a compiled call."""
        if self.foreign_calls:
            warnings.warn(
                f"{self.foreign_calls} captures of the traced model came from other threads "
                f"while this trace was open and were left out: a trace records only the thread "
                f"that entered it. Run the model in that thread, or open a trace in each thread "
                f"on its own copy of the model", ForeignThreadWarning, stacklevel=3)
        if self.compiled_call and not failed:
            raise CompiledModelError(
                f"the traced {type(self.model).__name__} was called through a torch.compile "
                f"wrapper; compiled graphs skip or replay attnprobe's hooks, so this trace's "
                f"records may be empty or stale. Inside the trace, call the original module "
                f"(compiled._orig_mod, or the model you passed to torch.compile), and compile "
                f"only outside traces")
