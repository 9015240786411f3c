"""Throughput of the pipeline's model passes against a bare forward of the same model, batch, length and dtype.

    python benchmarks/throughput.py OUT_DIR [--model results/smollm2/model] [--examples 128] [--batch 32]
                                            [--threads 2] [--repeats 3] [--precisions fp32 bf16]

Passes, each over the same pre-tokenised test batches (text + soft prompt):
  bare forward      the base model on the text and prompt vectors: no hooks, no head, nothing kept
  dump, text run    activation dumping as `dump_activations` does it, the text run in the same job
  dump, text stored activation dumping with the text's keys/values stored (how the workflow dumps)
  sweep point       one point of the paper's perturbation (noise at every token, one vector per example,
                    top 15% of each layer): `evaluate(..., one_forward=True)` under the perturbation hook
The passes alternate within each repeat, so that machine noise hits them alike; each is the median of the
repeats. Each precision is measured in turn, its passes against its own bare forward. Writes
OUT_DIR/throughput.{csv,md}: examples/s and the ratio to the bare forward (target >= 0.85).
The dumps process every example twice (train baseline, then the split), and are counted so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outputs import machine_line, write_table  # noqa: E402  (this folder is the script's own on sys.path)

from skill_neurons.activations import dump_activations  # noqa: E402
from skill_neurons.architecture import ffn_width  # noqa: E402
from skill_neurons.data import Task  # noqa: E402
from skill_neurons.perturbation import Perturbation, noise_generator, perturbed, random_order, top_share  # noqa: E402
from skill_neurons.prompting import PromptedLM, load_prompted  # noqa: E402
from skill_neurons.settings import Prompting  # noqa: E402
from skill_neurons.tuning import evaluate, init_prompt  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "glue" / "sst2" / "validation.parquet"
TASK = Task("sst2", "glue", ("sentence",), "Review: {sentence}\nSentiment:", (0, 1), (" negative", " positive"))


def bare_forward(lm: PromptedLM, prompt: torch.Tensor, batches) -> None:
    """The base model over text and prompt in one forward, as `full_causal_logits` feeds it, without the head."""
    with torch.no_grad(), lm.precision_context():
        for batch in batches:
            size = len(batch.input_ids)
            embeds = torch.cat([lm.model.get_input_embeddings()(batch.input_ids), prompt.expand(size, -1, -1)], 1)
            mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(size, lm.n_prompt)], 1)
            lm.model.base_model(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(0))


def dump(lm: PromptedLM, prompt: torch.Tensor, batches, folder: Path) -> None:
    dump_activations(lm, prompt, batches, {"test": batches}, folder / "run", dtype="float16")


def sweep_point(lm: PromptedLM, prompt: torch.Tensor, batches) -> None:
    order = random_order([ffn_width(p) for p in lm.projections], seed=0)
    noise = Perturbation(
        "noise",
        top_share(order, 0.15, "per_layer"),
        0.1,
        generator=noise_generator(lm.device, 0),
        noise_shared_across_tokens=True,
    )
    with perturbed(lm.projections, noise):
        evaluate(lm, prompt, batches, one_forward=True)


def measure(passes: dict[str, tuple[Callable[[], None], int]], repeats: int) -> pd.DataFrame:
    """Median seconds of each pass over `repeats` rounds, the passes alternating within a round."""
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    for run, _ in passes.values():
        run()  # warm-up: first-call allocations and lazy initialisation are not throughput
    for _ in range(repeats):
        for name, (run, _) in passes.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    rows = []
    for name, (_, examples) in passes.items():
        median = statistics.median(seconds[name])
        rows.append({"pass": name, "examples": examples, "seconds": median, "examples_per_s": examples / median})
    table = pd.DataFrame(rows)
    bare = table.loc[table["pass"] == "bare forward", "examples_per_s"].iloc[0]
    return table.assign(ratio_to_bare=table["examples_per_s"] / bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--model", default=str(ROOT / "results" / "smollm2" / "model"))
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-prompt", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args()

    data = pd.read_parquet(SST2).head(args.examples)
    data.insert(0, "example", range(len(data)))
    tables = [measure_precision(args, precision, data) for precision in args.precisions]
    table = pd.concat(tables, ignore_index=True)
    text_tokens = tables[0].attrs["text_tokens"]
    setting = (
        f"{Path(args.model).name}, {args.threads} threads, batch {args.batch}, {len(data)} SST-2 examples "
        f"(about {text_tokens} text tokens) + {args.n_prompt} prompt tokens, median of {args.repeats}; {machine_line()}"
    )
    markdown = f"Throughput against a bare forward ({setting})\n\n{table.round(3).to_markdown(index=False)}\n"
    write_table(args.out_dir, "throughput", table, markdown)
    print(markdown)


def measure_precision(args: argparse.Namespace, precision: str, data: pd.DataFrame) -> pd.DataFrame:
    """The four passes in one precision ('fp32', or 'bf16' autocast as the workflow runs it)."""
    prompting = Prompting(args.n_prompt, 48, precision, args.batch, "auto")
    lm = load_prompted(args.model, TASK, prompting, args.threads)
    batches = lm.batches(data, TASK.text_fields, args.batch)
    stored = lm.batches(data, TASK.text_fields, args.batch)
    lm.keep_text_cache(stored)  # the workflow reads these from its text store: built once, outside the timing
    prompt = init_prompt(lm, "normal", 0.5, seed=0).to(lm.device)
    n = len(data)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        table = measure(
            {
                "bare forward": (lambda: bare_forward(lm, prompt, batches), n),
                "dump, text run": (lambda: dump(lm, prompt, batches, folder), 2 * n),
                "dump, text stored": (lambda: dump(lm, prompt, stored, folder), 2 * n),
                "sweep point": (lambda: sweep_point(lm, prompt, batches), n),
            },
            args.repeats,
        )
    table.insert(0, "precision", precision)
    table.insert(1, "device", str(lm.device))
    table.attrs["text_tokens"] = batches[0].input_ids.shape[1]
    return table


if __name__ == "__main__":
    main()
