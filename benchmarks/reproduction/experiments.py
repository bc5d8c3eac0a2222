"""The named experiments of the CPU reproduction of Schmitt et al. (ICASSP 2025).

Every run trains attnprobe's Conformer AED (:meth:`ConformerAEDConfig.tiny`, character labels,
the paper's 6x time downsampling) on the
espeak-ng training corpus of :mod:`benchmarks.corpus.training_set`, with one recipe
(:class:`Recipe`) sized to about ten minutes on one idle CPU core. What varies is named here:

- ``baseline``: the recipe over :data:`SEEDS` (the paper: the flip depended on the seed alone);
- mitigations over the same seeds (paper section 5): ``aux-ctc`` (CTC on blocks 2 and 4 of 6,
  the paper's blocks 4 and 8 of 12), ``self-attention-off`` (no mixing across time for the first
  :data:`SELF_ATTENTION_OFF_SHARE` of the steps), ``hard-centre`` (cross-attention pinned to the
  centre frame for the first :data:`HARD_CENTRE_SHARE`, then a linear blend to soft attention);
- conditions that should make a flip likelier: ``deep`` (12 blocks), ``no-positions`` (relative
  positions clipped at 0, so only convolution padding tells where a frame is), ``short-clip``
  (relative positions clipped at 4 frames), ``long`` (three utterances per example, about 3x
  longer sequences), ``one-cycle`` (a long learning-rate warm-up: 45% of the steps up, 45% down),
  ``hard-start`` (cross-attention pinned to the first frame for the first :data:`HARD_CENTRE_SHARE`
  of the steps, then blended to soft attention: the paper explains the flip by a decoder that reads
  the first frames early in training, which pushes self-attention to bring every informative frame
  to the start);
- a control: ``absolute-positions`` (sinusoidal absolute positions added, which should make a flip
  less likely);
- ``induced-reversal``: *not* a natural flip. Cross-attention is pinned to the anti-diagonal (the
  first label on the last frame) for the first :data:`INDUCED_SHARE` of the steps, then released
  like ``hard-centre``: the encoder has to reverse time to serve it. It gives a reversed model to
  test the probes, the monitor and gradient alignment on, and asks whether a reversal, once
  learned, survives free training (the paper: flips stayed); ``induced-aux-ctc`` adds the
  auxiliary CTC mitigation to it.

Run names are ``<group>-seed<seed>``; :func:`experiment` looks one up, :func:`names` lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SEEDS = (0, 1, 2, 3, 4)
"""Five seeds for every group: each fixes the initial weights and the order of the batches."""

RECIPE_STEPS = 1200
"""Optimiser steps per run (batches of 16): about ten minutes on one idle core for the baseline
(``docs/reproduction.md`` gives the measured times)."""

SELF_ATTENTION_OFF_SHARE = 0.1
"""Share of the steps with self-attention off. The paper switched it off for 1 of 100 epochs, while
its flip appeared in epochs 2-3; our flip time is not known in advance, so the share is larger."""

HARD_CENTRE_SHARE = 0.2
HARD_CENTRE_BLEND_SHARE = 0.1
"""Hard centre cross-attention for the first 20% of the steps (the paper: about 20 of 100 epochs),
then a linear blend to soft attention over the next 10%."""

INDUCED_SHARE = 0.3
INDUCED_BLEND_SHARE = 0.1
"""Anti-diagonal cross-attention for the first 30% of the steps, then a blend over the next 10%."""


MODEL_SIZES = ("tiny", "paper")
"""Model sizes a recipe can train (:attr:`Recipe.model_size`)."""


@dataclass(frozen=True)
class CorpusSpec:
    """Arguments of :func:`benchmarks.corpus.training_set.build_training_set`. The defaults are
    those of ``benchmarks/build_training_corpus.py``, so both share one cached corpus."""

    out_dir: str = "data/train"
    n_train: int = 4000
    n_dev: int = 200
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """Everything about training that is not the model.

    Attributes:
        steps: optimiser steps.
        batch_size: examples per step.
        peak_learning_rate: AdamW learning rate at the end of the warm-up.
        schedule: ``"warmup-linear"`` (linear warm-up over ``warmup_share`` of the steps, then
            linear decay to 1% of the peak) or ``"one-cycle"`` (a long warm-up, as in RETURNN
            Conformer setups: from 1/10 of the peak up to the peak over 45% of the steps, back to
            1/10 over the next 45%, then down to 1/1000 of the peak).
        warmup_share: share of the steps spent warming up (``"warmup-linear"`` only).
        weight_decay: AdamW decoupled weight decay.
        gradient_clip: maximum global gradient norm.
        concatenate: utterances joined (with a space label between them) into one example; 3
            makes sequences about three times longer.
        checkpoint_every: steps between checkpoints (and at the last step).
        monitor_every: steps between :class:`attnprobe.FlipMonitor` probes.
        monitor_projections: random directions per frame of the monitor's frame mapping.
        monitor_gradient_maps: let the monitor's gradient maps and cross-attention decide a flip
            the frame mapping misses (off in the sweep, whose first runs had no such option, so
            that every run's "first flip" means the same; ``evaluate.py``'s reversal reports do
            use them).
        probe_examples: dev examples in the monitor's probe batch.
        threads: torch intra-op threads; results are bit-identical only for the same count.
        corpus: which training corpus.
        model_size: ``"tiny"`` (:meth:`ConformerAEDConfig.tiny`, 6 blocks x 96, the CPU runs) or
            ``"paper"`` (:meth:`ConformerAEDConfig.paper`, 12 blocks x 512, the paper's model,
            for a GPU); each experiment's model overrides apply to either.
    """

    steps: int = RECIPE_STEPS
    batch_size: int = 16
    peak_learning_rate: float = 1e-3
    schedule: str = "warmup-linear"
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    gradient_clip: float = 5.0
    concatenate: int = 1
    checkpoint_every: int = 100
    monitor_every: int = 50
    monitor_projections: int = 1
    monitor_gradient_maps: bool = False
    probe_examples: int = 2
    threads: int = 1
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    model_size: str = "tiny"

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"model_size {self.model_size!r} is unknown; use one of "
                             f"{', '.join(MODEL_SIZES)}")
        if self.schedule not in ("warmup-linear", "one-cycle"):
            raise ValueError(f"schedule {self.schedule!r} is unknown; use 'warmup-linear' or 'one-cycle'")
        if self.steps < 1 or self.batch_size < 1 or self.concatenate < 1:
            raise ValueError("steps, batch_size and concatenate must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        values = dict(values)
        values["corpus"] = CorpusSpec(**values.get("corpus", {}))
        return cls(**values)


BASE_MODEL: dict[str, Any] = {"vocab_size": 30}
"""Overrides of :meth:`ConformerAEDConfig.tiny` shared by every run: the 30 character labels of
:data:`attnprobe.labels.CHARACTER_LABELS`. The time downsampling stays the paper's 6x
(60 ms encoder frames): the corpus speaks at 90-135 words per minute, slow enough that every
utterance has more encoder frames than a character CTC path needs."""


@dataclass(frozen=True)
class Experiment:
    """One run: a group (what is tested), a seed, model overrides and the recipe."""

    group: str
    seed: int
    model: dict[str, Any]
    recipe: Recipe
    question: str

    @property
    def name(self) -> str:
        return f"{self.group}-seed{self.seed}"

    def model_overrides(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`ConformerAEDConfig.tiny` (or ``.paper``, by the recipe's
        ``model_size``)."""
        return {**BASE_MODEL, **self.model}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "seed": self.seed,
                "model": {key: list(value) if isinstance(value, tuple) else value
                          for key, value in self.model_overrides().items()},
                "recipe": self.recipe.to_dict(), "question": self.question}


