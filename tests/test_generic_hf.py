"""The generic site map on Hugging Face models no dedicated adapter knows (here one that does not
even take speech: the trace still works, the probes need a runner)."""

from __future__ import annotations

import pytest
import torch

import attnprobe
from tests.toy_model import all_hooks

transformers = pytest.importorskip("transformers")


def bert(implementation: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)
    return transformers.BertModel._from_config(config, attn_implementation=implementation,
                                               add_pooling_layer=False).eval()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_modules_of_an_unknown_hf_model_are_found_and_restored(
        implementation: str) -> None:
    model = bert(implementation)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    expected = model(ids, attention_mask=mask).last_hidden_state
    hooks_before = all_hooks(model)
    with pytest.warns(UserWarning, match=r"encoder encoder.layer \(2 blocks\)"):
        with attnprobe.trace(model) as t:
            traced = model(ids, attention_mask=mask).last_hidden_state
    assert t.site_map.family == "generic"
    assert [site.name for site in t.sites] == [
        f"encoder.{layer}{branch}" for layer in range(2) for branch in ("", ".self_attn", ".ffn")]
    assert t["encoder.1.self_attn"].site.module_path == "encoder.layer.1.attention.self"
    assert any("BertModel.forward takes no audio" in note for note in t.site_map.notes)
    assert (traced - expected).abs().max() <= 1e-5
    assert model.config._attn_implementation == implementation
    assert all_hooks(model) == hooks_before
    record = t["encoder.1.self_attn"]
    assert record.lengths.tolist() == [7, 5]
    attention = record.attention
    assert attention.shape == (2, 2, 7, 7)
    assert torch.all(attention[1, :, :, 5:] == 0)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 2, 7))
