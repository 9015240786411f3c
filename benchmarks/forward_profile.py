"""Where a forward's time goes, dense against pruned: what bounds a pruned model's speedup in each dtype.

    python benchmarks/forward_profile.py OUT_DIR --model dense=DIR --model skeleton=DIR [--model ...]
                                         [--dtypes float32 bfloat16] [--batch 8] [--length 64]
                                         [--repeats 10] [--threads 2] [--device auto]

The first --model is the reference. Each model's forward (synthetic ids, the verbalizer's two scores at
the last position, as `speed_benchmark` times it) is split by `speed.part_times` into the layers' FFNs,
attention, norms, the embeddings and the rest. Writes OUT_DIR/profile.{csv,md}: per dtype, variant and
part the median ms and its share of the forward, and per pruned variant its measured speedup beside
`ffn_bound` = total_ref / (total_ref - ffn_ref + ffn_variant): the speedup if only the FFN had changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outputs import machine_line, parse_models, write_table  # noqa: E402  (this folder is the script's own on sys.path)

from skill_neurons.devices import pick_device  # noqa: E402
from skill_neurons.models import load_model, set_threads  # noqa: E402
from skill_neurons.speed import DTYPES, PARTS, Case, part_times, speedup_bounds, synthetic_inputs  # noqa: E402


def profile(models: dict[str, str], dtype: str, case: Case, repeats: int, device: torch.device) -> pd.DataFrame:
    """Median seconds per part for every model in one dtype, the models one after the other."""
    rows = []
    for name, path in models.items():
        model = load_model(path, device)[0].to(DTYPES[dtype])
        inputs = synthetic_inputs(model.config.vocab_size, case, device)
        times = part_times(model, inputs, repeats, device)
        medians = times.groupby("part", sort=False)["seconds"].median()
        medians["other"] = medians["total"] - medians[list(PARTS)].sum()  # so that the medians add up
        rows += [{"dtype": dtype, "variant": name, "part": part, "median_ms": s * 1e3} for part, s in medians.items()]
        del model
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR; the first is the reference")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=list(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    models = parse_models(args.model, parser)
    reference = next(iter(models))
    device = pick_device(args.device)
    set_threads(args.threads)
    case = Case(args.batch, args.length)
    table = pd.concat([profile(models, dtype, case, args.repeats, device) for dtype in args.dtypes])
    totals = table[table["part"] == "total"].set_index(["dtype", "variant"])["median_ms"]
    table["share"] = table["median_ms"] / table.set_index(["dtype", "variant"]).index.map(totals)
    summary = speedup_bounds(table, reference)
    setting = f"{device}, {args.threads} threads, batch {args.batch} x length {args.length}, median of {args.repeats}"
    markdown = (
        f"Forward time by part ({setting}; {machine_line()})\n\n{table.round(3).to_markdown(index=False)}\n\n"
        f"Speedup against {reference}, and the speedup if only the FFN had changed\n\n"
        f"{summary.round(3).to_markdown(index=False)}\n"
    )
    write_table(args.out_dir, "profile", table, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