def _groups(recipe: Recipe) -> dict[str, tuple[dict[str, Any], Recipe, str]]:
    """Group name -> (model overrides, recipe, the question the group answers)."""
    steps = recipe.steps
    return {
        "baseline": ({}, recipe, "does the encoder reverse time, and for which seeds?"),
        "aux-ctc": ({"aux_ctc_blocks": (1, 3)}, recipe,
                    "does auxiliary CTC on blocks 2 and 4 (0-based 1, 3) prevent the flip?"),
        "self-attention-off": ({"self_attention_off_steps": round(SELF_ATTENTION_OFF_SHARE * steps)},
                               recipe, "does disabling self-attention at the start prevent it?"),
        "hard-centre": ({"hard_cross_attention_steps": round(HARD_CENTRE_SHARE * steps),
                         "cross_attention_blend_steps": round(HARD_CENTRE_BLEND_SHARE * steps)},
                        recipe, "does hard centre cross-attention at the start prevent it?"),
        "deep": ({"blocks": 12}, recipe, "does a deeper encoder (12 blocks) flip more often?"),
        "no-positions": ({"rel_pos_clip": 0}, recipe,
                         "does an encoder without positional encoding flip more often?"),
        "short-clip": ({"rel_pos_clip": 4}, recipe,
                       "does clipping relative positions at 4 frames make the flip likelier?"),
        "long": ({}, dataclasses.replace(recipe, concatenate=3),
                 "do 3x longer sequences make the flip likelier?"),
        "one-cycle": ({}, dataclasses.replace(recipe, schedule="one-cycle"),
                      "does a long learning-rate warm-up (one-cycle) make the flip likelier?"),
        "hard-start": ({"hard_cross_attention_steps": round(HARD_CENTRE_SHARE * steps),
                        "cross_attention_blend_steps": round(HARD_CENTRE_BLEND_SHARE * steps),
                        "hard_cross_attention_target": "start"}, recipe,
                       "does a decoder that reads only the first frame early on (the paper's "
                       "explanation of the cause) make the flip likelier?"),
        "absolute-positions": ({"abs_pos": True}, recipe,
                               "control: do absolute positions make the flip rarer?"),
        "induced-reversal": ({"hard_cross_attention_steps": round(INDUCED_SHARE * steps),
                              "cross_attention_blend_steps": round(INDUCED_BLEND_SHARE * steps),
                              "hard_cross_attention_target": "reversed"}, recipe,
                             "induced, not natural: does a reversal forced by backward "
                             "cross-attention survive once the attention is free?"),
        "induced-aux-ctc": ({"hard_cross_attention_steps": round(INDUCED_SHARE * steps),
                             "cross_attention_blend_steps": round(INDUCED_BLEND_SHARE * steps),
                             "hard_cross_attention_target": "reversed",
                             "aux_ctc_blocks": (1, 3)}, recipe,
                            "does auxiliary CTC on blocks 2 and 4 keep the encoder from "
                            "reversing under backward cross-attention, or undo it?"),
    }


GROUPS = tuple(_groups(Recipe()))
"""Group names in the order the sweep runs them (baseline first)."""


def all_experiments(recipe: Recipe | None = None, seeds: tuple[int, ...] = SEEDS) -> list[Experiment]:
    """Every run, seed-major within each group, baseline first."""
    groups = _groups(recipe or Recipe())
    return [Experiment(group, seed, model, group_recipe, question)
            for group, (model, group_recipe, question) in groups.items() for seed in seeds]


def names() -> list[str]:
    return [item.name for item in all_experiments()]


def experiment(name: str, recipe: Recipe | None = None) -> Experiment:
    """The experiment called ``name`` (``<group>-seed<seed>``), optionally with another base recipe.

    Seeds outside :data:`SEEDS` are allowed (``baseline-seed1337``).
    """
    group, separator, seed_text = name.rpartition("-seed")
    groups = _groups(recipe or Recipe())
    if not separator or group not in groups or not seed_text.isdigit():
        raise ValueError(f"unknown experiment {name!r}; names are <group>-seed<integer> with group "
                         f"one of {', '.join(groups)} (e.g. baseline-seed0)")
    model, group_recipe, question = groups[group]
    return Experiment(group, int(seed_text), model, group_recipe, question)
