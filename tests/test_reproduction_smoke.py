"""The reproduction machinery end to end on a tiny synthetic split: train, resume-skip, evaluate,
table; plus the properties of its pieces (schedules, batching, names, edit distance)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.labels import CHARACTER_LABELS
from attnprobe.models import ConformerAED, ConformerAEDConfig
from benchmarks.corpus.training_set import TrainingSplit
from benchmarks.corpus.vocabulary import generate_sentences
from benchmarks.reproduction import evaluate, sweep, table
from benchmarks.reproduction.data import (
    collate,
    epoch_batches,
    fixed_examples,
    join,
    training_batches,
)
from benchmarks.reproduction.early_attention import attended_positions
from benchmarks.reproduction.experiments import (
    Experiment,
    Recipe,
    all_experiments,
    experiment,
    names,
)
from benchmarks.reproduction.scoring import edit_distance
from benchmarks.reproduction.train import (
    learning_rate_factor,
    load_checkpoint,
    save_checkpoint,
    train,
)

TINY_MODEL = {"vocab_size": 30, "d_model": 32, "heads": 2, "ff_dim": 64, "blocks": 2,
              "conv_kernel": 5, "frontend_channels": (4, 8), "embed_dim": 16, "lstm_dim": 32,
              "attention_dim": 32, "readout_dim": 32}


def synthetic_split(count: int, seed: int) -> TrainingSplit:
    """Random features, 8 frames per character (enough for 6x downsampling and CTC), word times
    spread evenly over the frames."""
    generator = torch.Generator().manual_seed(seed)
    features, labels, utterances = [], [], []
    for text in generate_sentences(count, seed=seed, max_words=4):
        frames = 8 * len(text)
        features.append(torch.randn(frames, 80, generator=generator).half())
        labels.append(torch.tensor(CHARACTER_LABELS.encode(text), dtype=torch.int16))
        words = text.split()
        seconds = frames * 0.01 / len(words)
        utterances.append({"text": text, "frames": frames, "words": [
            {"word": word, "start": index * seconds, "end": (index + 1) * seconds}
            for index, word in enumerate(words)]})
    return TrainingSplit(features=features, labels=labels, utterances=utterances, mean=None, std=None)


def smoke_experiment(seed: int = 0, **model: object) -> Experiment:
    recipe = Recipe(steps=4, batch_size=3, checkpoint_every=2, monitor_every=2, probe_examples=2)
    return Experiment("baseline", seed, {**TINY_MODEL, **model}, recipe, "smoke")


@pytest.fixture(scope="module")
def splits() -> tuple[TrainingSplit, TrainingSplit]:
    return synthetic_split(12, seed=0), synthetic_split(4, seed=1)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, splits) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "baseline-seed0"
    train(smoke_experiment(aux_ctc_blocks=(0,), self_attention_off_steps=1), run_dir, *splits,
          report=lambda line: None)
    return run_dir


def test_a_run_writes_config_logs_checkpoints_and_summary_last(finished_run) -> None:
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert [path.name for path in sorted((finished_run / "checkpoints").glob("*.pt"))] == [
        "step-000002.pt", "step-000004.pt"]
    monitor = [json.loads(line) for line in (finished_run / "monitor.jsonl").read_text().splitlines()]
    assert [record["step"] for record in monitor] == [0, 2, 4]
    assert summary["final_reversal_scores"] == monitor[-1]["reversal_scores"]
    log = [json.loads(line) for line in (finished_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and "ctc_block_0" in log[-1]
    config = json.loads((finished_run / "config.json").read_text())
    assert config["model_config"]["aux_ctc_blocks"] == [0]


def test_checkpoints_are_float16_and_reload(finished_run) -> None:
    saved = torch.load(finished_run / "checkpoints" / "step-000004.pt", weights_only=True)
    floating = [tensor for tensor in saved["state_dict"].values() if tensor.is_floating_point()]
    assert floating and all(tensor.dtype == torch.float16 for tensor in floating)
    model, step = load_checkpoint(finished_run / "checkpoints" / "step-000004.pt")
    assert step == 4 and not model.training
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_float16_checkpoints_keep_the_predictions_and_the_feature_statistics(tmp_path, splits) -> None:
    torch.manual_seed(0)
    model = ConformerAED(ConformerAEDConfig.tiny(**TINY_MODEL)).eval()
    mean, std = torch.linspace(-1, 1, 80), torch.linspace(1, 2, 80)
    save_checkpoint(model, 7, tmp_path / "step.pt", mean, std)
    saved = torch.load(tmp_path / "step.pt", weights_only=True)
    assert torch.equal(torch.tensor(saved["feature_mean"]), mean)
    assert torch.equal(torch.tensor(saved["feature_std"]), std)
    reloaded, _ = load_checkpoint(tmp_path / "step.pt")
    batch = collate(fixed_examples(splits[1], 4))
    with torch.no_grad():
        original, restored = (
            candidate.label_log_probs(batch.inputs, batch.input_lengths, batch.labels,
                                      batch.label_lengths) for candidate in (model, reloaded))
    assert torch.allclose(original, restored, atol=2e-2)


def test_the_same_seed_gives_the_same_run(tmp_path, splits) -> None:
    for name in ("first", "second"):
        train(smoke_experiment(seed=3), tmp_path / name, *splits, report=lambda line: None)
    logs = [[{key: value for key, value in json.loads(line).items() if not key.endswith("_s")}
             for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("first", "second")]
    assert logs[0] == logs[1]
    states = [torch.load(tmp_path / name / "checkpoints" / "step-000004.pt", weights_only=True)
              ["state_dict"] for name in ("first", "second")]
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_sweep_skips_finished_runs(finished_run) -> None:
    runs_dir = finished_run.parent
    finished = smoke_experiment()
    other = dataclasses.replace(finished, seed=1)
    assert sweep.pending([finished, other], runs_dir) == [other]


def test_attended_positions_read_a_pinned_attention(splits) -> None:
    model = ConformerAED(ConformerAEDConfig.tiny(**TINY_MODEL))
    examples = fixed_examples(splits[1], 3)
    model.decoder.cross_attn.hard_center_weight = 1.0
    model.decoder.cross_attn.hard_target = "start"
    assert attended_positions(model, examples) == (0.0, 0.0, 0.0)
    model.decoder.cross_attn.hard_target = "reversed"
    first, last, _ = attended_positions(model, examples)
    assert first > 0.6 and last < 0.4


def test_seed_major_order_keeps_whole_seeds_together() -> None:
    runs = [run for run in all_experiments(seeds=(0, 1, 2)) if run.group in ("aux-ctc", "hard-centre")]
    ordered = sweep.seed_major(runs)
    assert [run.name for run in ordered[:4]] == ["aux-ctc-seed0", "hard-centre-seed0",
                                                 "aux-ctc-seed1", "hard-centre-seed1"]
    assert sorted(run.name for run in ordered) == sorted(run.name for run in runs)


def test_evaluate_last_only_skips_the_earlier_checkpoints_and_reports_refresh(
        finished_run, splits, tmp_path) -> None:
    copy = tmp_path / finished_run.name
    shutil.copytree(finished_run, copy)
    (copy / evaluate.EVALUATION_NAME).unlink(missing_ok=True)
    evaluation = evaluate.evaluate_run(copy, dev_examples=fixed_examples(splits[1], 4),
                                       log=lambda line: None, last_only=True)
    assert list(evaluation["checkpoints"]) == ["4"]
    assert "dev_character_error_rate" in evaluation["checkpoints"]["4"]
    stale = json.loads((copy / evaluate.EVALUATION_NAME).read_text())
    stale["checkpoints"]["4"]["report"]["verdict"] = "stale"
    (copy / evaluate.EVALUATION_NAME).write_text(json.dumps(stale))
    kept = evaluate.evaluate_run(copy, dev_examples=fixed_examples(splits[1], 4), log=lambda line: None,
                                 last_only=True)
    assert kept["checkpoints"]["4"]["report"]["verdict"] == "stale"
    refreshed = evaluate.evaluate_run(copy, dev_examples=fixed_examples(splits[1], 4),
                                      log=lambda line: None, last_only=True, refresh_reports=True)
    before, after = evaluation["checkpoints"]["4"], refreshed["checkpoints"]["4"]
    assert after["report"] == before["report"]
    assert after["timestamp_errors"] == before["timestamp_errors"]


def test_evaluate_and_table_read_the_run(finished_run, splits, tmp_path) -> None:
    dev_examples = fixed_examples(splits[1], 4)
    evaluation = evaluate.evaluate_run(finished_run, dev_examples=dev_examples, log=lambda line: None)
    assert sorted(evaluation["checkpoints"], key=int) == ["2", "4"]
    last = evaluation["checkpoints"]["4"]
    assert last["report"]["verdict"] in ("not reversed", *(f"reversed at block {b}" for b in (0, 1)))
    assert {"gradient_alignment", "cross_attention_alignment"} <= set(last["timestamp_errors"])
    assert "dev_character_error_rate" not in evaluation["checkpoints"]["2"]
    runs = table.load_runs([finished_run.parent])
    text = table.markdown(runs)
    assert "| baseline-seed0 |" in text and "| baseline | 1 |" in text
    expected = int(last["report"]["verdict"].startswith("reversed"))
    assert text.splitlines()[-1].endswith(f"| {expected} of 1 |")
    dominance = table.dominance_table(runs)
    ratios = last["report"]["dominance_ratio"]
    assert f"{ratios[1][1]:.2f} |" in dominance.splitlines()[-1]
    table.figure(runs, tmp_path / "figure.png")
    table.block_figure(runs, tmp_path / "blocks.png")
    assert (tmp_path / "figure.png").stat().st_size > 0 and (tmp_path / "blocks.png").stat().st_size > 0


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(10, 5000), schedule=st.sampled_from(["warmup-linear", "one-cycle"]))
def test_learning_rate_schedules_stay_in_range_and_peak_once(steps: int, schedule: str) -> None:
    recipe = Recipe(steps=steps, schedule=schedule)
    factors = [learning_rate_factor(recipe, step) for step in range(1, steps + 1)]
    assert all(0.0 < factor <= 1.0 + 1e-9 for factor in factors)
    peak = max(range(steps), key=factors.__getitem__)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(factors[: peak + 1]))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(factors[peak:]))
    assert factors[-1] < 0.02


@settings(max_examples=25, deadline=None)
@given(frames=st.lists(st.integers(10, 500), min_size=1, max_size=40),
       concatenate=st.integers(1, 3), batch_size=st.integers(1, 5), seed=st.integers(0, 100),
       epoch=st.integers(0, 3))
def test_an_epoch_uses_every_utterance_at_most_once_and_the_seed_fixes_it(
        frames: list[int], concatenate: int, batch_size: int, seed: int, epoch: int) -> None:
    batches = epoch_batches(frames, batch_size, concatenate, seed, epoch)
    used = [index for batch in batches for group in batch for index in group]
    assert sorted(used) == sorted(set(used)) and len(used) == len(frames) - len(frames) % concatenate
    assert all(len(group) == concatenate for batch in batches for group in batch)
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert batches == epoch_batches(frames, batch_size, concatenate, seed, epoch)


def test_training_batches_repeat_for_the_same_seed() -> None:
    split = synthetic_split(7, seed=2)
    first, second = training_batches(split, 2, 1, seed=5), training_batches(split, 2, 1, seed=5)
    for _ in range(6):  # past the end of the first epoch
        assert torch.equal(next(first).labels, next(second).labels)


def test_joined_utterances_shift_word_times_and_separate_with_a_space() -> None:
    split = synthetic_split(2, seed=4)
    joined = join(split, [0, 1])
    first, second = split[0], split[1]
    assert joined.text == f"{split.texts[0]} {split.texts[1]}"
    assert CHARACTER_LABELS.decode(joined.labels.tolist()) == joined.text
    assert len(joined.features) == len(first[0]) + len(second[0])
    offset = len(first[0]) * 0.01
    assert joined.words[len(first[2])][1] == pytest.approx(second[2][0].start + offset)


def test_every_experiment_name_round_trips_and_groups_share_seeds() -> None:
    assert [experiment(name).name for name in names()] == names()
    seeds_per_group: dict[str, set[int]] = {}
    for run in all_experiments():
        seeds_per_group.setdefault(run.group, set()).add(run.seed)
    assert len(set(map(frozenset, seeds_per_group.values()))) == 1
    assert len(seeds_per_group["baseline"]) >= 5
    with pytest.raises(ValueError, match="baseline-seed0"):
        experiment("baseline-7")


def test_mitigation_steps_follow_the_step_count() -> None:
    short = experiment("hard-centre-seed0", Recipe(steps=100)).model_overrides()
    assert short["hard_cross_attention_steps"] == 20 and short["cross_attention_blend_steps"] == 10
    assert experiment("self-attention-off-seed0", Recipe(steps=100)).model_overrides()[
        "self_attention_off_steps"] == 10


@settings(max_examples=25, deadline=None)
@given(first=st.text("abc ", max_size=8), second=st.text("abc ", max_size=8),
       third=st.text("abc ", max_size=8))
def test_edit_distance_is_a_metric(first: str, second: str, third: str) -> None:
    assert edit_distance(first, first) == 0
    assert edit_distance(first, second) == edit_distance(second, first)
    assert edit_distance(first, "") == len(first)
    assert edit_distance(first, third) <= edit_distance(first, second) + edit_distance(second, third)
