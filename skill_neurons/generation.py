"""Generation tasks of Zhao, Wang et al. (2025): instruction -> completion data, read, split and rendered.

A task renders each example's instruction and completion from its columns (`str.format`); the
completion's `{answer}` is the gold answer: the task's label word for the example's label, or the gold
choice of a multiple-choice column (BIG-bench: `multiple_choice_targets` with `multiple_choice_scores`).
Scoring each choice as the completion gives the multiple-choice accuracy (`completions.choice_accuracy`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .aux_metrics import MODEL_METRICS, MetricSpec, metric_values
from .data import DataError, mirror_file

log = logging.getLogger(__name__)

GENERATION_SPLITS = ("train", "dev", "validation")
RULE_ONLY_KEYS = (
    "causal_metric",
    "causal_groups",
    "causal_accuracy",
    "claims",
)  # the causal test and tables read these
# What each rule reads of a task's entry (its params): editing a metric reruns the ranking, not the tuning.
DATA_KEYS = ("dataset", "subset", "train_split", "validation_split", "where", "label_column", "label_words")
DATA_KEYS += ("choices_column", "scores_column", "group_by")
RENDER_KEYS = ("instruction", "completion", "label_column", "label_words", "choices_column", "scores_column")
RENDER_KEYS += ("shuffle_choices",)
PROBE_KEYS = RENDER_KEYS + ("metrics", "flag", "group_by")


def leaves(entry: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The part of a task's config entry under `keys` (those present)."""
    return {key: entry[key] for key in keys if key in entry}


