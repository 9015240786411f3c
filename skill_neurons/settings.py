"""One dataclass per config section that a rule passes on, each leaf under one name from config to library.

A rule takes a section as per-leaf params (`Tuning.params(config)`: Snakemake compares each leaf, so a
changed leaf reruns exactly the rules that read it) and its stage reads them back (`Tuning.from_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from .data import task_data_root

S = TypeVar("S", bound="Section")


def config_leaf(config: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted config path, e.g. 'pruning.retune.max_steps'."""
    value: Any = config
    for key in path.split("."):
        value = value[key]
    return value


@dataclass(frozen=True)
class Section:
    """Base of the sections: LEAVES maps each field to the config path it reads."""

    LEAVES: ClassVar[dict[str, str]] = {}

    @classmethod
    def params(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The section's leaves as a rule's params, keyed by field name."""
        return {name: config_leaf(config, path) for name, path in cls.LEAVES.items()}

    @classmethod
    def from_params(cls: type[S], params: Any) -> S:
        """The section from a rule's params (a mapping or Snakemake's params object)."""
        return cls(**{field.name: params[field.name] for field in fields(cls)})


def bundle(config: Mapping[str, Any], *sections: type[Section]) -> dict[str, Any]:
    """The params of several sections; a field name that two of them read from different leaves is refused."""
    params: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for section in sections:
        for name, path in section.LEAVES.items():
            if paths.setdefault(name, path) != path:
                raise ValueError(f"param {name!r} would mean both {paths[name]} and {path}")
        params |= section.params(config)
    return params


@dataclass(frozen=True)
class Prompting(Section):
    """How a model is read through its soft prompt."""

    n_tokens: int
    max_field_tokens: int | None
    precision: str
    eval_batch_size: int
    device: str
    LEAVES: ClassVar[dict[str, str]] = {
        "n_tokens": "prompt.n_tokens",
        "max_field_tokens": "data.max_field_tokens",
        "precision": "prompt.precision",
        "eval_batch_size": "prompt.eval_batch_size",
        "device": "device",
    }


@dataclass(frozen=True)
class Tuning(Section):
    """Prompt tuning from a fresh initial prompt (Adam on the prompt alone, early stopping on dev)."""

    init: str
    init_std: float
    lr: float
    weight_decay: float
    batch_size: int
    max_steps: int
    eval_every: int
    patience: int
    LEAVES: ClassVar[dict[str, str]] = {
        name: f"prompt.{name}"
        for name in ("init", "init_std", "lr", "weight_decay", "batch_size", "max_steps", "eval_every", "patience")
    }


@dataclass(frozen=True)
class Retuning(Section):
    """Prompt re-tuning on a pruned model, from the dense model's tuned prompt."""

    lr: float
    batch_size: int
    max_steps: int
    eval_every: int
    patience: int
    LEAVES: ClassVar[dict[str, str]] = {
        "lr": "prompt.lr",
        "batch_size": "prompt.batch_size",
        "max_steps": "pruning.retune.max_steps",
        "eval_every": "pruning.retune.eval_every",
        "patience": "pruning.retune.patience",
    }


@dataclass(frozen=True)
class Dump(Section):
    """How activations are stored."""

    dtype: str
    max_gb: float
    LEAVES: ClassVar[dict[str, str]] = {"dtype": "activations.dtype", "max_gb": "activations.max_gb"}


