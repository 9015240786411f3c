"""Dense against pruned models side by side, in every dtype, over batch sizes and lengths (a table).

    python benchmarks/pruned_speed.py OUT_DIR --model dense=DIR --model skeleton_sst2=DIR [--model ...]
                                      [--cases 8x64 32x128 ...] [--dtypes float32 bfloat16] [--repeats 20]
                                      [--device auto] [--threads 2] [--shapes-only] [--attention sdpa eager]

The first --model is the reference. The timing is `speed_benchmark`'s (`skill_neurons.speed.benchmark`: paired
dense/variant forwards, median speedup with its quartiles). --shapes-only times random weights in each model's
architecture and FFN widths (`save_random_model`): a forward's time depends on its shapes alone, so a machine that
holds only the models' config.json and tokenizer (a lent GPU) times the same models. --attention times every model
with each attention kernel in turn (transformers' names; default: the models' own). Writes OUT_DIR/speed.{csv,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outputs import machine_line, parse_models, write_table  # noqa: E402  (this folder is the script's own on sys.path)

from skill_neurons.controls import save_random_model  # noqa: E402
from skill_neurons.devices import pick_device  # noqa: E402
from skill_neurons.models import set_threads  # noqa: E402
from skill_neurons.speed import DTYPES, Case, benchmark  # noqa: E402

COLUMNS = ["device", "dtype", "attention", "variant", "batch", "length"]
COLUMNS += ["median_ms", "speedup", "speedup_q1", "speedup_q3"]


def parse_case(text: str) -> Case:
    batch, _, length = text.partition("x")
    if not (batch.isdigit() and length.isdigit()):
        raise argparse.ArgumentTypeError(f"a case is BATCHxLENGTH, e.g. 8x64, not {text!r}")
    return Case(int(batch), int(length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR; the first is the reference")
    parser.add_argument("--cases", nargs="+", type=parse_case, default=[Case(8, 64)])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=list(DTYPES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shapes-only", action="store_true", help="random weights in each model's shapes")
    parser.add_argument("--attention", nargs="+", default=[None], help="attention kernels, e.g. sdpa eager")
    args = parser.parse_args()

    models = parse_models(args.model, parser)
    if args.shapes_only:
        for name, path in models.items():
            models[name] = str(args.out_dir / "models" / name)
            save_random_model(path, models[name], seed=0)
    reference = next(iter(models))
    device = pick_device(args.device)
    set_threads(args.threads)
    table = pd.concat(
        [
            benchmark(
                models,
                reference,
                args.cases,
                args.dtypes,
                args.warmup,
                args.repeats,
                device,
                args.threads,
                peak_memory=False,
                attention=attention,
            )
            for attention in args.attention
        ],
        ignore_index=True,
    )
    table = table.sort_values(["dtype", "attention", "batch", "length", "variant"])
    weights = "random weights in the models' shapes" if args.shapes_only else "the models' weights"
    markdown = (
        f"Forward time against {reference} ({device}, {args.threads} threads, {weights}, median of {args.repeats} "
        f"paired repeats; speedup = median of the paired ratios, with its quartiles; {machine_line()})\n\n"
        f"{table[COLUMNS].round(3).to_markdown(index=False)}\n"
    )
    write_table(args.out_dir, "speed", table, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
