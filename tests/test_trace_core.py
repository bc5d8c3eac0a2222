"""The hook layer's contract, on a toy model: records, selection, cleanup, budget, concurrency."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.errors import MemoryBudgetExceeded, UnsupportedModelError
from attnprobe.reducers import CallCounter
from tests.toy_model import ToyAdapter, ToyEncoder, all_hooks, padded_batch


def make_model(seed: int = 0) -> ToyEncoder:
    torch.manual_seed(seed)
    return ToyEncoder().eval()


def test_records_have_batch_first_shapes_and_lengths() -> None:
    model = make_model()
    features, lengths = padded_batch([5, 3], 6)
    with attnprobe.trace(model, adapter=ToyAdapter) as t:
        model(features, lengths)
    assert [site.name for site in t.sites] == [
        "encoder.frontend", "encoder.0", "encoder.0.self_attn", "encoder.0.ffn",
        "encoder.1", "encoder.1.self_attn", "encoder.1.ffn"]
    attention = t["encoder.1.self_attn"].attention
    assert attention.shape == (2, 2, 5, 5)
    assert torch.equal(t["encoder.1.self_attn"].key_lengths, lengths)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 2, 5))
    assert torch.all(attention[1, :, :, 3:] == 0)
    assert t["encoder.0"].output.shape == (2, 5, 8)
    assert torch.equal(t["encoder.0"].input, t["encoder.frontend"].output)
    assert torch.equal(t["encoder.frontend"].input, features)
    assert torch.equal(t["encoder.0.ffn"].lengths, lengths)


def test_selection_by_glob_kind_and_layer() -> None:
    model = make_model()
    features, lengths = padded_batch([4, 4], 6)
    with attnprobe.trace(model, "encoder.*.self_attn", adapter=ToyAdapter) as by_glob:
        model(features, lengths)
    with attnprobe.trace(model, kind="ffn", layer=1, adapter=ToyAdapter) as by_kind:
        model(features, lengths)
    assert [r.name for r in by_glob] == ["encoder.0.self_attn", "encoder.1.self_attn"]
    assert [r.name for r in by_kind] == ["encoder.1.ffn"]
    with attnprobe.trace(model, adapter=ToyAdapter) as everything:
        model(features, lengths)
    assert [r.name for r in everything.select(kind="block")] == ["encoder.0", "encoder.1"]
    assert [r.name for r in everything.select("encoder.1*", kind=("ffn", "self_attn"))] == [
        "encoder.1.self_attn", "encoder.1.ffn"]


def test_empty_selection_lists_available_sites() -> None:
    with pytest.raises(ValueError, match="encoder.0.self_attn"):
        with attnprobe.trace(make_model(), "decoder.*", adapter=ToyAdapter):
            pass


def test_unknown_record_name_suggests_close_names() -> None:
    model = make_model()
    with attnprobe.trace(model, adapter=ToyAdapter) as t:
        model(*padded_batch([3], 6))
    with pytest.raises(LookupError, match="encoder.0.self_attn"):
        t["encoder.0.self_atn"]


def test_several_calls_are_kept_and_singular_access_explains() -> None:
    model = make_model()
    with attnprobe.trace(model, "encoder.0.ffn", adapter=ToyAdapter) as t:
        model(*padded_batch([3], 6, seed=1))
        model(*padded_batch([4], 6, seed=2))
    record = t["encoder.0.ffn"]
    assert [c.value.shape[1] for c in record.outputs] == [3, 4]
    with pytest.raises(LookupError, match=r"ran 2 times.*outputs\[i\]"):
        record.output


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       fail=st.booleans(), seed=st.integers(0, 5))
def test_tracing_changes_nothing_and_cleans_up(lengths: list[int], fail: bool, seed: int) -> None:
    model = make_model(seed)
    features, lengths_tensor = padded_batch(lengths, 6, seed)
    fired: list[int] = []
    before_handle = model.blocks[0].register_forward_hook(lambda *a: fired.append(1))
    hooks_before = all_hooks(model)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(features, lengths_tensor)
    fired.clear()
    during_handle = None
    try:
        with attnprobe.trace(model, adapter=ToyAdapter) as t:
            during_handle = model.blocks[1].register_forward_hook(lambda *a: fired.append(2))
            traced = model(features, lengths_tensor)
            if fail:
                raise KeyboardInterrupt("injected")
    except KeyboardInterrupt:
        assert fail
    assert torch.equal(traced, expected)
    assert fired == [1, 2]
    assert during_handle is not None
    during_handle.remove()
    assert all_hooks(model) == hooks_before
    assert all(block.self_attn.attention_tap.active == 0 for block in model.blocks)
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    assert not model.training
    assert len(t["encoder.0.self_attn"].attentions) == 1
    before_handle.remove()


def test_failure_while_installing_removes_what_was_installed() -> None:
    class BrokenAdapter(ToyAdapter):
        def bindings(self):  # type: ignore[override]
            found = super().bindings()
            found[-1].attention = None
            found[-1].site = attnprobe.Site("encoder.1.x", "self_attn", "encoder", 1, "x")
            return found

    model = make_model()
    hooks_before = all_hooks(model)
    with pytest.raises(RuntimeError, match="no attention capture"):
        with attnprobe.trace(model, adapter=BrokenAdapter):
            pass
    assert all_hooks(model) == hooks_before
    assert all(block.self_attn.attention_tap.active == 0 for block in model.blocks)


def test_nested_traces_each_receive_everything() -> None:
    model = make_model()
    features, lengths = padded_batch([4, 2], 6)
    hooks_before = all_hooks(model)
    with attnprobe.trace(model, adapter=ToyAdapter) as outer:
        with attnprobe.trace(model, "encoder.1.*", adapter=ToyAdapter) as inner:
            model(features, lengths)
        assert model.blocks[1].self_attn.attention_tap.active == 1
        model(features, lengths)
    assert all_hooks(model) == hooks_before
    assert len(inner["encoder.1.self_attn"].attentions) == 1
    assert len(outer["encoder.1.self_attn"].attentions) == 2
    assert torch.equal(inner["encoder.1.self_attn"].attention,
                       outer["encoder.1.self_attn"].attentions[0].value)


def test_two_models_in_two_threads_do_not_interfere() -> None:
    models = [make_model(0), make_model(1)]
    batches = [padded_batch([5, 2], 6, seed=3), padded_batch([3], 6, seed=4)]
    results: dict[int, attnprobe.Trace] = {}
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        with attnprobe.trace(models[index], adapter=ToyAdapter) as t:
            barrier.wait()
            for _ in range(3):
                models[index](*batches[index])
        results[index] = t

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(2):
        expected = models[index](*batches[index])
        record = results[index]["encoder.1"]
        assert len(record.outputs) == 3
        assert torch.equal(record.outputs[-1].value, expected)


def test_memory_budget_raises_before_attention_is_stored_and_names_options() -> None:
    model = make_model()
    features, lengths = padded_batch([50, 50], 6)
    one_layer = 2 * 2 * 50 * 50 * 4
    hooks_before = all_hooks(model)
    with pytest.raises(MemoryBudgetExceeded, match="store=False") as raised:
        with attnprobe.trace(model, kind="self_attn", capture={"attention"},
                             memory_budget=int(1.5 * one_layer), adapter=ToyAdapter) as t:
            model(features, lengths)
    assert "memory_budget" in str(raised.value)
    # The projection covers both layers, so nothing was stored at all.
    assert t.stored_bytes == 0
    assert all_hooks(model) == hooks_before
    with attnprobe.trace(model, kind="self_attn", capture={"attention"},
                         memory_budget=2 * one_layer, adapter=ToyAdapter) as t:
        model(features, lengths)
    assert t.stored_bytes == 2 * one_layer


def test_streaming_reducers_without_storing() -> None:
    model = make_model()
    counter = CallCounter()
    with attnprobe.trace(model, reducers=[counter], store=False, adapter=ToyAdapter) as t:
        model(*padded_batch([4], 6))
    assert t.stored_bytes == 0
    assert counter.counts["encoder.0.self_attn"] == {"output": 1, "attention": 1}
    assert counter.counts["encoder.1"] == {"output": 1, "input": 1}
    assert t["encoder.0.self_attn"].attentions == []


def test_attach_keeps_the_graph_and_default_detaches() -> None:
    model = make_model()
    features, lengths = padded_batch([4], 6)
    with attnprobe.trace(model, "encoder.frontend", attach=True, adapter=ToyAdapter) as attached:
        out = model(features, lengths)
    encoder_input = attached["encoder.frontend"].output
    assert encoder_input.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), encoder_input)
    assert grad.shape == encoder_input.shape
    with attnprobe.trace(model, "encoder.frontend", adapter=ToyAdapter) as detached:
        model(features, lengths)
    assert not detached["encoder.frontend"].output.requires_grad


def test_capture_subset_and_bad_capture_name() -> None:
    model = make_model()
    with attnprobe.trace(model, capture={"output"}, adapter=ToyAdapter) as t:
        model(*padded_batch([3], 6))
    assert t["encoder.0.self_attn"].attentions == [] and t["encoder.0"].inputs == []
    assert model.blocks[0].self_attn.attention_tap.active == 0
    with pytest.raises(ValueError, match="subset"):
        attnprobe.trace(model, capture={"weights"})


def test_lengths_unknown_when_a_submodule_is_called_directly() -> None:
    model = make_model()
    with attnprobe.trace(model, "encoder.0.ffn", adapter=ToyAdapter) as t:
        model.blocks[0].ffn(torch.randn(2, 3, 8))
    captured = t["encoder.0.ffn"].outputs[0]
    assert not captured.lengths_known
    assert captured.lengths.tolist() == [3, 3]


def test_unsupported_model_error_lists_families_and_the_fix() -> None:
    with pytest.raises(UnsupportedModelError, match="register_adapter") as raised:
        with attnprobe.trace(torch.nn.Sequential(torch.nn.Linear(2, 2))):
            pass
    assert "attnprobe-conformer" in str(raised.value)