@dataclass(frozen=True)
class GenerationTask:
    """One instruction -> completion task: where its data is, how an example reads, what it is probed with."""

    name: str
    dataset: str = ""
    instruction: str = ""
    completion: str = "{answer}"
    metrics: tuple[Any, ...] = ()  # MetricSpec configs (aux_metrics.MetricSpec.parse)
    subset: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    label_column: str = "label"
    label_words: tuple[str, ...] = ()  # the answer for label id i; also the choices scored for accuracy
    choices_column: str | None = None
    scores_column: str | None = None
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    shuffle_choices: bool = True  # show a choices column's options in a per-example random order
    group_by: str | None = None  # the KDE's grouping column
    flag: Any = None  # a 0/1 metric config counted among a top neuron's extreme examples

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> GenerationTask:
        """The task of config key aux_metrics.tasks.<name>, checked."""
        task = cls.from_entry(name, config["aux_metrics"]["tasks"][name])
        task.check()
        return task

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> GenerationTask:
        """From a task's config entry, or the part of it that a rule passes on (`leaves`)."""
        values = {k: v for k, v in entry.items() if k not in RULE_ONLY_KEYS}
        values["metrics"] = tuple(values.get("metrics", ()))
        values["label_words"] = tuple(values.get("label_words", ()))
        values["where"] = {k: tuple(v) for k, v in values.get("where", {}).items()}
        return cls(name=name, **values)

    def check(self) -> None:
        """The task's keys agree with each other and every metric parses; DataError naming the key otherwise."""
        key = f"aux_metrics.tasks.{self.name}"
        for index, metric in enumerate(self.metrics):
            try:
                MetricSpec.parse(metric)
            except ValueError as error:
                raise DataError(f"{key}.metrics[{index}]: {error}") from None
        try:
            _ = self.flag_spec  # parsed here, so that a bad flag is named before any job
        except ValueError as error:
            raise DataError(f"{key}.flag: {error}") from None
        if "{answer}" not in self.completion:
            raise DataError(f"{key}.completion must contain {{answer}} (the gold answer or a choice)")
        if self.label_words and self.choices_column:
            raise DataError(f"{key}: give label_words or choices_column, not both")
        if bool(self.choices_column) != bool(self.scores_column):
            raise DataError(f"{key}: choices_column and scores_column go together")

    @property
    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec.parse(m) for m in self.metrics]

    @property
    def flag_spec(self) -> MetricSpec | None:
        return None if self.flag is None else MetricSpec.parse(self.flag)

    @property
    def has_choices(self) -> bool:
        return bool(self.label_words or self.choices_column)

    def choice_orders(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Per example, the order its column's choices are shown and scored in: a permutation seeded by the
        example id with `shuffle_choices` (BIG-bench arithmetic lists the gold answer last, every time), else
        the column's order."""
        lengths = [len(row) for row in frame[self.choices_column]]
        if not self.shuffle_choices:
            return [np.arange(n) for n in lengths]
        return [np.random.default_rng(int(e)).permutation(n) for e, n in zip(frame["example"], lengths)]

    def choices(self, frame: pd.DataFrame) -> list[list[str]]:
        """Each example's choices as answer strings, in the order they are shown."""
        if self.label_words:
            return [list(self.label_words)] * len(frame)
        if self.choices_column:
            rows = zip(frame[self.choices_column], self.choice_orders(frame))
            return [[str(row[i]) for i in order] for row, order in rows]
        raise ValueError(f"task {self.name} has no choices")

    def gold_scores(self, frame: pd.DataFrame) -> list[list[int]]:
        """Per example, 1 for a correct choice and 0 otherwise, in the order of `choices`."""
        if self.label_words:
            return [[int(i == label) for i in range(len(self.label_words))] for label in frame[self.label_column]]
        rows = zip(frame[self.scores_column], self.choice_orders(frame))
        return [[int(row[i]) for i in order] for row, order in rows]

    def answers(self, frame: pd.DataFrame) -> list[str]:
        """The gold answer of each example: its label word, or its first choice scored 1."""
        if self.label_words:
            return [self.label_words[int(label)] for label in frame[self.label_column]]
        if self.choices_column:
            return [choices[scores.index(1)] for choices, scores in zip(self.choices(frame), self.gold_scores(frame))]
        raise ValueError(f"task {self.name} has neither label_words nor a choices column to take answers from")

    def instructions(self, frame: pd.DataFrame) -> list[str]:
        extras = [{"choices": ", ".join(c)} for c in self.choices(frame)] if self.has_choices else [{}] * len(frame)
        return [self.instruction.format_map({**row, **extra}) for row, extra in zip(frame.to_dict("records"), extras)]

    def completions(self, frame: pd.DataFrame, answers: Sequence[str] | None = None) -> list[str]:
        answers = self.answers(frame) if answers is None else answers
        return [self.completion.format_map({**row, "answer": a}) for row, a in zip(frame.to_dict("records"), answers)]

    def choice_completions(self, frame: pd.DataFrame) -> list[list[str]]:
        """Each example's choices rendered as completions, to be scored against each other."""
        rows = frame.to_dict("records")
        return [
            [self.completion.format_map({**row, "answer": c}) for c in cs] for row, cs in zip(rows, self.choices(frame))
        ]


def read_generation_split(task: GenerationTask, split: str, data_root: str | Path) -> pd.DataFrame:
    """One split of the mirror, filtered by `where`, with `example` = the row's index in the file."""
    path = mirror_file(data_root, task.dataset, task.subset, split)
    if not path.exists():
        raise DataError(f"aux_metrics.tasks.{task.name}: no data file {path}")
    frame = pd.read_parquet(path)
    frame.insert(0, "example", np.arange(len(frame), dtype=np.int64))
    for column, values in task.where.items():
        if column not in frame:
            raise DataError(f"aux_metrics.tasks.{task.name}.where: {path} has no column {column!r}")
        frame = frame[frame[column].isin(values)]
        if frame.empty:
            raise DataError(f"aux_metrics.tasks.{task.name}.where: no row of {path} has {column} in {list(values)}")
    needed = {task.label_column} if task.label_words else set()
    needed |= {c for c in (task.choices_column, task.scores_column, task.group_by) if c}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise DataError(f"aux_metrics.tasks.{task.name}: {path} has no column(s) {missing}")
    return frame.reset_index(drop=True)


def in_example_order(frame: pd.DataFrame, examples: Sequence[int]) -> pd.DataFrame:
    """The rows of `frame` for the example ids `examples`, in that order (a dump's order)."""
    return frame.set_index("example").loc[list(examples)].reset_index()


def check_data_metrics(task: GenerationTask, data_root: str | Path) -> None:
    """Each metric of the data (a column, or a function of the example) on the task's whole validation file: one
    that is constant there is constant on any sample of it (a typo in `equals`, say), so the run stops before any
    tuning; DataError naming it. (Constant on the sampled split only, or the model's own metrics: the ranking says.)"""
    frame = read_generation_split(task, task.validation_split, data_root)
    for index, spec in enumerate(task.metric_specs):
        if spec.kind in MODEL_METRICS:
            continue
        try:
            metric_values(spec, frame, None, f"whole {task.validation_split}")
        except ValueError as error:
            raise DataError(f"aux_metrics.tasks.{task.name}.metrics[{index}]: {error}") from None


def split_generation(
    task: GenerationTask, data_root: str | Path, caps: Mapping[str, int], seed: int
) -> dict[str, pd.DataFrame]:
    """Train, dev and validation, each a random sample of at most `caps[split]` examples.

    Validation comes from `validation_split`; dev and train from `train_split` (disjoint). Where the two
    are the same file (BIG-bench's one split), validation is drawn first and the rest is split.
    """
    rng = np.random.default_rng(seed)
    validation_pool = read_generation_split(task, task.validation_split, data_root)
    order = rng.permutation(len(validation_pool))
    validation = validation_pool.iloc[np.sort(order[: caps["validation"]])]
    if task.train_split == task.validation_split:
        pool = validation_pool.iloc[order[caps["validation"] :]]
    else:
        pool = read_generation_split(task, task.train_split, data_root)
        pool = pool.iloc[rng.permutation(len(pool))]
    dev, train = pool.iloc[: caps["dev"]], pool.iloc[caps["dev"] : caps["dev"] + caps["train"]]
    splits = {"train": train, "dev": dev, "validation": validation}
    for split, frame in splits.items():
        if len(frame) < 2:
            raise DataError(f"aux_metrics.tasks.{task.name}: {len(frame)} {split} examples after filtering and caps")
    return {split: frame.sort_values("example").reset_index(drop=True) for split, frame in splits.items()}
