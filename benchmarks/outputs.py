"""What the benchmark scripts share: their NAME=DIR model arguments and the table files they write."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skill_neurons.devices import cpu_bf16_unit  # noqa: E402


def parse_models(specs: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """NAME=DIR pairs in order (the first is the reference); a malformed or repeated name stops the run."""
    models: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not name or not path:
            parser.error(f"a --model is NAME=DIR, not {spec!r}")
        if name in models:
            parser.error(f"--model {name} given twice")
        models[name] = path
    return models


def write_table(out_dir: Path, stem: str, table: pd.DataFrame, markdown: str) -> None:
    """OUT_DIR/STEM.csv (the numbers) and OUT_DIR/STEM.md (the table as a reader sees it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / f"{stem}.csv", index=False)
    (out_dir / f"{stem}.md").write_text(markdown)


def cpu_description() -> dict:
    """The CPU's model name, its bf16 matmul unit (AMX, AVX512-BF16 or none) and how many cores this process may use."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return {
        "cpu": names[0] if names else "unknown",
        "bf16_unit": cpu_bf16_unit(),
        "cores": len(os.sched_getaffinity(0)),
    }


def commit() -> str:
    """The checkout's short commit, with '+changes' where its tracked files differ from it; 'unknown' outside git."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def machine_line() -> str:
    """Where and at what commit a table was measured, for its header."""
    cpu = cpu_description()
    return f"commit {commit()}, {cpu['cpu']} ({cpu['cores']} cores, bf16 unit: {cpu['bf16_unit'] or 'none'})"
