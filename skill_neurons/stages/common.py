"""What every stage shares: the job it is handed, its log, the task's splits, and results tables."""

from __future__ import annotations

import functools
import logging
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import psutil

from ..data import SPLITS
from ..io import atomic_path, read_parquet, write_parquet

log = logging.getLogger("skill_neurons")


class Job(Protocol):
    """What a stage reads of the Snakemake job that runs it (the `snakemake` object of a script)."""

    input: Any
    output: Any
    params: Any
    log: Any
    threads: int
    wildcards: Any


def setup_logging(path: str | Path | None) -> None:
    """Log to the rule's log file (and stderr), so a failed job explains itself."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


def stage(function: Callable[[Job], None]) -> Callable[[Job], None]:
    """A stage: its job logs to the rule's log file, and says how long it took."""

    @functools.wraps(function)
    def run(job: Job) -> None:
        setup_logging(job.log[0] if len(job.log) else None)
        started = time.perf_counter()
        try:
            function(job)
        except BaseException:
            # Into the rule's log file too: Snakemake shows that file, and on a cluster stderr is elsewhere.
            log.exception("%s failed after %.1f s", function.__name__, time.perf_counter() - started)
            raise
        log.info(
            "%s done in %.1f s (process: CPU %.1f s with imports, %d threads, from %.3f to %.3f epoch s)",
            function.__name__,
            time.perf_counter() - started,
            process_cpu_seconds(),
            job.threads,
            psutil.Process().create_time(),
            time.time(),
        )

    return run


def process_cpu_seconds() -> float:
    """User and system CPU of this process and the children it waited for, imports included.

    The job's own count, which `benchmarks/job_minutes.py` reads: Snakemake's benchmark samples `cpu_time`
    every 30 s after the first 15 s, so it misses up to 30 s of each job's CPU (a 41.7-s dump read 15.5 s).
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def split_inputs(job: Job) -> dict[str, str]:
    """The train, dev and test files among a job's inputs."""
    return {name: job.input[name] for name in SPLITS}


def tasks_at_chance(chance_table: str) -> list[str]:
    """The tasks whose tuned prompt is not above a random guess, read from chance_table's Parquet."""
    chance = read_parquet(chance_table)
    return chance.loc[~chance["above_chance"], "task"].tolist()


def read_splits(splits: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """The train, dev and test frames of a task from their Parquet files."""
    return {name: read_parquet(splits[name]) for name in SPLITS}


def write_table(table: pd.DataFrame, outputs: Mapping[str, str], significant: int | None = None) -> None:
    """A results table as Parquet, Markdown and HTML (outputs keyed parquet, markdown, html); `significant`:
    the Markdown's floats with that many significant digits."""
    write_parquet(table, outputs["parquet"])
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(markdown_table(table, significant))
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(table.to_html(index=False, border=0))


def markdown_table(table: pd.DataFrame, significant: int | None = None) -> str:
    """A Markdown table; `significant`: floats written with that many significant digits."""

    def cell(value: object) -> str:
        if significant is not None and isinstance(value, float):
            return f"{value:.{significant}g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def percent(summary: Mapping[str, float], key: str) -> str:
    """'mean ± sd' in percent of the summary's `<key>_mean` and `<key>_std`."""
    return f"{100 * summary[key + '_mean']:.1f} ± {100 * summary[key + '_std']:.1f}"


def chance_columns(summary: Mapping[str, float]) -> dict[str, str]:
    """A rank summary's test accuracies without a model, in percent: a random guess, and always the commonest class.

    A prompt stuck on one class scores the second, which can be far above the first.
    """
    return {
        "random guess (%)": f"{100 * summary['random_guess']:.1f}",
        "majority class (%)": f"{100 * summary['test_majority_class']:.1f}",
    }


def chunks(files: list[str], groups: int) -> list[list[str]]:
    """`files` (an expand over groups x items, groups outermost) cut into one list per group."""
    size = len(files) // groups if groups else 0
    return [files[i * size : (i + 1) * size] for i in range(groups)]
