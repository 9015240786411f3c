"""What the benchmark scripts share: their NAME=DIR model arguments and the table files they write."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


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
