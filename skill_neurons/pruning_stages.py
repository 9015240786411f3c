"""The pruning stages (Wang et al. §6.1 and SKELETON): plain arguments in, files out."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .data import Task
from .io import read_json, read_tensors, write_json, write_parquet, write_tensors
from .stages import prompted_lm, read_splits, write_table

log = logging.getLogger("skill_neurons")

SELECTION_METHODS = ("attribution", "activation", "gradient", "random", "predictivity")


@dataclass
class Prompting:
    """How a model is read through its soft prompt (the prompt/data config leaves)."""

    n_prompt: int
    max_field_tokens: int | None
    precision: str
    device: str
    threads: int
    eval_batch_size: int


@dataclass
class Retuning:
    """Prompt re-tuning on a pruned model, from the dense model's tuned prompt."""

    lr: float
    batch_size: int
    max_steps: int
    eval_every: int
    patience: int


def prompting_from_params(params, threads: int) -> Prompting:
    """The Prompting of a rule whose params hold PROMPTING_PARAMS (pruning.smk)."""
    return Prompting(params["n_tokens"], params["max_field_tokens"], params["precision"], params["device"], threads,
                     params["eval_batch_size"])


def retuning_from_params(params) -> Retuning:
    """The Retuning of a rule whose params hold RETUNE_PARAMS as retune_<key> (pruning.smk)."""
    return Retuning(*(params[f"retune_{key}"] for key in ("lr", "batch_size", "max_steps", "eval_every", "patience")))


def _load(model_dir: str, task: Task, prompting: Prompting, precision: str | None = None):
    return prompted_lm(model_dir, task, prompting.n_prompt, prompting.max_field_tokens,
                       precision or prompting.precision, prompting.device, prompting.threads)


def _accuracy(lm, prompt: torch.Tensor, frame: pd.DataFrame, task: Task, batch_size: int) -> float:
    from .prompting import evaluate

    return evaluate(lm, prompt.to(lm.device), lm.batches(frame, task.text_fields, batch_size))


def _retune(lm, frames: Mapping[str, pd.DataFrame], task: Task, start: torch.Tensor, seed: int,
            retuning: Retuning, batch_size: int):
    from .prompting import tune_prompt

    dev = lm.keep_text_cache(lm.batches(frames["dev"], task.text_fields, batch_size))
    return tune_prompt(lm, frames["train"], dev, task.text_fields, seed=seed, lr=retuning.lr,
                       batch_size=retuning.batch_size, max_steps=retuning.max_steps,
                       eval_every=retuning.eval_every, patience=retuning.patience, init_std=0.0,
                       start_prompt=start)


def _pruned_copy(lm, keep: Mapping[int, torch.Tensor], constants=None):
    """A PromptedLM on a pruned deep copy of `lm`'s model, and the FFN widths."""
    from .pruning import prune_ffns

    model = copy.deepcopy(lm.model)
    widths = prune_ffns(model, keep, constants)
    return lm.with_model(model), widths


def _save_and_check(lm, prompt: torch.Tensor, widths: Sequence[int], test: pd.DataFrame, task: Task,
                    test_accuracy: float, model_dir: str, prompting: Prompting) -> None:
    """Save the pruned model, load it back with our loader, and demand the same test accuracy."""
    from .pruning import save_pruned

    save_pruned(lm.model, lm.tokenizer, model_dir, widths)
    reloaded = _load(model_dir, task, prompting)
    again = _accuracy(reloaded, prompt, test, task, prompting.eval_batch_size)
    if again != test_accuracy:
        raise RuntimeError(f"pruned model reloaded from {model_dir} scores {again:.4f} on test, "
                           f"not the {test_accuracy:.4f} it scored before saving")


def attribution(model_dir: str, task: Task, train_split: str, prompt_file: str, output: str, n_examples: int,
                seed: int, prompting: Prompting) -> None:
    """SKELETON's neuron scores on `n_examples` train examples drawn with `seed`."""
    from .skeleton import neuron_scores

    lm = _load(model_dir, task, prompting, precision="fp32")  # gradients in full precision
    train = pd.read_parquet(train_split)
    sample = train.sample(min(n_examples, len(train)), random_state=seed)
    prompt = read_tensors(prompt_file)["prompt"].to(lm.device)
    started = time.perf_counter()
    scores = neuron_scores(lm, prompt, lm.batches(sample, task.text_fields, 10))
    log.info("scores of %d neurons from %d examples in %.1f s", len(scores), len(sample),
             time.perf_counter() - started)
    write_parquet(scores, output)


