"""Tasks: read a dataset from the local mirror or the hub, restrict labels, split as Wang et al."""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad task definition or bad data, reported before any model is loaded."""


@dataclass(frozen=True)
class Subtask:
    """A binary view of a task: examples whose label is in `positive` (y=1) or `negative` (y=0)."""

    name: str
    positive: tuple[int, ...]
    negative: tuple[int, ...]


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    text_fields: tuple[str, ...]
    template: str
    labels: tuple[int, ...]
    label_words: tuple[str, ...]
    subset: str | None = None
    train_split: str = "train"
    test_split: str = "validation"
    fallback_train_split: str | None = None
    label_column: str = "label"
    subtasks: tuple[Subtask, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.label_words):
            raise DataError(f"task {self.name!r}: {len(self.labels)} labels but {len(self.label_words)} label_words")
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"task {self.name!r}: repeated label in labels {list(self.labels)}")
        used = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        if missing := used - set(self.text_fields):
            raise DataError(f"task {self.name!r}: template uses {sorted(missing)} not listed in text_fields")
        for sub in self.subtasks:
            if unknown := set(sub.positive + sub.negative) - set(self.labels):
                raise DataError(
                    f"task {self.name!r}: subtask {sub.name!r} names labels {sorted(unknown)}"
                    f" outside labels {list(self.labels)}"
                )
            if set(sub.positive) & set(sub.negative) or not sub.positive or not sub.negative:
                raise DataError(f"task {self.name!r}: subtask {sub.name!r} needs two disjoint, non-empty sides")

    @classmethod
    def params(cls, config: Mapping[str, Any]) -> dict[str, Callable]:
        """Every leaf of the rule's task as a param: a function of the wildcards, one leaf each."""

        def leaf(key: str) -> Callable:
            return lambda wildcards: config["tasks"][wildcards.task][key]

        def subtask_leaf(key: str) -> Callable:
            return lambda wildcards: [s[key] for s in config["tasks"][wildcards.task]["subtasks"]]

        params: dict[str, Callable] = {"name": lambda wildcards: wildcards.task}
        params |= {key: leaf(key) for key in TASK_LEAVES}
        params |= {f"subtask_{key}": subtask_leaf(key) for key in ("name", "positive", "negative")}
        return params

    @classmethod
    def from_params(cls, params: Any) -> Task:
        """The task of a rule whose params hold `Task.params`."""
        values = {key: params[key] for key in ("name", *TASK_LEAVES)}
        for key in ("text_fields", "labels", "label_words"):
            values[key] = tuple(values[key])
        subtasks = zip(params["subtask_name"], params["subtask_positive"], params["subtask_negative"])
        return cls(**values, subtasks=tuple(Subtask(name, tuple(pos), tuple(neg)) for name, pos, neg in subtasks))

    def binary_subtasks(self) -> tuple[Subtask, ...]:
        """The configured subtasks; a binary task is its own single subtask."""
        if self.subtasks:
            return self.subtasks
        if len(self.labels) == 2:
            return (Subtask(self.name, (self.labels[1],), (self.labels[0],)),)
        raise DataError(f"task {self.name!r} has {len(self.labels)} labels: define its binary subtasks")


# The per-task config leaves a Task is made of (the subtasks aside).
TASK_LEAVES = tuple(f.name for f in fields(Task) if f.name not in ("name", "subtasks"))


