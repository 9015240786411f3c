"""Rules of data.smk: a task's train, dev and test splits."""

from __future__ import annotations

from ..data import SPLITS, Task, make_splits
from ..io import write_parquet
from ..settings import Splitting
from .common import Job, log, stage


@stage
def split_data(job: Job) -> None:
    """Train/dev/test of one task: the hub's evaluation split is test, train is cut 80/20."""
    task, splitting = Task.from_params(job.params), Splitting.from_params(job.params)
    splits = make_splits(
        task,
        splitting.data_root,
        splitting.dev_fraction,
        splitting.split_seed,
        splitting.max_train,
        splitting.max_dev,
        splitting.max_test,
    )
    for name in SPLITS:
        log.info(
            "task %s: %s has %d examples, labels %s",
            task.name,
            name,
            len(splits[name]),
            splits[name]["label"].value_counts().sort_index().to_dict(),
        )
        write_parquet(splits[name], job.output[name])