def skeleton(model_dir: str, task: Task, splits: Mapping[str, str], prompt_file: str, scores_file: str,
             outputs: Mapping[str, str], seed: int, step: float, margin: float, prompting: Prompting,
             retuning: Retuning) -> None:
    """Binary search for the smallest global keep ratio whose re-tuned prompt stays within `margin` on dev."""
    from .models import ffn_width, parameter_count
    from .skeleton import global_keep, order_of, search_keep_ratio

    frames = read_splits(splits)
    lm = _load(model_dir, task, prompting)
    first = read_tensors(prompt_file)["prompt"]
    dense_dev = _accuracy(lm, first, frames["dev"], task, prompting.eval_batch_size)
    widths = [ffn_width(p) for p in lm.projections]
    layers, neurons = order_of(pd.read_parquet(scores_file), "attribution")
    rows, tuned = [], {}

    def accepts(ratio: float) -> bool:
        started = time.perf_counter()
        pruned, _ = _pruned_copy(lm, global_keep(layers, neurons, widths, ratio))
        before = _accuracy(pruned, first, frames["dev"], task, prompting.eval_batch_size)
        result = _retune(pruned, frames, task, first, seed, retuning, prompting.eval_batch_size)
        tuned[ratio] = result.prompt
        accepted = result.dev_accuracy >= dense_dev - margin - 1e-9
        rows.append({"keep_ratio": ratio, "dev_accuracy_before_retuning": before, "dev_accuracy": result.dev_accuracy,
                     "accepted": accepted, "seconds": time.perf_counter() - started})
        log.info("keep %.2f: dev %.4f before re-tuning, %.4f after (dense %.4f): %s", ratio, before,
                 result.dev_accuracy, dense_dev, "accepted" if accepted else "rejected")
        return accepted

    ratio, _ = search_keep_ratio(accepts, step)
    if ratio >= 1.0:
        pruned, kept_widths, prompt = lm, widths, first
        log.warning("no pruned model stays within %.3f of the dense dev accuracy; keeping the dense model", margin)
    else:
        pruned, kept_widths = _pruned_copy(lm, global_keep(layers, neurons, widths, ratio))
        prompt = tuned[ratio]
    dev_accuracy = next((r["dev_accuracy"] for r in rows if r["keep_ratio"] == ratio), dense_dev)  # as searched
    test_accuracy = _accuracy(pruned, prompt, frames["test"], task, prompting.eval_batch_size)
    _save_and_check(pruned, prompt, kept_widths, frames["test"], task, test_accuracy, outputs["model"], prompting)
    # Re-tuning trains the prompt further; the dense model re-tuned alike separates that from pruning.
    control = _retune(lm, frames, task, first, seed, retuning, prompting.eval_batch_size)
    control_test = _accuracy(lm, control.prompt, frames["test"], task, prompting.eval_batch_size)
    log.info("dense model re-tuned alike: dev %.4f, test %.4f", control.dev_accuracy, control_test)
    write_tensors({"prompt": prompt}, outputs["prompt"])
    write_parquet(pd.DataFrame(rows), outputs["search"])
    write_json({"method": "skeleton", "task": task.name, "seed": seed, "keep_ratio": ratio,
                "kept_neurons": int(sum(kept_widths)), "total_neurons": int(sum(widths)), "widths": kept_widths,
                "parameters": parameter_count(pruned.model), "dense_parameters": parameter_count(lm.model),
                "dense_dev_accuracy": dense_dev, "dev_accuracy": dev_accuracy, "test_accuracy": test_accuracy,
                "dense_test_accuracy": _accuracy(lm, first, frames["test"], task, prompting.eval_batch_size),
                "dense_retuned_dev_accuracy": control.dev_accuracy, "dense_retuned_test_accuracy": control_test,
                "probes": len(rows)}, outputs["metrics"])


