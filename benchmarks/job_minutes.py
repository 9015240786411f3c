"""Job time per rule of a finished run, from Snakemake's benchmark files: where the run's time goes.

    python benchmarks/job_minutes.py results/benchmarks [--out results/benchmarks/job_minutes.md]

Per rule: jobs, the sum of wall minutes, the sum of CPU minutes (`cpu_time`) and the largest job's peak
memory (max_rss, MB). CPU minutes are the work; wall minutes also count waiting for a core when jobs share
the machine. The total CPU minutes over the machine's cores bound the run's wall time from below.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from skill_neurons.stages.common import markdown_table

RULES = Path(__file__).resolve().parents[1] / "workflow" / "rules"


def rule_names() -> set[str]:
    return {m for path in RULES.glob("*.smk") for m in re.findall(r"^rule (\w+):", path.read_text(), flags=re.M)}


def rule_of(path: Path, root: Path, rules: set[str]) -> str:
    """A benchmark file's rule: the folder or file name on its path that names a rule, else its first folder."""
    parts = [*path.relative_to(root).parent.parts, path.stem]
    return next((part for part in parts if part in rules), parts[0])


def job_minutes(root: Path) -> pd.DataFrame:
    rows, rules = [], rule_names()
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "rule": rule_of(path, root, rules),
                "wall_min": table["s"].iloc[0] / 60,
                "cpu_min": table["cpu_time"].iloc[0] / 60,
                "max_rss_mb": table["max_rss"].iloc[0],
            }
        )
    jobs = pd.DataFrame(rows)
    table = (
        jobs.groupby("rule")
        .agg(
            jobs=("rule", "size"),
            wall_min=("wall_min", "sum"),
            cpu_min=("cpu_min", "sum"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("cpu_min", ascending=False)
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
