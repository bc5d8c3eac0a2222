"""The ranks of a job: one process, or every process ``torchrun`` started.

``torchrun`` (``torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :meth:`JobGroup.from_environment` then joins its rendezvous and starts a gloo
process group (the job only exchanges small Python objects between CPU processes, whatever device
the models run on). Without those variables it is a group of one and every call is local.

A job synchronises only twice: every rank gathers what the others found out about the inputs
(:meth:`JobGroup.all_gather`) before any work starts, and, at the end, rank 0 waits for the others'
"finished" counters in the rendezvous store (:meth:`JobGroup.wait_for_ranks`), polling with a
deadline that moves while any rank makes progress. No rank waits forever: collectives time out
after ``timeout_s``, and rank 0 gives up on ranks that report no progress for that long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from attnprobe.errors import JobError

POLL_SECONDS = 0.2
_jobs_started = 0


class JobGroup:
    """Rank, world size and the few exchanges a job needs.

    Attributes:
        rank: this process's rank (0 in a single process).
        world_size: number of ranks.
        timeout_s: how long any wait on another rank may last without progress.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, timeout_s: float = 1800.0,
                 store: Any = None, owns_group: bool = False) -> None:
        self.rank = rank
        self.world_size = world_size
        self.timeout_s = timeout_s
        self._store = store
        self._owns_group = owns_group
        self._local: dict[str, int] = {}

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, timeout_s: float = 1800.0) -> JobGroup:
        """The group ``torchrun`` started this process in, or a group of one.

        Raises:
            JobError: the rendezvous did not complete within ``timeout_s``.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world_size <= 1:
            return cls(timeout_s=timeout_s)
        import torch.distributed as dist

        timeout = timedelta(seconds=timeout_s)
        if dist.is_initialized():
            # A caller's own process group (a Python program under torchrun): share its store.
            store = dist.distributed_c10d._get_default_store()
            return cls(dist.get_rank(), dist.get_world_size(), timeout_s,
                       _job_store(dist, store), owns_group=False)
        try:
            store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
            dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                    timeout=timeout)
        except (RuntimeError, ValueError) as error:
            raise JobError(f"cannot join the torchrun rendezvous ({_first_line(error)}); start "
                           f"every rank with the same torchrun command") from error
        return cls(rank, world_size, timeout_s, _job_store(dist, store), owns_group=True)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (a collective: every rank must call it)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(gathered, value)
        except RuntimeError as error:
            raise JobError(f"rank {self.rank} gave up waiting for the other ranks "
                           f"({_first_line(error)}); rerun the same command") from error
        return gathered

    def add(self, counter: str, amount: int = 1) -> int:
        """Add to a counter every rank shares; returns its new value."""
        if not self.distributed:
            self._local[counter] = self._local.get(counter, 0) + amount
            return self._local[counter]
        return int(self._store.add(counter, amount))

    def count(self, counter: str) -> int:
        return self.add(counter, 0)

    def wait_for_ranks(self, on_progress: Callable[[int], None] | None = None) -> list[int]:
        """Rank 0: wait until every rank has added to ``"finished"``, calling ``on_progress``
        with the shared ``"done"`` counter as it moves. Gives up after ``timeout_s`` without
        progress; returns the ranks that never finished (empty when all did)."""
        if not self.distributed:
            return []
        last_seen = (-1, -1)
        deadline = time.monotonic() + self.timeout_s
        while True:
            state = (self.count("finished"), self.count("done"))
            if state != last_seen:
                last_seen = state
                deadline = time.monotonic() + self.timeout_s
                if on_progress is not None:
                    on_progress(state[1])
            if state[0] >= self.world_size:
                return []
            if time.monotonic() > deadline:
                return [rank for rank in range(self.world_size)
                        if not self.count(f"finished/{rank}")]
            time.sleep(POLL_SECONDS)

    def finish(self) -> None:
        """Tell rank 0 this rank is done."""
        if self.distributed:
            self.add(f"finished/{self.rank}")
            self.add("finished")

    def close(self) -> None:
        """Leave the process group this group started."""
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False


def _job_store(dist: Any, store: Any) -> Any:
    """The rendezvous store under a prefix of this launch and job: an elastic restart, or the next
    job of the same program (every rank starts its jobs in the same order), starts afresh."""
    global _jobs_started
    _jobs_started += 1
    run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"attnprobe/{run}/{restart}/{_jobs_started}/", store)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
