"""The CPU Snakemake's own process spends while jobs run, at its default job-rate setting and at our profile's.

    python benchmarks/scheduler_overhead.py OUT_DIR [--jobs 80] [--seconds 3] [--inputs 30]

Snakemake's default `--max-jobs-per-timespan 100/1s` re-runs its scheduler every second while jobs wait,
and every pass sizes the inputs of every ready job; profiles/default sets the same rate over 5 s. A toy
workflow of JOBS jobs, each sleeping SECONDS with INPUTS inputs and a benchmark file (as our rules have),
runs once per setting with 2 cores; the scheduler's user + system CPU (of its own process: the jobs are its
children) is read with getrusage. Writes OUT_DIR/scheduler_overhead.{csv,md}; both runs side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outputs import write_table  # noqa: E402  (this folder is the script's own on sys.path)

from skill_neurons.stages.common import markdown_table  # noqa: E402

PROFILE_RATE = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())["max-jobs-per-timespan"]
SETTINGS = {"Snakemake's default (100/1s)": "100/1s", f"profiles/default ({PROFILE_RATE})": PROFILE_RATE}

TOY = """
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule make:
    input: expand("in/{{j}}.txt", j=range({inputs}))
    output: "out/{{i}}.txt"
    benchmark: "bench/{{i}}.tsv"
    shell: "sleep {seconds}; touch {{output}}"
"""


def scheduler_cpu(folder: Path, rate: str) -> tuple[float, float]:
    """(wall s, the Snakemake process's CPU s) of one run of the toy workflow in `folder`."""
    script = (
        "import resource, subprocess, sys; "
        f"subprocess.run([sys.executable, '-m', 'snakemake', '--cores', '2', '--quiet', 'all', "
        f"'--max-jobs-per-timespan', {rate!r}], cwd={str(folder)!r}, check=True, capture_output=True); "
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(usage.ru_utime + usage.ru_stime)"
    )
    started = time.perf_counter()
    # A wrapper process: RUSAGE_CHILDREN of it is Snakemake's CPU plus its jobs'; the jobs only sleep.
    cpu = float(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--jobs", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--inputs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for name, rate in SETTINGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "Snakefile").write_text(TOY.format(jobs=args.jobs, inputs=args.inputs, seconds=args.seconds))
            (folder / "in").mkdir()
            for index in range(args.inputs):
                (folder / "in" / f"{index}.txt").touch()
            wall, cpu = scheduler_cpu(folder, rate)
        sleeping = args.jobs * args.seconds / 2
        rows.append(
            {
                "setting": name,
                "jobs": args.jobs,
                "wall_s": round(wall, 1),
                "jobs_asleep_s": sleeping,
                "snakemake_cpu_s": round(cpu, 2),
                "cpu_share_of_a_core": round(cpu / wall, 3),
            }
        )
    table = pd.DataFrame(rows)
    write_table(args.out_dir, "scheduler_overhead", table, markdown_table(table) + "\n")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
