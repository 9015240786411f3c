"""Tasks: read a dataset from the local mirror or the hub, restrict labels, split as Wang et al."""

from __future__ import annotations

import logging
import numbers
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_string_dtype

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")

# A class as the data's label column has it: a hub id (SST-2's 0/1) or a string (SuperGLUE CB's "neutral").
Label = int | str


class DataError(ValueError):
    """Bad task definition or bad data, reported before any model is loaded."""


@dataclass(frozen=True)
class Subtask:
    """A binary view of a task: examples whose label is in `positive` (y=1) or `negative` (y=0)."""

    name: str
    positive: tuple[Label, ...]
    negative: tuple[Label, ...]


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    text_fields: tuple[str, ...]
    template: str
    labels: tuple[Label, ...]
    label_words: tuple[str, ...]
    subset: str | None = None
    revision: str | None = None  # the hub dataset's git revision: pinned, a new one reruns the split
    # None: "train" if the data has it, else `fallback_train_split`, else the test split cut three ways.
    train_split: str | None = None
    test_split: str = "validation"
    fallback_train_split: str | None = None
    label_column: str = "label"
    max_dropped_share: float = 0.0
    drop_unlisted_labels: bool = False
    label_word_tokens: str = "single"  # a label word of several tokens: refused, or scored by its first ("first")
    subtasks: tuple[Subtask, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.label_words):
            raise DataError(f"task {self.name!r}: {len(self.labels)} labels but {len(self.label_words)} label_words")
        if not 0 <= self.max_dropped_share <= 1:
            raise DataError(f"task {self.name!r}: max_dropped_share {self.max_dropped_share} is not a share in [0, 1]")
        if not (all_strings(self.labels) or all(_is_id(label) for label in self.labels)):
            raise DataError(
                f"task {self.name!r}: tasks.{self.name}.labels {list(self.labels)} must be all integer ids or all"
                " strings, as the data's label column holds them"
            )
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"task {self.name!r}: repeated label in labels {list(self.labels)}")
        used = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        if missing := used - set(self.text_fields):
            raise DataError(f"task {self.name!r}: template uses {sorted(missing)} not listed in text_fields")
        for sub in self.subtasks:
            # In order, not sorted: a subtask may name an id among string labels, and the two do not sort.
            if unknown := [label for label in dict.fromkeys(sub.positive + sub.negative) if label not in self.labels]:
                raise DataError(
                    f"task {self.name!r}: subtask {sub.name!r} names labels {unknown}"
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
        """The task of a rule whose params hold `Task.params`.

        A leaf with a default may be absent: params written by hand (tests) predate the newer keys.
        """
        present = set(params.keys())
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        values = {
            key: params[key] if key in present or key not in defaults else defaults[key]
            for key in ("name", *TASK_LEAVES)
        }
        for key in ("text_fields", "labels", "label_words"):
            values[key] = tuple(values[key])
        subtasks = zip(params["subtask_name"], params["subtask_positive"], params["subtask_negative"])
        return cls(**values, subtasks=tuple(Subtask(name, tuple(pos), tuple(neg)) for name, pos, neg in subtasks))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> Task:
        """The task `name` of a (validated) config, read through the same leaves as a rule's params."""
        wildcards = SimpleNamespace(task=name)
        return cls.from_params({key: leaf(wildcards) for key, leaf in cls.params(config).items()})

    def binary_subtasks(self) -> tuple[Subtask, ...]:
        """The configured subtasks; a binary task is its own single subtask."""
        if self.subtasks:
            return self.subtasks
        if len(self.labels) == 2:
            return (Subtask(self.name, (self.labels[1],), (self.labels[0],)),)
        raise DataError(f"task {self.name!r} has {len(self.labels)} labels: define its binary subtasks")


# The per-task config leaves a Task is made of (the subtasks aside).
TASK_LEAVES = tuple(f.name for f in fields(Task) if f.name not in ("name", "subtasks"))


def _is_id(label: Any) -> bool:
    """An integer class id; not a bool, which Python counts as an int but no config means as one."""
    return isinstance(label, numbers.Integral) and not isinstance(label, bool)


def all_strings(labels: Sequence[Any]) -> bool:
    return all(isinstance(label, str) for label in labels)


def subtask_targets(labels: np.ndarray, task: Task, subtask: Subtask) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a split (`labels` are class indices) that take part in `subtask`, and their 0/1 targets."""
    original = np.asarray(task.labels)[labels]
    positive = np.isin(original, subtask.positive)
    rows = np.flatnonzero(positive | np.isin(original, subtask.negative))
    return rows, positive[rows].astype(np.int8)


def task_data_root(config: Mapping[str, Any], name: str) -> str | None:
    """Where task `name` reads its data: its own `data_root`, else the config's (null there: the hub)."""
    own = config["tasks"][name].get("data_root")
    return own if own is not None else config.get("data_root")


def mirror_folder(data_root: str | Path, dataset: str, subset: str | None) -> Path:
    """Where the mirror keeps a dataset: `<data_root>/<hub name>[/<config>]`."""
    folder = Path(data_root) / dataset
    return folder / subset if subset else folder


def mirror_file(data_root: str | Path, dataset: str, subset: str | None, split: str) -> Path:
    """Where the mirror keeps a split: `<data_root>/<hub name>[/<config>]/<split>.parquet`."""
    return mirror_folder(data_root, dataset, subset) / f"{split}.parquet"


def mirror_splits(folder: Path) -> list[str]:
    """The splits a mirror folder holds (its Parquet files)."""
    return sorted(path.stem for path in folder.glob("*.parquet"))


def train_candidates(task: Task) -> tuple[tuple[str, str | None], ...]:
    """The splits that may be cut into train/dev, in order, each with the task key that named it.

    The key is None for the implicit "train" of an unset `train_split`: only that one may be missing
    (then the fallback, else the test split, takes its place). A split the config names must exist.
    """
    if task.train_split is not None:
        return ((task.train_split, "train_split"),)
    candidates: tuple[tuple[str, str | None], ...] = (("train", None),)
    if task.fallback_train_split:
        candidates += ((task.fallback_train_split, "fallback_train_split"),)
    return candidates


def mirror_sources(task: Task, data_root: str | Path | None) -> list[Path]:
    """The mirror files `make_splits` reads for `task`, those that exist: the inputs of its split rule.

    Empty for hub data (no mirror folder). A configured split that is missing is left out: the
    stage then names it in its error.
    """
    if data_root is None:
        return []
    folder = mirror_folder(data_root, task.dataset, task.subset)
    if not folder.is_dir():
        return []
    files = [path] if (path := folder / f"{task.test_split}.parquet").exists() else []
    for split, key in train_candidates(task):
        if (path := folder / f"{split}.parquet").exists():
            return [*files, path]
        if key is not None:
            break
    return files


def read_split(task: Task, split: str, data_root: str | Path | None) -> pd.DataFrame | None:
    """One split from the mirror if it has the dataset, else from the hub; None if the source lacks the split."""
    if data_root is not None:
        path = mirror_file(data_root, task.dataset, task.subset, split)
        if path.exists():
            log.info("task %s: reading %s", task.name, path)
            return pd.read_parquet(path)
        if path.parent.is_dir():  # the mirror holds this dataset: it is authoritative for its splits
            log.info("task %s: the mirror has no %s", task.name, path)
            return None
        log.info("task %s: no mirror folder %s, reading the HuggingFace hub", task.name, path.parent)
    return _read_hub_split(task, split, data_root)


def _read_hub_split(task: Task, split: str, data_root: str | Path | None) -> pd.DataFrame | None:
    import datasets  # only for hub data: the library is heavy, and a mirror needs none of it

    try:
        table = datasets.load_dataset(task.dataset, task.subset, split=split, revision=task.revision)
    except ValueError as error:  # the hub has the dataset but not this split
        if "split" in str(error).lower():
            return None
        raise
    except Exception as error:
        if data_root is None:
            where = (
                "Without network, point `data_root` at a mirror laid out as"
                " <data_root>/<dataset>[/<subset>]/<split>.parquet"
            )
        else:
            folder = mirror_folder(data_root, task.dataset, task.subset)
            where = (
                f"The mirror (data_root {str(data_root)!r}) has no folder {folder}: check"
                f" tasks.{task.name}.dataset and tasks.{task.name}.subset against the mirror"
            )
        raise DataError(
            f"task {task.name!r}: cannot read {task.dataset}/{task.subset or ''} split {split!r}"
            f" from the HuggingFace hub ({type(error).__name__}: {error}). {where}"
        ) from error
    return table.to_pandas()


def missing_split(task: Task, key: str, split: str, data_root: str | Path | None) -> DataError:
    """The error for a split that the task's `key` names and its source does not have."""
    if data_root is not None and (folder := mirror_folder(data_root, task.dataset, task.subset)).is_dir():
        where, has = f"the mirror folder {folder}", f"it has {mirror_splits(folder)}"
    else:
        where, has = f"the HuggingFace hub's {task.dataset}/{task.subset or ''}", _hub_splits(task)
    return DataError(f"task {task.name!r}: tasks.{task.name}.{key} is {split!r}, which {where} does not have ({has})")


def _hub_splits(task: Task) -> str:
    import datasets

    try:
        return f"it has {datasets.get_dataset_split_names(task.dataset, task.subset, revision=task.revision)}"
    except Exception as error:  # offline, or the hub refuses: the list is a hint, the error stands without it
        return f"its splits could not be listed: {type(error).__name__}"


def check_columns(frame: pd.DataFrame, task: Task, split: str) -> None:
    """The task's columns are there, the split has rows, and every text field is a column of strings."""
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
        # Bytes or numbers would be formatted into the template as "b'...'" or "3": text, but not the data's.
        if not is_string_dtype(frame[column]):
            raise DataError(
                f"task {task.name!r}, split {split!r}: text column {column!r} has dtype {frame[column].dtype}"
                f" ({infer_dtype(frame[column])} values), not strings"
            )


def check_texts(frame: pd.DataFrame, task: Task, split: str) -> None:
    """No empty or whitespace-only text: such an example is the template alone, with its label."""
    for column in task.text_fields:
        blank = (frame[column].str.strip() == "").to_numpy()
        if blank.any():
            first = frame.index[blank][0]
            ids = [c for c in ("idx", "id") if c in frame.columns]
            named = f", {ids[0]} {frame.at[first, ids[0]]}" if ids else ""
            raise DataError(
                f"task {task.name!r}, split {split!r}: {blank.sum()} empty or whitespace-only text(s) in column"
                f" {column!r} (first at row {first}{named})"
            )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, for messages."""
    return value.item() if hasattr(value, "item") else value


def check_label_type(frame: pd.DataFrame, task: Task, split: str) -> None:
    """The label column holds what `labels` lists: only strings for string labels, no string for ids.

    Either way round, no row would match and every row would count as an unlisted label: the error
    would blame the share dropped, not the type. Missing labels are left to the dropped-row count.
    """
    strings = all_strings(task.labels)
    values = frame[task.label_column].dropna()
    is_string = values.map(lambda value: isinstance(value, str)).astype(bool)
    if not (wrong := values[~is_string] if strings else values[is_string]).empty:
        expected, found = ("strings", "not a string") if strings else ("integer ids", "a string")
        raise DataError(
            f"task {task.name!r}, split {split!r}: column {task.label_column!r} holds {_plain(wrong.iloc[0])!r},"
            f" {found} ({len(wrong)} of {len(frame)} rows), but tasks.{task.name}.labels lists {expected}"
            f" {list(task.labels)}: list the labels as the column holds them"
        )


def keep_listed_labels(frame: pd.DataFrame, task: Task, split: str) -> pd.DataFrame:
    """The rows whose label is one of `task.labels` (row index kept); the dropped ones counted in the log.

    More dropped than `max_dropped_share` of the split is an error unless `drop_unlisted_labels`:
    a binary view of a multi-class dataset says so, a stray label value (-1 of an unlabelled test set) does not.
    """
    values = frame[task.label_column]
    present = {_plain(v) for v in values.dropna().unique()}
    if absent := set(task.labels) - present:
        raise DataError(
            f"task {task.name!r}, split {split!r}: label(s) {sorted(absent)} of `labels` never occur"
            f" in column {task.label_column!r} (values there: {sorted(present)})"
        )
    listed = values.isin(task.labels).to_numpy()
    n_dropped = int((~listed).sum())
    if n_dropped:
        counts = {_plain(k): int(n) for k, n in values[~listed].value_counts(dropna=False).sort_index().items()}
        share = n_dropped / len(frame)
        log.info(
            "task %s, split %s: %d of %d rows (%.1f%%) dropped, their %s not in labels %s; per value: %s",
            task.name,
            split,
            n_dropped,
            len(frame),
            100 * share,
            task.label_column,
            list(task.labels),
            counts,
        )
        if share > task.max_dropped_share and not task.drop_unlisted_labels:
            raise DataError(
                f"task {task.name!r}, split {split!r}: {n_dropped} of {len(frame)} rows ({share:.1%}) have a"
                f" {task.label_column!r} outside labels {list(task.labels)} (per value: {counts}), more than"
                f" tasks.{task.name}.max_dropped_share = {task.max_dropped_share}; set"
                f" tasks.{task.name}.drop_unlisted_labels: true if the task is meant to keep only some labels"
            )
    return frame[listed]


def class_indices(frame: pd.DataFrame, task: Task) -> pd.DataFrame:
    """The text fields, and `label` as the index of the row's label in `task.labels`."""
    index = {label: i for i, label in enumerate(task.labels)}
    out = frame[list(task.text_fields)].copy()
    out["label"] = frame[task.label_column].map(index).astype(np.int64)
    return out.reset_index(drop=True)


def prepare_split(frame: pd.DataFrame, task: Task, split: str) -> pd.DataFrame:
    """A source split checked and restricted to the task's labels, with `label` as class index."""
    check_columns(frame, task, split)
    check_label_type(frame, task, split)
    kept = keep_listed_labels(frame, task, split)
    check_texts(kept, task, split)
    return class_indices(kept, task)


def read_train_pool(task: Task, data_root: str | Path | None) -> tuple[str | None, pd.DataFrame | None]:
    """The split cut into train/dev and its name; (None, None) where an unset train_split finds none."""
    for split, key in train_candidates(task):
        frame = read_split(task, split, data_root)
        if frame is not None:
            if key == "fallback_train_split":
                log.warning(
                    "task %s: train_split unset and the data has no 'train' split: cutting"
                    " fallback_train_split %r into train/dev",
                    task.name,
                    split,
                )
            return split, frame
        if key is not None:
            raise missing_split(task, key, split, data_root)
    return None, None


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

    An unset `train_split` reads "train"; where the data has none (TweetEval in the mirror),
    `fallback_train_split` is cut instead; where none is configured either, the test split is cut
    three ways, and the log says so. A split the task names explicitly must exist.
    """
    test = read_split(task, task.test_split, data_root)
    if test is None:
        raise missing_split(task, "test_split", task.test_split, data_root)
    test = prepare_split(test, task, task.test_split)
    train_name, pool = read_train_pool(task, data_root)
    if pool is None:
        log.warning(
            "task %s: train_split unset, the data has no 'train' split and no fallback_train_split is set:"
            " cutting the test split %r three ways (a third stays test, the rest becomes train and dev)",
            task.name,
            task.test_split,
        )
        test, pool = split_train_dev(test, 1 - 1 / 3, seed)
    else:
        pool = prepare_split(pool, task, train_name)
        log.info(
            "task %s: test is split %r, train and dev are cut from split %r", task.name, task.test_split, train_name
        )
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
