"""Job time per rule of a finished run, from Snakemake's benchmark files and the stages' logs: where the run's
time goes, and how its jobs held the cores.

    python benchmarks/job_minutes.py results/benchmarks [--out results/benchmarks/job_minutes.md]

Per rule, largest wall first: jobs, the sum of wall minutes (the benchmark's `s`), the sum of CPU minutes and
the largest job's peak memory (max_rss, MB). A job's CPU, threads and process start and end are the ones its
stage logs at its end (`stages.common.stage`; CPU is the process's user + system time, imports included). A
job whose log does not say them (a failed job, a run from before the stages logged them) falls back to the
benchmark's `cpu_time`, which Snakemake samples every 30 s after the first 15 s and so misses up to 30 s of a
job's CPU, and has no place on the run's timeline (`core_use`).
"""

from __future__ import annotations

import argparse
import re
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
    r"^\S+ \S+ \S+ INFO \w+ done in [\d.]+ s \(process: CPU (?P<cpu>[\d.]+) s with imports, (?P<threads>\d+) "
    r"threads, from (?P<start>[\d.]+) to (?P<end>[\d.]+) epoch s\)$",
    flags=re.M,
)


def stage_end(log_file: Path) -> dict | None:
    """What a stage's log says at its end: its process CPU, threads, start and end (epoch seconds)."""
    if not log_file.is_file():
        return None
    found = list(DONE_LINE.finditer(log_file.read_text(errors="replace")))
    if not found:
        return None
    last = found[-1]
    return {
        "cpu_s": float(last["cpu"]),
        "threads": int(last["threads"]),
        "start": float(last["start"]),
        "end": float(last["end"]),
    }


def job_records(root: Path) -> pd.DataFrame:
    """One row per benchmark file under `root`: rule, wall_s, cpu_s, threads, start, end (NaN where the log
    does not say), max_rss_mb. A rule's log mirrors its benchmark: logs/X.log beside benchmarks/X.tsv."""
    rows, rules = [], rule_names()
    for path in sorted(root.rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t").iloc[0]
        logged = stage_end(root.parent / "logs" / path.relative_to(root).with_suffix(".log")) or {}
        rows.append(
            {
                "rule": rule_of(path, root, rules),
                "wall_s": float(bench["s"]),
                "cpu_s": logged.get("cpu_s", float(bench["cpu_time"])),
                "threads": logged.get("threads", np.nan),
                "start": logged.get("start", np.nan),
                "end": logged.get("end", np.nan),
                "max_rss_mb": float(bench["max_rss"]),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "wall_s", "cpu_s", "threads", "start", "end", "max_rss_mb"])


def job_minutes(records: pd.DataFrame) -> pd.DataFrame:
    """Jobs, wall and CPU minutes summed per rule and over the run (`total`), and the largest peak memory, from
    `job_records`."""
    jobs = records.assign(wall_min=records["wall_s"] / 60, cpu_min=records["cpu_s"] / 60)
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
    """How the run held its cores from `start` to `end`, from the jobs whose logs place them (`job_records`).

    Between consecutive job starts and ends the held cores are the running jobs' threads; a stretch with fewer
    held than `cores` is under-used. Returns the run's core-minutes (cores x wall), the held ones (threads x
    the part of each job inside the run), the minutes with a core free, the jobs without a place on the
    timeline and those outside the run (files of an earlier run), and per rule the job-minutes it ran in
    stretches with a core free (what runs alone), largest first.
    """
    placed = jobs.dropna(subset=["start", "end", "threads"])
    inside = placed[(placed["end"] > start) & (placed["start"] < end)]
    inside = inside.assign(start=inside["start"].clip(lower=start), end=inside["end"].clip(upper=end))
    edges = np.unique(np.concatenate([[start, end], inside["start"], inside["end"]]))
    free_minutes, alone = 0.0, dict.fromkeys(inside["rule"].unique(), 0.0)
    for left, right in zip(edges[:-1], edges[1:]):
        middle = (left + right) / 2
        running = inside[(inside["start"] <= middle) & (inside["end"] > middle)]
        if running["threads"].sum() < cores:
            free_minutes += (right - left) / 60
            for rule in running["rule"]:
                alone[rule] += (right - left) / 60
    core_minutes = cores * (end - start) / 60
    held = float((inside["threads"] * (inside["end"] - inside["start"])).sum() / 60)
    summary = {
        "core_min": round(core_minutes, 2),
        "held_core_min": round(held, 2),
        "held_share": round(held / core_minutes, 3),
        "min_with_a_free_core": round(float(free_minutes), 2),
        "jobs_without_log": len(jobs) - len(placed),
        "jobs_outside_run": len(placed) - len(inside),
    }
    rules = pd.Series(alone, name="job_min_with_a_free_core", dtype=float).rename_axis("rule").reset_index()
    rules = rules[rules["job_min_with_a_free_core"] > 0].sort_values("job_min_with_a_free_core", ascending=False)
    return summary, rules.round(2).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a run's benchmarks folder, e.g. results/benchmarks")
    parser.add_argument("--out", type=Path, help="write the table here as Markdown as well")
    args = parser.parse_args()
    table = job_minutes(job_records(args.root))
    text = markdown_table(table, 4)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