def skill_pruning(model_dir: str, task: Task, splits: Mapping[str, str], prompt_file: str, ranking_file: str,
                  baseline_file: str, outputs: Mapping[str, str], seed: int, keep_share: float,
                  layer_share: float, prompting: Prompting, retuning: Retuning) -> None:
    """Wang et al.: keep the top `keep_share` skill neurons of each of the top `layer_share` layers, fold the
    rest at their baseline into the bias, remove them, re-tune the prompt."""
    from .models import ffn_width, parameter_count
    from .perturbation import neuron_baseline
    from .pruning import skill_keep, top_layers

    frames = read_splits(splits)
    lm = _load(model_dir, task, prompting)
    first = read_tensors(prompt_file)["prompt"]
    widths = [ffn_width(p) for p in lm.projections]
    ranking = pd.read_parquet(ranking_file, columns=["layer", "neuron", "rank"]).sort_values("rank")
    layers = top_layers(len(widths), layer_share)
    keep = skill_keep(ranking["layer"].to_numpy(), ranking["neuron"].to_numpy(), widths, layers, keep_share)
    pruned, kept_widths = _pruned_copy(lm, keep, neuron_baseline(pd.read_parquet(baseline_file)))
    before = {s: _accuracy(pruned, first, frames[s], task, prompting.eval_batch_size) for s in ("dev", "test")}
    result = _retune(pruned, frames, task, first, seed, retuning, prompting.eval_batch_size)
    test_accuracy = _accuracy(pruned, result.prompt, frames["test"], task, prompting.eval_batch_size)
    log.info("skill-neuron pruning of layers %d-%d: test %.4f before re-tuning, %.4f after", layers[0], layers[-1],
             before["test"], test_accuracy)
    _save_and_check(pruned, result.prompt, kept_widths, frames["test"], task, test_accuracy, outputs["model"],
                    prompting)
    write_tensors({"prompt": result.prompt}, outputs["prompt"])
    write_json({"method": "skill_neurons", "task": task.name, "seed": seed, "keep_share": keep_share,
                "pruned_layers": layers, "kept_neurons": int(sum(kept_widths)), "total_neurons": int(sum(widths)),
                "widths": kept_widths, "parameters": parameter_count(pruned.model),
                "dense_parameters": parameter_count(lm.model),
                "dense_dev_accuracy": _accuracy(lm, first, frames["dev"], task, prompting.eval_batch_size),
                "dense_test_accuracy": _accuracy(lm, first, frames["test"], task, prompting.eval_batch_size),
                "dev_accuracy_before_retuning": before["dev"], "test_accuracy_before_retuning": before["test"],
                "dev_accuracy": result.dev_accuracy, "test_accuracy": test_accuracy}, outputs["metrics"])