@dataclass(frozen=True)
class Splitting(Section):
    """Where a task's data is read, and how it is cut into train, dev and test."""

    data_root: str | None
    dev_fraction: float
    split_seed: int
    max_train: int | None
    max_dev: int | None
    max_test: int | None
    LEAVES: ClassVar[dict[str, str]] = {
        "dev_fraction": "data.dev_fraction",
        "split_seed": "data.split_seed",
        "max_train": "data.max_train",
        "max_dev": "data.max_dev",
        "max_test": "data.max_test",
    }

    @classmethod
    def params(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The data leaves, and `data_root` per task: the task's own, else the config's, so that moving one
        task's data reruns that task's split alone."""
        return {"data_root": lambda wildcards: task_data_root(config, wildcards.task), **super().params(config)}


@dataclass(frozen=True)
class Sweep(Section):
    """A perturbation sweep: which shares of an order are disturbed, how, and where."""

    rates: list[float]
    modes: list[str]
    sigma: float
    max_examples: int | None
    positions: str
    scope: str
    noise_shared_across_tokens: bool
    LEAVES: ClassVar[dict[str, str]] = {
        name: f"perturbation.{name}"
        for name in ("rates", "modes", "sigma", "max_examples", "positions", "scope", "noise_shared_across_tokens")
    }


@dataclass(frozen=True)
class KeepRatioSearch(Section):
    """SKELETON's binary search of the global keep ratio."""

    step: float
    margin: float
    LEAVES: ClassVar[dict[str, str]] = {"step": "pruning.skeleton.step", "margin": "pruning.skeleton.margin"}


@dataclass(frozen=True)
class SkillPruning(Section):
    """Wang et al.'s pruning: the top skill neurons of the top layers are kept."""

    keep_share: float
    layer_share: float
    LEAVES: ClassVar[dict[str, str]] = {
        "keep_share": "pruning.skill_neurons.keep_share",
        "layer_share": "pruning.skill_neurons.layer_share",
    }


@dataclass(frozen=True)
class SpeedBenchmark(Section):
    """Dense and pruned forwards side by side."""

    batch_sizes: list[int]
    lengths: list[int]
    reference_batch: int
    reference_length: int
    dtypes: str | list[str]
    warmup: int
    repeats: int
    peak_memory: bool
    device: str
    # The reference case as two leaves: a mapping's key order would count as a changed parameter.
    LEAVES: ClassVar[dict[str, str]] = {
        "batch_sizes": "pruning.speed.batch_sizes",
        "lengths": "pruning.speed.lengths",
        "reference_batch": "pruning.speed.reference.batch",
        "reference_length": "pruning.speed.reference.length",
        "dtypes": "pruning.speed.dtypes",
        "warmup": "pruning.speed.warmup",
        "repeats": "pruning.speed.repeats",
        "peak_memory": "pruning.speed.peak_memory",
        "device": "device",
    }


@dataclass(frozen=True)
class WordSelectivity(Section):
    """Wang et al. Table 2: the tokens each top skill neuron responds to."""

    top_neurons: int
    min_count: int
    LEAVES: ClassVar[dict[str, str]] = {
        "top_neurons": "word_selectivity.top_neurons",
        "min_count": "word_selectivity.min_count",
    }


@dataclass(frozen=True)
class PlotStyle(Section):
    """How figures look."""

    style: str
    dpi: int
    LEAVES: ClassVar[dict[str, str]] = {"style": "plots.style", "dpi": "plots.dpi"}


@dataclass(frozen=True)
class GenerationTuning(Section):
    """A generation task's prompt after the instruction: AdamW (Zhao et al.: lr 3e-3), early stop on the dev loss."""

    n_tokens: int
    init: str
    init_std: float
    lr: float
    weight_decay: float
    batch_size: int
    max_steps: int
    eval_every: int
    patience: int
    eval_batch_size: int
    LEAVES: ClassVar[dict[str, str]] = {
        name: f"aux_metrics.prompt.{name}"
        for name in (
            "n_tokens",
            "init",
            "init_std",
            "lr",
            "weight_decay",
            "batch_size",
            "max_steps",
            "eval_every",
            "patience",
            "eval_batch_size",
        )
    }


@dataclass(frozen=True)
class MethodTuning(Section):
    """LoRA or BitFit in place of the prompt: Adam on the method's parameters, early stop on dev accuracy."""

    lr: float
    batch_size: int
    max_steps: int
    eval_every: int
    patience: int
    LEAVES: ClassVar[dict[str, str]] = {
        name: f"tuning_methods.{name}" for name in ("lr", "batch_size", "max_steps", "eval_every", "patience")
    }
