"""FlipMonitor: a planted reversal is reported once, at the right block; monitoring never changes
training; the framework callbacks drive it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnprobe
from attnprobe.models import ConformerAED, ConformerAEDConfig
from attnprobe.monitor import EncoderFlipWarning, FlipEvent, FlipMonitor
from attnprobe.probes import frame_mapping, gradient_maps
from attnprobe.probes.streaming import streaming_probes
from attnprobe.testing import plant_reversal

BLOCKS = 3
FRAMES = 72  # 12 encoder frames after the 6x frontend


def tiny_model(seed: int = 0, dropout: float = 0.0) -> ConformerAED:
    torch.manual_seed(seed)
    return ConformerAED(ConformerAEDConfig.tiny(
        vocab_size=12, d_model=32, heads=2, ff_dim=64, blocks=BLOCKS, conv_kernel=5,
        frontend_channels=(4, 8), embed_dim=16, lstm_dim=32, attention_dim=32, readout_dim=32,
        dropout=dropout))


def probe_batch() -> tuple[torch.Tensor, ...]:
    """Two sequences of equal length, so reversing the padded time axis reverses valid frames."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, FRAMES, 80, generator=generator)
    labels = torch.randint(2, 12, (2, 6), generator=generator)
    return features, torch.full((2,), FRAMES), labels, torch.tensor([6, 5])