def selection_orders(scores: pd.DataFrame, ranking: pd.DataFrame, widths: Sequence[int],
                     seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Global neuron orders (layer and neuron arrays, most important first) of every selection method."""
    from .perturbation import random_order
    from .skeleton import SCORES, order_of

    orders = {name: order_of(scores, name) for name in SCORES}
    shuffled = random_order(widths, seed)
    orders["random"] = (shuffled["layer"].to_numpy(), shuffled["neuron"].to_numpy())
    ranking = ranking.sort_values("rank")
    orders["predictivity"] = (ranking["layer"].to_numpy(), ranking["neuron"].to_numpy())
    return {name: orders[name] for name in SELECTION_METHODS}


def selection(model_dir: str, task: Task, test_split: str, prompt_file: str, scores_file: str, ranking_file: str,
              output: str, keep_ratios: Sequence[float], seed: int, prompting: Prompting) -> None:
    """Test accuracy of the dense prompt on models pruned to each keep ratio by each selection method."""
    from .models import ffn_width
    from .skeleton import global_keep

    lm = _load(model_dir, task, prompting)
    test = pd.read_parquet(test_split)
    prompt = read_tensors(prompt_file)["prompt"]
    widths = [ffn_width(p) for p in lm.projections]
    orders = selection_orders(pd.read_parquet(scores_file), pd.read_parquet(ranking_file), widths, seed)
    rows = [{"method": "dense", "keep_ratio": 1.0,
             "test_accuracy": _accuracy(lm, prompt, test, task, prompting.eval_batch_size)}]
    for method, (layers, neurons) in orders.items():
        for ratio in keep_ratios:
            pruned, _ = _pruned_copy(lm, global_keep(layers, neurons, widths, ratio))
            accuracy = _accuracy(pruned, prompt, test, task, prompting.eval_batch_size)
            log.info("%s, keep %.2f: test %.4f", method, ratio, accuracy)
            rows.append({"method": method, "keep_ratio": ratio, "test_accuracy": accuracy})
    write_parquet(pd.DataFrame(rows).assign(task=task.name, seed=seed), output)


def speed(model_dirs: Mapping[str, str], output: str, batch_sizes: Sequence[int], lengths: Sequence[int],
          reference: Mapping[str, int], dtypes: str | Sequence[str], warmup: int, repeats: int, device: str,
          threads: int, peak_memory: bool = True) -> None:
    """Dense and pruned models side by side: forward time over batch sizes and lengths, memory, parameters."""
    from .devices import pick_device
    from .models import set_threads
    from .speed import Case, benchmark, benchmark_dtypes, sweep_cases

    set_threads(threads)
    chosen = pick_device(device)
    dtypes = benchmark_dtypes(dtypes, chosen)
    cases = sweep_cases(batch_sizes, lengths, Case(reference["batch"], reference["length"]))
    started = time.perf_counter()
    table = benchmark(model_dirs, "dense", cases, dtypes, warmup, repeats, chosen, threads, peak_memory)
    log.info("%d cases x %d variants x %d dtypes on %s with %d threads in %.0f s:\n%s", len(cases), len(model_dirs),
             len(dtypes), chosen, threads, time.perf_counter() - started,
             table[["variant", "dtype", "batch", "length", "median_ms", "speedup", "speedup_q1", "speedup_q3"]]
             .round(3).to_string())
    write_parquet(table.assign(reference=[(b, n) == (reference["batch"], reference["length"])
                                          for b, n in zip(table["batch"], table["length"])]), output)


def pruning_table(task_names: Sequence[str], metric_files: Mapping[str, Sequence[str]],
                  speed_files: Sequence[str], outputs: Mapping[str, str]) -> None:
    """Per task and method: accuracy, neurons and parameters kept, speedup at the reference case per dtype."""
    rows = []
    for index, task in enumerate(task_names):
        speeds = pd.read_parquet(speed_files[index])
        speeds = speeds[speeds["reference"]]
        skeleton = read_json(metric_files["skeleton"][index])
        skill = read_json(metric_files["skill_neurons"][index])
        dense = (skeleton["total_neurons"], skeleton["total_neurons"], skeleton["dense_parameters"],
                 skeleton["dense_parameters"])
        baseline = skeleton["dense_test_accuracy"]
        rows.append(_table_row(task, "dense (prompt tuning)", baseline, None, *dense, speeds, "dense"))
        rows.append(_table_row(task, "dense, prompt re-tuned alike (control)", skeleton["dense_retuned_test_accuracy"],
                               baseline, *dense, speeds, "dense"))
        for method, metrics in (("skill_neurons", skill), ("skeleton", skeleton)):
            rows.append(_table_row(task, method, metrics["test_accuracy"], baseline, metrics["kept_neurons"],
                                   metrics["total_neurons"], metrics["parameters"], metrics["dense_parameters"],
                                   speeds, method))
    table = pd.DataFrame(rows)
    write_table(table, outputs)


def _table_row(task: str, method: str, accuracy: float, dense_accuracy: float | None, kept: int, total: int,
               parameters: int, dense_parameters: int, speeds: pd.DataFrame, variant: str) -> dict:
    row = {"task": task, "method": method, "test acc (%)": round(100 * accuracy, 1),
           "change (points)": "" if dense_accuracy is None else f"{100 * (accuracy - dense_accuracy):+.1f}",
           "FFN neurons kept (%)": round(100 * kept / total, 1),
           "parameters (M)": round(parameters / 1e6, 1),
           "parameters kept (%)": round(100 * parameters / dense_parameters, 1)}
    for dtype, part in speeds[speeds["variant"] == variant].groupby("dtype"):
        speed = part.iloc[0]
        row[f"speedup {dtype}"] = (f"{speed['speedup']:.2f}x" if variant == "dense" else
                                   f"{speed['speedup']:.2f}x ({speed['speedup_q1']:.2f}-{speed['speedup_q3']:.2f})")
    return row
