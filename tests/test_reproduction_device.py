"""The reproduction's training on another device and precision, and at the paper's size: the
code paths run on the CPU (a GPU is not needed to check them), and a missing GPU is a clear
error."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnprobe.models import ConformerAEDConfig
from benchmarks.reproduction import sweep
from benchmarks.reproduction import train as train_module
from benchmarks.reproduction.device import (
    DeviceUnavailableError,
    Placement,
    resolve_placement,
)
from benchmarks.reproduction.experiments import Experiment, Recipe
from benchmarks.reproduction.train import build_model, load_checkpoint, train
from tests.test_reproduction_smoke import TINY_MODEL, smoke_experiment, synthetic_split


@pytest.fixture(scope="module")
def splits():
    return synthetic_split(6, seed=0), synthetic_split(2, seed=1)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_without_a_gpu_is_a_clear_error(no_cuda: None, capsys: pytest.CaptureFixture
                                             ) -> None:
    with pytest.raises(DeviceUnavailableError, match="torch sees no CUDA GPU here.*--device cpu"):
        resolve_placement("cuda")
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        resolve_placement("tpu:7")
    for main in (train_module.main, sweep.main):
        with pytest.raises(SystemExit) as exited:
            main(["baseline-seed0", "--device", "cuda"] if main is train_module.main
                 else ["--device", "cuda:1", "--groups", "baseline"])
        assert exited.value.code == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_precision_resolves_per_device() -> None:
    assert resolve_placement("cpu") == Placement(torch.device("cpu"), "float32")
    assert resolve_placement("cpu", "bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision 'fp8'"):
        resolve_placement("cpu", "fp8")
    assert resolve_placement("cpu", "fp16").gradient_scaler() is not None
    assert resolve_placement("cpu", "bf16").gradient_scaler() is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_a_few_steps_and_saves_float_checkpoints(tmp_path, splits,
                                                                        precision: str) -> None:
    """The autocast path (and fp16's gradient scaler) on the CPU: finite losses, a checkpoint that
    loads, and the placement in the run's config and summary."""
    run_dir = tmp_path / "baseline-seed0"
    summary = train(smoke_experiment(), run_dir, *splits, report=lambda line: None,
                    placement=resolve_placement("cpu", precision))
    assert summary["status"] == "finished" and summary["precision"] == precision
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["device"], config["precision"]) == ("cpu", precision)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log and all(math.isfinite(entry["loss"]) for entry in log)
    model, step = load_checkpoint(sorted((run_dir / "checkpoints").glob("*.pt"))[-1])
    assert step == 4 and all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_mixed_precision_changes_the_arithmetic_not_the_recipe(tmp_path, splits) -> None:
    plain = train(smoke_experiment(), tmp_path / "a" / "baseline-seed0", *splits,
                  report=lambda line: None)
    mixed = train(smoke_experiment(), tmp_path / "b" / "baseline-seed0", *splits,
                  report=lambda line: None, placement=resolve_placement("cpu", "bf16"))
    assert plain["precision"] == "float32" and plain["steps"] == mixed["steps"]
    assert plain["final_loss"] != mixed["final_loss"]


def test_the_paper_size_is_the_papers_encoder() -> None:
    config = ConformerAEDConfig.paper(vocab_size=30)
    assert (config.blocks, config.d_model, config.heads, config.ff_dim, config.conv_kernel,
            config.lstm_dim) == (12, 512, 8, 2048, 32, 1024)
    recipe = Recipe(model_size="paper")
    model = build_model(Experiment("baseline", 0, {"vocab_size": 30}, recipe, "paper size"))
    assert len(model.encoder.blocks) == 12 and model.config.d_model == 512
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_dict({k: v for k, v in Recipe().to_dict().items()
                             if k != "model_size"}).model_size == "tiny"
    with pytest.raises(ValueError, match="model_size 'huge'"):
        Recipe(model_size="huge")


@pytest.mark.slow
def test_the_paper_size_trains_two_steps_on_the_cpu(tmp_path, splits) -> None:
    """The paper's 12 x 512 model through the whole training path, two steps, bf16 autocast."""
    recipe = Recipe(steps=2, batch_size=2, checkpoint_every=2, monitor_every=2, probe_examples=1,
                    model_size="paper")
    run = Experiment("baseline", 0, {"vocab_size": 30}, recipe, "paper size smoke")
    summary = train(run, tmp_path / run.name, *splits, report=lambda line: None,
                    placement=resolve_placement("cpu", "bf16"))
    assert summary["status"] == "finished"
    assert json.loads((tmp_path / run.name / "config.json").read_text())["parameters"] > 5e7
    assert TINY_MODEL["d_model"] < 512                     # the smoke tests stay tiny