def subtask_targets(labels: np.ndarray, task: Task, subtask: Subtask) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a split (`labels` are class indices) that take part in `subtask`, and their 0/1 targets."""
    original = np.asarray(task.labels)[labels]
    positive = np.isin(original, subtask.positive)
    rows = np.flatnonzero(positive | np.isin(original, subtask.negative))
    return rows, positive[rows].astype(np.int8)


def mirror_file(data_root: str | Path, dataset: str, subset: str | None, split: str) -> Path:
    """Where the mirror keeps a split: `<data_root>/<hub name>[/<config>]/<split>.parquet`."""
    folder = Path(data_root) / dataset
    if subset:
        folder = folder / subset
    return folder / f"{split}.parquet"


def read_split(task: Task, split: str, data_root: str | Path | None) -> pd.DataFrame | None:
    """One split from the mirror if it has it, else from the hub; None if neither has it."""
    if data_root is not None:
        path = mirror_file(data_root, task.dataset, task.subset, split)
        if path.exists():
            log.info("task %s: reading %s", task.name, path)
            return pd.read_parquet(path)
        if path.parent.is_dir():  # the mirror holds this dataset: it is authoritative for its splits
            log.info("task %s: the mirror has no %s", task.name, path)
            return None
    return _read_hub_split(task, split)


def _read_hub_split(task: Task, split: str) -> pd.DataFrame | None:
    import datasets  # only for hub data: the library is heavy, and a mirror needs none of it

    try:
        table = datasets.load_dataset(task.dataset, task.subset, split=split)
    except ValueError as error:  # the hub has the dataset but not this split
        if "split" in str(error).lower():
            return None
        raise
    except Exception as error:
        raise DataError(
            f"task {task.name!r}: cannot read {task.dataset}/{task.subset or ''} split {split!r}"
            f" from the HuggingFace hub ({type(error).__name__}: {error}). Without network, point"
            " `data_root` at a mirror laid out as <data_root>/<dataset>[/<subset>]/<split>.parquet"
        ) from error
    return table.to_pandas()


def check_columns(frame: pd.DataFrame, task: Task, split: str) -> None:
    needed = [*task.text_fields, task.label_column]
    if missing := [c for c in needed if c not in frame.columns]:
        raise DataError(
            f"task {task.name!r}, split {split!r}: missing column(s) {missing}; the data has {list(frame.columns)}"
        )
    if frame.empty:
        raise DataError(f"task {task.name!r}, split {split!r}: no rows")
    for column in task.text_fields:
        if frame[column].isna().any():
            raise DataError(f"task {task.name!r}, split {split!r}: column {column!r} has missing text")


def restrict_labels(frame: pd.DataFrame, task: Task, split: str) -> pd.DataFrame:
    """Keep the rows whose label is one of `task.labels`; `label` becomes the class index."""
    present = set(frame[task.label_column].unique())
    if absent := set(task.labels) - present:
        raise DataError(
            f"task {task.name!r}, split {split!r}: label(s) {sorted(absent)} of `labels` never occur"
            f" in column {task.label_column!r} (values there: {sorted(present)})"
        )
    kept = frame[frame[task.label_column].isin(task.labels)]
    index = {label: i for i, label in enumerate(task.labels)}
    out = kept[list(task.text_fields)].copy()
    out["label"] = kept[task.label_column].map(index).astype(np.int64)
    return out.reset_index(drop=True)


def cap(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=seed).reset_index(drop=True)


def split_train_dev(frame: pd.DataFrame, dev_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n_dev = max(1, round(len(frame) * dev_fraction))
    return frame.iloc[order[n_dev:]].reset_index(drop=True), frame.iloc[order[:n_dev]].reset_index(drop=True)


def make_splits(
    task: Task,
    data_root: str | Path | None,
    dev_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_dev: int | None = None,
    max_test: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Train/dev/test as Wang et al.: the hub's evaluation split is test, train is cut 80/20.

    Where no train split exists (TweetEval in the mirror), `fallback_train_split` is cut instead;
    where none is configured either, the test split is cut three ways.
    """
    test = read_split(task, task.test_split, data_root)
    if test is None:
        raise DataError(f"task {task.name!r}: test split {task.test_split!r} not found")
    check_columns(test, task, task.test_split)
    test = restrict_labels(test, task, task.test_split)
    train_name = task.train_split
    pool = read_split(task, train_name, data_root)
    if pool is None and task.fallback_train_split:
        train_name = task.fallback_train_split
        log.warning("task %s: no %r split, dividing %r into train/dev", task.name, task.train_split, train_name)
        pool = read_split(task, train_name, data_root)
    if pool is None:
        log.warning("task %s: no train split, dividing the test split three ways", task.name)
        test, pool = split_train_dev(test, 1 - 1 / 3, seed)
    else:
        check_columns(pool, task, train_name)
        pool = restrict_labels(pool, task, train_name)
    train, dev = split_train_dev(pool, dev_fraction, seed)
    splits = {
        "train": cap(train, max_train, seed),
        "dev": cap(dev, max_dev, seed),
        "test": cap(test, max_test, seed),
    }
    for name, frame in splits.items():
        if frame.empty:
            raise DataError(f"task {task.name!r}: split {name!r} is empty after restriction and caps")
        frame.insert(0, "example", np.arange(len(frame), dtype=np.int64))
    return splits
