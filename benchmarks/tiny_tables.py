"""Run the tests' tiny config end to end and write a digest of every deterministic result file.

A refactor that changes no behaviour leaves the digest unchanged: run it before and after, compare.

    python benchmarks/tiny_tables.py OUT_DIR            # writes OUT_DIR/digest.json
    python benchmarks/tiny_tables.py OUT_DIR --compare OTHER/digest.json

Timings (speed benchmark, seconds columns, logs, benchmarks) are left out: they differ between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_workflow import tiny_config, write_config  # noqa: E402

TIMING_COLUMNS = {
    "seconds",
    "train_seconds",
    "median_ms",
    "q1_ms",
    "q3_ms",
    "speedup",
    "speedup_q1",
    "speedup_q3",
    "forward_peak_mb",
    "memory_mb",
}
SKIPPED_PARTS = {"logs", "benchmarks", "checkpoints"}
SKIPPED_NAMES = {"speed.parquet", "pruning.parquet", "pruning.md", "pruning.html"}  # hold speedups


def digest_of(path: Path) -> str:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        frame = frame.drop(columns=[c for c in frame.columns if c in TIMING_COLUMNS])
        for column in frame.select_dtypes("object").columns:  # list cells (activations) as their bytes
            frame[column] = frame[column].map(
                lambda v: np.asarray(v).tobytes().hex() if hasattr(v, "__len__") and not isinstance(v, str) else v
            )
        return hashlib.sha256(
            pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
            + ",".join(map(str, frame.columns)).encode()
        ).hexdigest()
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in TIMING_COLUMNS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(results: Path) -> dict[str, str]:
    files = {}
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results)
        if not path.is_file() or SKIPPED_PARTS & set(relative.parts) or path.name in SKIPPED_NAMES:
            continue
        if path.suffix in (".png", ".html") or "/model/" in f"/{relative}":
            continue  # images embed timestamps; model folders are checked through the accuracies
        files[str(relative)] = digest_of(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--digest-only", action="store_true", help="digest a finished run in OUT, run nothing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.digest_only:
        config = write_config(tiny_config(args.out), args.out / "tiny.yaml")
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(ROOT / "Snakefile"),
                "--cores",
                "2",
                "--configfile",
                str(config),
                "--directory",
                str(args.out),
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode:
            sys.exit(run.stdout[-3000:] + run.stderr[-3000:])
    files = digest(args.out / "results")
    (args.out / "digest.json").write_text(json.dumps(files, indent=1, sort_keys=True))
    print(f"{len(files)} files digested into {args.out / 'digest.json'}")
    if args.compare:
        other = json.loads(args.compare.read_text())
        differing = sorted(k for k in set(files) | set(other) if files.get(k) != other.get(k))
        for key in differing:
            print(f"differs: {key}")
        sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
