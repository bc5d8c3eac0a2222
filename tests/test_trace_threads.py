"""A trace belongs to the thread that entered it, and a compiled wrapper of a traced model is
explained instead of leaving records silently incomplete."""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import CompiledModelError, TraceThreadError
from attnprobe.trace_guard import ForeignThreadWarning
from tests.toy_model import ToyAdapter, ToyEncoder, all_hooks, padded_batch


def make_model() -> ToyEncoder:
    torch.manual_seed(0)
    return ToyEncoder().eval()


def in_thread(work, name: str = "worker") -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            errors.append(error)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return errors


def test_a_second_thread_cannot_trace_a_model_another_thread_traces() -> None:
    model = make_model()
    hooks_before = all_hooks(model)
    features, lengths = padded_batch([5, 3], 6)
    entered, release = threading.Event(), threading.Event()
    first: dict[str, object] = {}

    def owner() -> None:
        with attnprobe.trace(model, adapter=ToyAdapter) as traced:
            entered.set()
            release.wait(30)
            model(features, lengths)
        first["calls"] = traced["encoder.0"].calls

    thread = threading.Thread(target=owner, name="owner-thread")
    thread.start()
    assert entered.wait(30)
    try:
        with pytest.raises(TraceThreadError, match="owner-thread"):
            with attnprobe.trace(model, adapter=ToyAdapter):
                pass
    finally:
        release.set()
        thread.join(timeout=60)
    assert first["calls"] == 1
    assert all_hooks(model) == hooks_before
    # Once the owner's trace is closed, any thread may trace the model again.
    assert in_thread(lambda: attnprobe.trace(model, adapter=ToyAdapter).__enter__().__exit__(
        None, None, None)) == []


@settings(max_examples=8, deadline=None)
@given(own=st.integers(0, 3), foreign=st.integers(0, 3))
def test_calls_from_other_threads_stay_out_of_the_trace(own: int, foreign: int) -> None:
    model = make_model()
    mine = padded_batch([4, 2], 6, seed=1)
    theirs = padded_batch([6, 6, 6], 6, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with attnprobe.trace(model, adapter=ToyAdapter) as traced:
            for _ in range(own):
                model(*mine)
            for _ in range(foreign):
                assert in_thread(lambda: model(*theirs)) == []
    record = traced["encoder.1.self_attn"]
    assert record.calls == own
    assert all(call.value.shape[0] == 2 for call in record.attentions + record.outputs)
    assert any(issubclass(warning.category, ForeignThreadWarning)
               for warning in caught) == (foreign > 0)


def test_each_thread_traces_its_own_copy_of_a_model_at_the_same_time() -> None:
    model = make_model()
    copies = [model, copy.deepcopy(model)]
    barrier = threading.Barrier(2)
    found: dict[int, torch.Tensor] = {}

    def work(index: int) -> None:
        features, lengths = padded_batch([3 + index], 6, seed=index)
        with attnprobe.trace(copies[index], adapter=ToyAdapter) as traced:
            barrier.wait(30)
            copies[index](features, lengths)
            barrier.wait(30)
        found[index] = traced["encoder.0"].output

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [found[index].shape[1] for index in range(2)] == [3, 4]


def test_calling_a_compiled_wrapper_inside_a_trace_is_explained() -> None:
    model = make_model()
    hooks_before = all_hooks(model)
    features, lengths = padded_batch([5, 3], 6)
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(CompiledModelError, match="_orig_mod"):
        with attnprobe.trace(model, adapter=ToyAdapter):
            compiled(features, lengths)
    assert all_hooks(model) == hooks_before
    with attnprobe.trace(model, adapter=ToyAdapter) as traced:
        compiled._orig_mod(features, lengths)
    assert traced["encoder.1.self_attn"].attention.shape == (2, 2, 5, 5)
