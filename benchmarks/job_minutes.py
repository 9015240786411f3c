"""Job time per rule of a finished run, from Snakemake's benchmark files: where the run's time goes.

    python benchmarks/job_minutes.py results/benchmarks [--out results/benchmarks/job_minutes.md]

Per rule, largest wall first: jobs, the sum of wall minutes (the benchmark's `s`), the sum of CPU minutes and
the largest job's peak memory (max_rss, MB). A job's CPU is the one its stage logs at its end (its process's
user + system time, imports included, beside its threads: `stages.common.stage`); a job whose log does not
say it (a failed job, a run from before the stages logged it) falls back to the benchmark's `cpu_time`, which
Snakemake samples every 30 s after the first 15 s and so undercounts by up to 30 s a job. Wall minutes count
the cores a job held whether it used them or not: threads x wall, summed over jobs and divided by the cores,
bounds the run's wall time from below.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from skill_neurons.stages.common import markdown_table

RULES = Path(__file__).resolve().parents[1] / "workflow" / "rules"


def rule_names() -> set[str]:
    return {m for path in RULES.glob("*.smk") for m in re.findall(r"^rule (\w+):", path.read_text(), flags=re.M)}


def rule_of(path: Path, root: Path, rules: set[str]) -> str:
    """A benchmark file's rule: the folder or file name on its path that names a rule, else its first folder."""
    parts = [*path.relative_to(root).parent.parts, path.stem]
    return next((part for part in parts if part in rules), parts[0])


DONE_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) \S+ INFO \w+ done in [\d.]+ s "
    r"\(process CPU (?P<cpu>[\d.]+) s with imports, (?P<threads>\d+) threads\)$",
    flags=re.M,
)


def stage_end(log_file: Path) -> dict | None:
    """What a stage's log says at its end: when it ended (epoch seconds), its process CPU and threads."""
    if not log_file.is_file():
        return None
    found = DONE_LINE.findall(log_file.read_text(errors="replace"))
    if not found:
        return None
    when, ms, cpu, threads = found[-1]
    ended = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp() + int(ms) / 1000  # asctime: local time
    return {"end": ended, "cpu_s": float(cpu), "threads": int(threads)}


def job_records(root: Path) -> pd.DataFrame:
    """One row per benchmark file under `root`: rule, wall_s, cpu_s, threads, start, end (NaN where the log
    does not say), max_rss_mb. A rule's log mirrors its benchmark: logs/X.log beside benchmarks/X.tsv."""
    rows, rules = [], rule_names()
    for path in sorted(root.rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t").iloc[0]
        logged = stage_end(root.parent / "logs" / path.relative_to(root).with_suffix(".log"))
        wall = float(bench["s"])
        rows.append(
            {
                "rule": rule_of(path, root, rules),
                "wall_s": wall,
                "cpu_s": logged["cpu_s"] if logged else float(bench["cpu_time"]),
                "threads": logged["threads"] if logged else np.nan,
                "start": logged["end"] - wall if logged else np.nan,
                "end": logged["end"] if logged else np.nan,
                "max_rss_mb": float(bench["max_rss"]),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "wall_s", "cpu_s", "threads", "start", "end", "max_rss_mb"])


def job_minutes(root: Path) -> pd.DataFrame:
    """Jobs, wall and CPU minutes summed per rule and over the run (`total`), and the largest peak memory."""
    jobs = job_records(root).assign(wall_min=lambda t: t["wall_s"] / 60, cpu_min=lambda t: t["cpu_s"] / 60)
    table = (
        jobs.groupby("rule")
        .agg(
            jobs=("rule", "size"),
            wall_min=("wall_min", "sum"),
            cpu_min=("cpu_min", "sum"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("wall_min", ascending=False)
        .reset_index()
    )
    total = pd.DataFrame(
        [
            {
                "rule": "total",
                "jobs": len(jobs),
                "wall_min": jobs["wall_min"].sum(),
                "cpu_min": jobs["cpu_min"].sum(),
                "max_rss_mb": jobs["max_rss_mb"].max(),
            }
        ]
    )
    return pd.concat([table, total], ignore_index=True).round(2)


def core_use(jobs: pd.DataFrame, cores: int, start: float, end: float) -> tuple[dict, pd.DataFrame]:
    """How the run held its cores, from the jobs whose logs give their threads and end (`job_records`).

    Between consecutive job starts and ends the held cores are the running jobs' threads; a stretch with fewer
    held than `cores` is under-used. Returns the run's core-minutes (cores x wall), the held ones, the minutes
    with a core free, and per rule the minutes it ran in such stretches (what runs alone), largest first.
    """
    timed = jobs.dropna(subset=["start", "end", "threads"])
    edges = np.unique(np.clip(np.concatenate([[start, end], timed["start"], timed["end"]]), start, end))
    free_minutes, alone = 0.0, dict.fromkeys(timed["rule"].unique(), 0.0)
    for left, right in zip(edges[:-1], edges[1:]):
        middle = (left + right) / 2
        running = timed[(timed["start"] <= middle) & (timed["end"] > middle)]
        if running["threads"].sum() < cores:
            free_minutes += (right - left) / 60
            for rule in running["rule"]:
                alone[rule] += (right - left) / 60
    held = float((timed["threads"] * timed["wall_s"]).sum() / 60)
    summary = {
        "core_min": round(cores * (end - start) / 60, 2),
        "held_core_min": round(held, 2),
        "held_share": round(held / (cores * (end - start) / 60), 3),
        "min_with_a_free_core": round(free_minutes, 2),
        "jobs_without_log": len(jobs) - len(timed),
    }
    rules = pd.Series(alone, name="min_with_a_free_core").rename_axis("rule").reset_index()
    rules = rules[rules["min_with_a_free_core"] > 0].sort_values("min_with_a_free_core", ascending=False)
    return summary, rules.round(2).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a run's benchmarks folder, e.g. results/benchmarks")
    parser.add_argument("--out", type=Path, help="write the table here as Markdown as well")
    args = parser.parse_args()
    table = job_minutes(args.root)
    text = markdown_table(table, 4)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