def training_batch(step: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(100 + step)
    features = torch.randn(3, 60, 80, generator=generator)
    labels = torch.randint(2, 12, (3, 5), generator=generator)
    return features, torch.tensor([60, 54, 48]), labels, torch.tensor([5, 4, 3])


def train_steps(model: ConformerAED, steps: range, monitor: FlipMonitor | None,
                plant: tuple[int, int] | None = None) -> None:
    """A plain PyTorch loop; ``plant=(block, step)`` reverses time after ``block`` from ``step`` on."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    handle = None
    try:
        for step in steps:
            if plant is not None and step == plant[1]:
                handle = model.encoder.blocks[plant[0]].register_forward_hook(
                    lambda module, inputs, output: output.flip(1))
            loss, _ = model.loss(*training_batch(step))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.step(step)
    finally:
        if handle is not None:
            handle.remove()


@settings(max_examples=6, deadline=None)
@given(block=st.integers(0, BLOCKS - 1), every=st.sampled_from([1, 5]),
       max_frames=st.sampled_from([4, None]))
def test_planted_reversal_is_reported_once_naming_its_block(block: int, every: int,
                                                            max_frames: int | None) -> None:
    model = tiny_model()
    events: list[FlipEvent] = []
    monitor = FlipMonitor(model, probe_batch(), every=every, on_flip=events.append,
                          max_frames=max_frames)
    train_steps(model, range(1, 11), monitor, plant=(block, 5))
    assert [(event.step, event.reversed_at) for event in events] == [(5, block)]
    assert monitor.flip is events[0]
    before = [record for record in monitor.history if record.step < 5]
    assert all(record.reversed_at is None for record in before)
    assert all(record.reversed_at == block for record in monitor.history if record.step >= 5)


def test_no_reversal_means_no_call() -> None:
    model = tiny_model()
    events: list[FlipEvent] = []
    monitor = FlipMonitor(model, probe_batch(), every=2, on_flip=events.append)
    train_steps(model, range(1, 9), monitor)
    assert events == [] and monitor.flip is None
    assert [record.step for record in monitor.history] == [2, 4, 6, 8]
    assert all(min(record.reversal_scores) > 0.5 for record in monitor.history)


def test_default_on_flip_warns_naming_the_block() -> None:
    model = tiny_model()
    monitor = FlipMonitor(model, probe_batch(), every=1)
    with pytest.warns(EncoderFlipWarning, match="block 1"):
        train_steps(model, range(1, 3), monitor, plant=(1, 1))


@settings(max_examples=10, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=200))
def test_every_modules_train_eval_flag_is_restored(flags: list[bool]) -> None:
    model = tiny_model()
    modules = list(model.modules())
    for module, training in zip(modules, flags * (len(modules) // len(flags) + 1)):
        module.training = training
    before = [module.training for module in modules]
    FlipMonitor(model, probe_batch(), every=1).probe(0)
    assert [module.training for module in modules] == before


def test_monitoring_does_not_change_training() -> None:
    """Same parameters after training with and without a monitor (dropout on, so a monitor that
    drew random numbers or updated batch-norm statistics would show)."""
    watched, unwatched = tiny_model(dropout=0.1), tiny_model(dropout=0.1)
    torch.manual_seed(7)
    train_steps(watched, range(1, 5), FlipMonitor(watched, probe_batch(), every=1))
    torch.manual_seed(7)
    train_steps(unwatched, range(1, 5), None)
    for (name, mine), theirs in zip(watched.state_dict().items(), unwatched.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_probe_leaves_parameter_gradients_alone() -> None:
    model = tiny_model()
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    FlipMonitor(model, probe_batch(), every=1).probe(0)
    assert all(torch.equal(parameter.grad, torch.full_like(parameter, 0.5))
               for parameter in model.parameters())


def test_history_and_jsonl_log_agree(tmp_path) -> None:
    model = tiny_model()
    log = tmp_path / "run" / "monitor.jsonl"
    monitor = FlipMonitor(model, probe_batch(), every=3, log_path=log)
    returned = [monitor(step) for step in range(1, 8)]
    assert [record is not None for record in returned] == [step % 3 == 0 for step in range(1, 8)]
    assert monitor.step(6) is None, "a step already probed is not probed again"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [record.to_dict() for record in monitor.history]
    record = monitor.history[-1]
    assert len(record.reversal_scores) == BLOCKS
    assert len(record.dominance_ratio) == BLOCKS
    assert len(record.dominance_ratio[0]) == len(record.dominance_branches) == 4
    assert record.cross_attention_monotonicity is not None


def test_probe_batch_without_labels_skips_cross_attention() -> None:
    features, lengths, _, _ = probe_batch()
    record = FlipMonitor(tiny_model(), (features, lengths), every=1).probe(0)
    assert record.cross_attention_monotonicity is None
    assert len(record.reversal_scores) == BLOCKS


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="every"):
        FlipMonitor(tiny_model(), probe_batch(), every=0)


def test_importing_the_integrations_imports_no_framework() -> None:
    code = ("import sys, attnprobe.integrations, attnprobe.monitor; "
            "print(sorted(name for name in ('transformers', 'lightning', 'pytorch_lightning') "
            "if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unknown_integration_names_what_exists() -> None:
    from attnprobe import integrations

    with pytest.raises(AttributeError, match="FlipMonitorTrainerCallback"):
        integrations.FlipMonitorKerasCallback  # noqa: B018


@pytest.mark.parametrize("block", [0, 1, 2])
def test_a_planted_reversal_is_recorded_at_its_block_as_the_report_says(block: int) -> None:
    """Ground truth from the planting: the encoder's output is reversed from ``block`` on. The
    record names that block, its per-block scores turn there, and it says what the report says."""
    model = tiny_model()
    with plant_reversal(model, after_block=block):
        record = FlipMonitor(model, probe_batch(), every=1, on_flip=lambda event: None).probe(0)
        report = attnprobe.reversal_report(model, probe_batch(), projections=4, max_frames=48)
    assert record.reversed_at == block
    assert all(score <= -0.5 for score in record.reversal_scores[block:])
    assert (record.reversed_at, record.decided_by) == (report.reversed_at, report.decided_by)
    assert record.gradient_map_scores == pytest.approx(report.gradient_maps.scores.tolist())


def test_a_reversal_only_the_decoder_probes_see_is_a_flip(monkeypatch) -> None:
    """A frame mapping that sees nothing, the gradient maps of an aligned decoder turning at block
    2 and backward cross-attention: the monitor reports a flip at block 2, decided by the decoder."""
    import attnprobe.probes.report as report_module

    def forward_mapping(*args, **kwargs):
        result = frame_mapping(*args, **kwargs)
        result.per_sequence = np.ones_like(result.per_sequence)  # every block forward
        return result

    def turning_maps(*args, **kwargs):
        result = gradient_maps(*args, **kwargs)
        # G_0 forward (an aligned decoder), blocks 0 and 1 forward, block 2 backward
        result.per_sequence = np.array([[0.9, 0.9, 0.9, -0.9]] * len(result.per_sequence))
        return result

    def backward_cross_attention(*args, **kwargs):
        result = streaming_probes(*args, **kwargs)
        result.cross_attention.per_sequence = -np.ones_like(result.cross_attention.per_sequence)
        return result

    monkeypatch.setattr(report_module, "frame_mapping", forward_mapping)
    monkeypatch.setattr(report_module, "gradient_maps", turning_maps)
    monkeypatch.setattr(report_module, "streaming_probes", backward_cross_attention)
    events: list[FlipEvent] = []
    record = FlipMonitor(tiny_model(), probe_batch(), every=1, on_flip=events.append).probe(0)
    assert (record.reversed_at, record.decided_by) == (2, "gradient maps and cross-attention")
    assert [event.reversed_at for event in events] == [2]
    alone = FlipMonitor(tiny_model(), probe_batch(), every=1, on_flip=events.append,
                        with_gradient_maps=False).probe(0)
    assert alone.reversed_at is None and alone.gradient_map_scores is None
