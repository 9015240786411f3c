"""What storing the text keys/values in float16 (`activations.text_dtype: float16`) changes, on a finished run.

    python benchmarks/text_dtype.py OUT_DIR [--config config.yaml] [--model smollm2] [--task sst2] [--threads 1]

For every seed's tuned prompt of the task, the test split runs twice on the run's own fp32 text store: as stored,
and with its keys/values rounded to float16 (what the option stores). Writes OUT_DIR/text_dtype_<task>.{csv,md}:
per seed the test accuracy of each, the predictions that changed, and the largest change of a label logit and
of a neuron's activation at the prompt positions beside the largest activation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from outputs import write_table  # noqa: E402  (this folder is the script's own on sys.path)

from skill_neurons.config import validate_config  # noqa: E402
from skill_neurons.data import Task  # noqa: E402
from skill_neurons.io import read_parquet, read_tensors  # noqa: E402
from skill_neurons.prompting import load_prompted  # noqa: E402
from skill_neurons.settings import Prompting  # noqa: E402
from skill_neurons.stages.common import markdown_table  # noqa: E402
from skill_neurons.stages.text import stored_text  # noqa: E402
from skill_neurons.text_cache import SplitText, TextTicket, release_store  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def rounded(split: SplitText) -> SplitText:
    """The split's text with keys/values as the float16 store reads them back."""
    half = [[t.half().to(t.dtype) for t in part] for part in (split.keys, split.values)]
    return SplitText(split.examples, split.lengths, *half, split.input_avg, split.input_max)


@torch.no_grad()
def outputs(lm, prompt: torch.Tensor, test: pd.DataFrame, task: Task, split: SplitText, batch_size: int):
    """(label logits (N, C), labels (N,), prompt-position activations per batch and layer) on `split`."""
    logits, labels, activations = [], [], []
    for batch in split.attached(lm.batches(test, task.text_fields, batch_size)):
        captured = lm.capture(prompt, batch)
        logits.append(captured.logits.float())
        labels.append(batch.labels)
        activations.append([a.float() for a in captured.prompt])
    return torch.cat(logits), torch.cat(labels), activations


def compare(config: dict, model: str, task_name: str, threads: int) -> pd.DataFrame:
    results = Path(config["results"])
    task = Task.from_config(config, task_name)
    prompting = Prompting.from_params(Prompting.params(config))
    lm = load_prompted(str(results / model / "model"), task, prompting, threads)
    test = read_parquet(results / "data" / task_name / "test.parquet")
    ticket = results / model / "text" / f"{task_name}.json"
    store = TextTicket.read(ticket).store
    released = store is not None and not Path(store).exists()
    exact = stored_text(str(ticket), ["test"], threads)["test"]  # encoded again where the run released it
    if released:
        release_store(ticket)  # the results folder as the run left it
    if exact.keys[0].dtype != torch.float32:
        raise SystemExit(f"the run's text store holds {exact.keys[0].dtype} keys/values: nothing to round")
    half = rounded(exact)
    rows = []
    for seed in sorted(config["seeds"]):
        prompt = read_tensors(results / model / "prompts" / task_name / f"seed{seed}" / "prompt.safetensors")["prompt"]
        prompt = prompt.to(lm.device)
        logits32, labels, acts32 = outputs(lm, prompt, test, task, exact, prompting.eval_batch_size)
        logits16, _, acts16 = outputs(lm, prompt, test, task, half, prompting.eval_batch_size)
        pairs = [(a, b) for batch32, batch16 in zip(acts32, acts16) for a, b in zip(batch32, batch16)]
        rows.append(
            {
                "task": task_name,
                "seed": seed,
                "examples": len(labels),
                "test_accuracy_float32": float((logits32.argmax(-1) == labels).float().mean()),
                "test_accuracy_float16": float((logits16.argmax(-1) == labels).float().mean()),
                "predictions_changed": int((logits32.argmax(-1) != logits16.argmax(-1)).sum()),
                "max_logit_change": float((logits32 - logits16).abs().max()),
                "max_activation_change": max(float((a - b).abs().max()) for a, b in pairs),
                "max_activation": max(float(a.abs().max()) for a, _ in pairs),
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(args.config.read_text()), SCHEMA)
    config.setdefault("results", "results")
    table = compare(config, args.model, args.task, args.threads)
    stem = f"text_dtype_{args.task}"
    write_table(args.out_dir, stem, table, markdown_table(table, 4))
    print(f"wrote {args.out_dir / stem}.csv and {args.out_dir / stem}.md")


if __name__ == "__main__":
    main()
