"""How long Snakemake takes to build the DAG of a config (a dry run), median of repeated runs.

    python benchmarks/dag_build.py [--configfile config/paper.yaml] [--repeats 3] [--target-s 10]

Writes results/benchmarks/dag_build.json and exits 1 when the median is over the target: every SLURM job
re-parses the workflow, so a slow DAG build is paid once per job.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run_seconds(configfile: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules", "--configfile", configfile],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/paper.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=10.0)
    parser.add_argument("--output", default="results/benchmarks/dag_build.json")
    args = parser.parse_args()
    seconds = [dry_run_seconds(args.configfile) for _ in range(args.repeats)]
    result = {
        "configfile": args.configfile,
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "target_s": args.target_s,
    }
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["median_s"] <= args.target_s else 1


if __name__ == "__main__":
    sys.exit(main())
