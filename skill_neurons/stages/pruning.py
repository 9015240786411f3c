"""Rules of pruning.smk: SKELETON and Wang et al.'s skill-neuron pruning, selection methods, speed, the table."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import skeleton, tuning
from ..architecture import ffn_width, parameter_count
from ..attention import group_scores, layer_attentions, prune_attention, record_kv_heads
from ..batches import Batch
from ..data import SPLITS, Task
from ..devices import pick_device
from ..io import (
    read_json,
    read_parquet,
    read_tensors,
    require_free_space,
    tensor_bytes,
    write_json,
    write_parquet,
    write_tensors,
)
from ..models import set_threads
from ..perturbation import input_mean_baseline, neuron_baseline, random_order
from ..prompting import PromptedLM, load_prompted
from ..pruning import prune_ffns, save_pruned, skill_keep, top_layers
from ..settings import KeepRatioSearch, Prompting, Retuning, SkillPruning, SpeedBenchmark
from ..speed import Case, benchmark, benchmark_dtypes, sweep_cases
from ..text_cache import SplitText, encode_split, text_batches
from .common import Job, chunks, log, read_splits, split_inputs, stage, write_table
from .text import stored_text

# SKELETON Fig. 5's methods, then ours: the signed-sum attribution (module skeleton) beside the paper's.
# What Wang et al.'s pruning freezes a dropped neuron at: the authors' constant, and ours beside it.
FROZEN_CONSTANTS = {"prompt_mean": neuron_baseline, "input_mean": input_mean_baseline}
CONSTANT_NAMES = {"prompt_mean": "prompt-position mean", "input_mean": "input-token mean, ours"}
ATTENTION_METHOD = "skeleton + attention groups (ours)"
ATTENTION_KEPT = "attention groups kept (%)"
# The models the speed benchmark times, those of them its rule names.
SPEED_VARIANTS = ("dense", "skeleton", "skill_neurons", "skeleton_attention")
SELECTION_METHODS = ("attribution", "activation", "gradient", "random", "predictivity", "attribution_signed_sum")


def accuracy(
    lm: PromptedLM,
    prompt: torch.Tensor,
    frame: pd.DataFrame,
    task: Task,
    batch_size: int,
    stored: SplitText | None = None,
) -> float:
    """Accuracy of `prompt` on a split; `stored`: the dense model's text states, read instead of run."""
    return tuning.evaluate(lm, prompt.to(lm.device), text_batches(lm, frame, task.text_fields, batch_size, stored))


def kept_batches(
    lm: PromptedLM, frame: pd.DataFrame, task: Task, batch_size: int, stored: SplitText | None = None
) -> list[Batch]:
    """A split's batches with their text states kept for repeated evaluation: read from `stored` (the dense
    model's), else run once (a pruned model's)."""
    return list(text_batches(lm, frame, task.text_fields, batch_size, stored, reuse=True))


def retune(
    lm: PromptedLM,
    frames: Mapping[str, pd.DataFrame],
    task: Task,
    start: torch.Tensor,
    seed: int,
    retuning: Retuning,
    batch_size: int,
    dev: Sequence[Batch] | None = None,
    train_text: SplitText | None = None,
) -> tuning.TuningResult:
    """The prompt re-tuned from `start` on `lm`'s (pruned) model.

    As in the first tuning, a causal LM's train and dev text runs once (not once a step): a pruned model's
    text states differ from the stored dense ones, so they are made here. `dev`: batches already kept;
    `train_text`: the train split's states where they are stored (the dense model).
    """
    dev = dev if dev is not None else kept_batches(lm, frames["dev"], task, batch_size)
    if train_text is None and lm.kind == "causal":
        train_text = encode_split(lm, frames["train"], task.text_fields, batch_size)
    return tuning.tune_prompt(
        lm,
        frames["train"],
        dev,
        task.text_fields,
        seed=seed,
        **dataclasses.asdict(retuning),
        init_std=0.0,
        start_prompt=start,
        train_text=train_text,
    )


def pruned_copy(lm: PromptedLM, keep: Mapping[int, torch.Tensor], constants=None) -> tuple[PromptedLM, list[int]]:
    """A PromptedLM on a pruned deep copy of `lm`'s model, and the FFN widths."""
    model = copy.deepcopy(lm.model)
    widths = prune_ffns(model, keep, constants)
    return lm.with_model(model), widths


def save_and_verify(
    lm: PromptedLM,
    prompt: torch.Tensor,
    widths: Sequence[int],
    batches: Sequence[Batch],
    model_dir: str,
    task: Task,
    prompting: Prompting,
    threads: int,
) -> None:
    """Save the pruned model and load it back with our loader: every tensor must come back bit for bit, and
    the label scores of `batches` (their text run anew) within 1e-4 (a GPU need not repeat a sum's order).

    Pass the shortest and the longest test batch, so that a saved setting that acts only at later positions
    (rotary scaling, a sliding window) is seen too.
    """
    save_pruned(lm.model, lm.tokenizer, model_dir, widths)
    reloaded = load_prompted(model_dir, task, prompting, threads)
    saved, loaded = lm.model.state_dict(), reloaded.model.state_dict()
    differ = sorted(
        name
        for name in saved.keys() | loaded.keys()
        if name not in saved
        or name not in loaded
        or saved[name].dtype != loaded[name].dtype
        or not torch.equal(saved[name], loaded[name].to(saved[name].device))
    )
    if differ:
        raise RuntimeError(
            f"pruned model reloaded from {model_dir} differs from the saved one in {len(differ)} tensor(s): "
            + ", ".join(differ[:5])
        )
    for batch in batches:
        fresh = dataclasses.replace(batch, prefix_cache=None, input_avg=None, input_max=None)
        with torch.no_grad():
            before = lm.label_logits(prompt.to(lm.device), fresh)
            after = reloaded.label_logits(prompt.to(reloaded.device), fresh).to(before.device)
        if not torch.allclose(before, after, rtol=1e-4, atol=1e-4):
            raise RuntimeError(
                f"pruned model reloaded from {model_dir} scores a test batch differently from the saved one "
                f"(largest label-logit change {float((before - after).abs().max()):.3g})"
            )


def attribution_sample(job: Job) -> pd.DataFrame:
    """The `n_examples` train examples SKELETON's attribution is summed over, drawn with the pruning seed."""
    train = read_parquet(job.input.train)
    return train.sample(min(job.params.n_examples, len(train)), random_state=job.params.seed)


@stage
def neuron_attribution(job: Job) -> None:
    """SKELETON's scores of every FFN neuron on `n_examples` train examples drawn with the pruning seed."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    lm = load_prompted(job.input.model, task, prompting, job.threads, precision="fp32")  # gradients in fp32
    prompt = read_tensors(job.input.prompt)["prompt"].to(lm.device)
    sample = attribution_sample(job)
    started = time.perf_counter()
    scores = skeleton.neuron_scores(lm, prompt, lm.batches(sample, task.text_fields, 10))
    log.info("scores of %d neurons from %d examples in %.1f s", len(scores), len(sample), time.perf_counter() - started)
    write_parquet(scores, job.output[0])


@stage
def attention_attribution(job: Job) -> None:
    """Ours: SKELETON's attribution of every key/value group of attention, on its FFN-pruned model and prompt."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    lm = load_prompted(job.input.model, task, prompting, job.threads, precision="fp32")  # gradients in fp32
    attentions = layer_attentions(lm.model)
    prompt = read_tensors(job.input.prompt)["prompt"].to(lm.device)
    sample = attribution_sample(job)
    batches = lm.batches(sample, task.text_fields, 10)
    dimensions = skeleton.neuron_scores(lm, prompt, batches, [a.output for a in attentions])
    scores = group_scores(dimensions, attentions)
    log.info("scores of %d key/value groups from %d examples", len(scores), len(sample))
    write_parquet(scores, job.output[0])


@dataclasses.dataclass
class SearchResult:
    ratio: float
    rows: list[dict]  # one per probe
    model: PromptedLM  # pruned at `ratio`, or the unpruned one where no probe was accepted
    prompt: torch.Tensor  # its prompt: re-tuned at `ratio`, or the start

    @property
    def dev_accuracy(self) -> float | None:
        """The re-tuned dev accuracy at the chosen ratio; None when every probe was rejected."""
        return next((r["dev_accuracy"] for r in self.rows if r["keep_ratio"] == self.ratio), None)


def search_pruned(
    unpruned: PromptedLM,
    prune: Callable[[float], tuple[PromptedLM, int]],
    frames: Mapping[str, pd.DataFrame],
    task: Task,
    start: torch.Tensor,
    dense_dev: float,
    seed: int,
    retuning: Retuning,
    search: KeepRatioSearch,
    batch_size: int,
) -> SearchResult:
    """SKELETON's binary search: the smallest keep ratio whose model, `prune(ratio)` (and the units it keeps),
    stays within `margin` of `dense_dev` on dev once the prompt is re-tuned from `start`; `unpruned` with
    `start` where none does."""
    rows, tuned = [], {}

    def accepts(ratio: float) -> bool:
        started = time.perf_counter()
        pruned, kept = prune(ratio)
        dev = text_batches(pruned, frames["dev"], task.text_fields, batch_size, reuse=True)
        before = tuning.evaluate(pruned, start.to(pruned.device), dev)
        result = retune(pruned, frames, task, start, seed, retuning, batch_size, dev=dev)
        tuned[ratio] = result.prompt
        accepted = result.dev_accuracy >= dense_dev - search.margin - 1e-9
        rows.append(
            {
                "keep_ratio": ratio,
                "kept_units": kept,
                "dev_accuracy_before_retuning": before,
                "dev_accuracy": result.dev_accuracy,
                "accepted": accepted,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info(
            "keep %.2f: dev %.4f before re-tuning, %.4f after (dense %.4f): %s",
            ratio,
            before,
            result.dev_accuracy,
            dense_dev,
            "accepted" if accepted else "rejected",
        )
        return accepted

    ratio, _ = skeleton.search_keep_ratio(accepts, search.step)
    if ratio >= 1.0:
        log.warning(
            "no pruned model stays within %.3f of the dense dev accuracy; keeping the unpruned one",
            search.margin,
        )
        return SearchResult(ratio, rows, unpruned, start)
    return SearchResult(ratio, rows, prune(ratio)[0], tuned[ratio])


@stage
def skeleton_pruning(job: Job) -> None:
    """Binary search for the smallest global keep ratio whose re-tuned prompt stays within `margin` on dev."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    retuning, search = Retuning.from_params(job.params), KeepRatioSearch.from_params(job.params)
    seed, batch_size = job.params.seed, prompting.eval_batch_size
    frames = read_splits(split_inputs(job))
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    require_free_space(job.output.model, tensor_bytes(lm.model), "the pruned model (at most the dense one's size)")
    first = read_tensors(job.input.prompt)["prompt"]
    dense_text = stored_text(job.input.text, SPLITS, job.threads)
    dense_dev_batches = kept_batches(lm, frames["dev"], task, batch_size, dense_text["dev"])
    dense_dev = tuning.evaluate(lm, first.to(lm.device), dense_dev_batches)
    widths = [ffn_width(p) for p in lm.projections]
    layers, neurons = skeleton.order_of(read_parquet(job.input.scores), "attribution")
    width_multiple = getattr(job.params, "width_multiple", 1)

    def pruned_at(ratio: float) -> tuple[PromptedLM, int]:
        pruned, probe_widths = pruned_copy(lm, skeleton.global_keep(layers, neurons, widths, ratio, width_multiple))
        return pruned, int(sum(probe_widths))

    found = search_pruned(lm, pruned_at, frames, task, first, dense_dev, seed, retuning, search, batch_size)
    pruned, prompt = found.model, found.prompt
    kept_widths = [ffn_width(p) for p in pruned.projections]
    test = pruned.batches(frames["test"], task.text_fields, batch_size)  # text run per batch, not kept
    test_accuracy = tuning.evaluate(pruned, prompt.to(pruned.device), test)
    ends = [test[0], test[-1]]
    save_and_verify(pruned, prompt, kept_widths, ends, job.output.model, task, prompting, job.threads)
    # Re-tuning trains the prompt further; the dense model re-tuned alike separates that from pruning.
    control = retune(
        lm, frames, task, first, seed, retuning, batch_size, dev=dense_dev_batches, train_text=dense_text["train"]
    )
    control_test = accuracy(lm, control.prompt, frames["test"], task, batch_size, dense_text["test"])
    log.info("dense model re-tuned alike: dev %.4f, test %.4f", control.dev_accuracy, control_test)
    write_tensors({"prompt": prompt}, job.output.prompt)
    write_parquet(pd.DataFrame(found.rows).rename(columns={"kept_units": "kept_neurons"}), job.output.search)
    write_json(
        {
            "method": "skeleton",
            "task": task.name,
            "seed": seed,
            "keep_ratio": found.ratio,
            "kept_neurons": int(sum(kept_widths)),
            "total_neurons": int(sum(widths)),
            "widths": kept_widths,
            "width_multiple": width_multiple,
            "parameters": parameter_count(pruned.model),
            "dense_parameters": parameter_count(lm.model),
            "dense_dev_accuracy": dense_dev,
            "dev_accuracy": dense_dev if found.dev_accuracy is None else found.dev_accuracy,  # as searched
            "test_accuracy": test_accuracy,
            "dense_test_accuracy": accuracy(lm, first, frames["test"], task, batch_size, dense_text["test"]),
            "dense_retuned_dev_accuracy": control.dev_accuracy,
            "dense_retuned_test_accuracy": control_test,
            "probes": len(found.rows),
        },
        job.output.metrics,
    )


@stage
def skeleton_attention_pruning(job: Job) -> None:
    """Ours: on SKELETON's pruned model, the same search over the share of attention key/value groups kept.

    The prompt is re-tuned from SKELETON's (re-tuned) one; the margin is against the dense dev accuracy.
    """
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    retuning, search = Retuning.from_params(job.params), KeepRatioSearch.from_params(job.params)
    seed, batch_size = job.params.seed, prompting.eval_batch_size
    frames = read_splits(split_inputs(job))
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    groups = [a.n_groups for a in layer_attentions(lm.model)]
    require_free_space(job.output.model, tensor_bytes(lm.model), "the pruned model (at most SKELETON's size)")
    ffn = read_json(job.input.metrics)
    start = read_tensors(job.input.prompt)["prompt"]
    layers, units = skeleton.order_of(read_parquet(job.input.scores), "attribution")

    def pruned_at(ratio: float) -> tuple[PromptedLM, int]:
        model = copy.deepcopy(lm.model)
        kv_heads = prune_attention(model, skeleton.global_keep(layers, units, groups, ratio))
        return lm.with_model(model), int(sum(kv_heads))

    dense_dev = ffn["dense_dev_accuracy"]
    found = search_pruned(lm, pruned_at, frames, task, start, dense_dev, seed, retuning, search, batch_size)
    pruned, prompt = found.model, found.prompt
    kv_heads = [a.n_groups for a in layer_attentions(pruned.model)]
    test = pruned.batches(frames["test"], task.text_fields, batch_size)
    test_accuracy = tuning.evaluate(pruned, prompt.to(pruned.device), test)
    record_kv_heads(pruned.model, kv_heads)
    save_and_verify(pruned, prompt, ffn["widths"], [test[0], test[-1]], job.output.model, task, prompting, job.threads)
    write_tensors({"prompt": prompt}, job.output.prompt)
    write_parquet(pd.DataFrame(found.rows).rename(columns={"kept_units": "kept_groups"}), job.output.search)
    write_json(
        {
            **ffn,
            "method": "skeleton_attention",
            "attention_keep_ratio": found.ratio,
            "kept_groups": int(sum(kv_heads)),
            "total_groups": int(sum(groups)),
            "kv_heads": kv_heads,
            "parameters": parameter_count(pruned.model),
            "dev_accuracy": ffn["dev_accuracy"] if found.dev_accuracy is None else found.dev_accuracy,
            "test_accuracy": test_accuracy,
            "attention_probes": len(found.rows),
        },
        job.output.metrics,
    )


@stage
def skill_neuron_pruning(job: Job) -> None:
    """Wang et al.: keep the top `keep_share` skill neurons of each of the top `layer_share` layers, fold the
    rest at their baseline into the bias, remove them, re-tune the prompt."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    retuning, settings = Retuning.from_params(job.params), SkillPruning.from_params(job.params)
    seed, batch_size = job.params.seed, prompting.eval_batch_size
    frames = read_splits(split_inputs(job))
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    require_free_space(job.output.model, tensor_bytes(lm.model), "the pruned model (at most the dense one's size)")
    first = read_tensors(job.input.prompt)["prompt"]
    widths = [ffn_width(p) for p in lm.projections]
    ranking = read_parquet(job.input.ranking, columns=["layer", "neuron", "rank"]).sort_values("rank")
    layers = top_layers(len(widths), settings.layer_share)
    keep = skill_keep(ranking["layer"].to_numpy(), ranking["neuron"].to_numpy(), widths, layers, settings.keep_share)
    constant = job.wildcards.constant
    baseline = FROZEN_CONSTANTS[constant](read_parquet(Path(job.input.run) / "baseline.parquet"))
    pruned, kept_widths = pruned_copy(lm, keep, baseline)
    kept = {split: kept_batches(pruned, frames[split], task, batch_size) for split in ("dev", "test")}
    before = {split: tuning.evaluate(pruned, first.to(pruned.device), kept[split]) for split in kept}
    result = retune(pruned, frames, task, first, seed, retuning, batch_size, dev=kept["dev"])
    test_accuracy = tuning.evaluate(pruned, result.prompt.to(pruned.device), kept["test"])
    log.info(
        "skill-neuron pruning of layers %d-%d: test %.4f before re-tuning, %.4f after",
        layers[0],
        layers[-1],
        before["test"],
        test_accuracy,
    )
    ends = [kept["test"][0], kept["test"][-1]]
    save_and_verify(pruned, result.prompt, kept_widths, ends, job.output.model, task, prompting, job.threads)
    dense_text = stored_text(job.input.text, ["dev", "test"], job.threads)
    write_tensors({"prompt": result.prompt}, job.output.prompt)
    write_json(
        {
            "method": "skill_neurons",
            "constant": constant,
            "task": task.name,
            "seed": seed,
            "keep_share": settings.keep_share,
            "pruned_layers": layers,
            "kept_neurons": int(sum(kept_widths)),
            "total_neurons": int(sum(widths)),
            "widths": kept_widths,
            "parameters": parameter_count(pruned.model),
            "dense_parameters": parameter_count(lm.model),
            "dense_dev_accuracy": accuracy(lm, first, frames["dev"], task, batch_size, dense_text["dev"]),
            "dense_test_accuracy": accuracy(lm, first, frames["test"], task, batch_size, dense_text["test"]),
            "dev_accuracy_before_retuning": before["dev"],
            "test_accuracy_before_retuning": before["test"],
            "dev_accuracy": result.dev_accuracy,
            "test_accuracy": test_accuracy,
        },
        job.output.metrics,
    )


def selection_orders(
    scores: pd.DataFrame, ranking: pd.DataFrame, widths: Sequence[int], seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Global neuron orders (layer and neuron arrays, most important first) of every selection method."""
    orders = {name: skeleton.order_of(scores, name) for name in (*skeleton.SCORES, *skeleton.OUR_SCORES)}
    shuffled = random_order(widths, seed)
    orders["random"] = (shuffled["layer"].to_numpy(), shuffled["neuron"].to_numpy())
    ranking = ranking.sort_values("rank")
    orders["predictivity"] = (ranking["layer"].to_numpy(), ranking["neuron"].to_numpy())
    return {name: orders[name] for name in SELECTION_METHODS}


@stage
def selection_comparison(job: Job) -> None:
    """Test accuracy of the dense prompt on models pruned to each keep ratio by each selection method."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    seed, batch_size = job.params.seed, prompting.eval_batch_size
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    test = read_parquet(job.input.test)
    prompt = read_tensors(job.input.prompt)["prompt"]
    widths = [ffn_width(p) for p in lm.projections]
    orders = selection_orders(read_parquet(job.input.scores), read_parquet(job.input.ranking), widths, seed)
    dense = accuracy(lm, prompt, test, task, batch_size, stored_text(job.input.text, ["test"], job.threads)["test"])
    rows = [{"method": "dense", "keep_ratio": 1.0, "test_accuracy": dense}]
    for method, (layers, neurons) in orders.items():
        for ratio in job.params.keep_ratios:
            pruned, _ = pruned_copy(lm, skeleton.global_keep(layers, neurons, widths, ratio))
            value = accuracy(pruned, prompt, test, task, batch_size)
            log.info("%s, keep %.2f: test %.4f", method, ratio, value)
            rows.append({"method": method, "keep_ratio": ratio, "test_accuracy": value})
    write_parquet(pd.DataFrame(rows).assign(task=task.name, seed=seed), job.output[0])


@stage
def speed_benchmark(job: Job) -> None:
    """Dense and every task's pruned models side by side: forward time over batch sizes and lengths, memory.

    Dense is timed once, in the same rounds as all pruned models; each task's file holds dense and its own.
    """
    settings = SpeedBenchmark.from_params(job.params)
    set_threads(job.threads)
    device = pick_device(settings.device)
    dtypes = benchmark_dtypes(settings.dtypes, device)
    reference = Case(settings.reference_batch, settings.reference_length)
    cases = sweep_cases(settings.batch_sizes, settings.lengths, reference)
    tasks = list(job.params.tasks)
    variants = {"dense": job.input.dense} | {
        task_variant(task, name): path
        for name in SPEED_VARIANTS
        if name != "dense" and name in job.input.keys()
        for task, path in zip(tasks, job.input[name])  # one per task, none where the variant is off
    }
    started = time.perf_counter()
    table = benchmark(
        variants, "dense", cases, dtypes, settings.warmup, settings.repeats, device, job.threads, settings.peak_memory
    )
    log.info(
        "%d cases x %d models x %d dtypes on %s with %d threads in %.0f s:\n%s",
        len(cases),
        len(variants),
        len(dtypes),
        device,
        job.threads,
        time.perf_counter() - started,
        table[["variant", "dtype", "batch", "length", "median_ms", "speedup", "speedup_q1", "speedup_q3"]]
        .round(3)
        .to_string(),
    )
    table = table.assign(
        reference=[(b, n) == (reference.batch, reference.length) for b, n in zip(table["batch"], table["length"])]
    )
    for task, output in zip(tasks, job.output, strict=True):
        write_parquet(task_speeds(table, task), output)


def task_variant(task: str, variant: str) -> str:
    return f"{task}/{variant}"


def task_speeds(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Dense's rows and the task's pruned models', named without the task."""
    prefix = task_variant(task, "")
    rows = table[(table["variant"] == "dense") | table["variant"].str.startswith(prefix)]
    return rows.assign(variant=rows["variant"].str.removeprefix(prefix)).reset_index(drop=True)


@stage
def pruning_table(job: Job) -> None:
    """Per task and method: accuracy, neurons and parameters kept, speedup at the reference case per dtype."""
    rows = []
    per_task_skill = chunks(list(job.input.skill_neurons), len(job.params.tasks))
    for index, task in enumerate(job.params.tasks):
        speeds = read_parquet(job.input.speed[index])
        speeds = speeds[speeds["reference"]]
        skeleton_metrics = read_json(job.input.skeleton[index])
        dense = (
            skeleton_metrics["total_neurons"],
            skeleton_metrics["total_neurons"],
            skeleton_metrics["dense_parameters"],
            skeleton_metrics["dense_parameters"],
        )
        baseline = skeleton_metrics["dense_test_accuracy"]
        rows.append(table_row(task, "dense (prompt tuning)", baseline, None, *dense, speeds, "dense"))
        rows.append(
            table_row(
                task,
                "dense, prompt re-tuned alike (control)",
                skeleton_metrics["dense_retuned_test_accuracy"],
                baseline,
                *dense,
                speeds,
                "dense",
            )
        )
        # One pruned model per frozen constant; they share their widths, so the first one's speed is theirs.
        skill = [read_json(f) for f in per_task_skill[index]]
        methods = [(skill_method_name(m["constant"]), m, "skill_neurons") for m in skill]
        methods.append(("skeleton", skeleton_metrics, "skeleton"))
        if job.input.skeleton_attention:
            methods.append((ATTENTION_METHOD, read_json(job.input.skeleton_attention[index]), "skeleton_attention"))
        for method, metrics, variant in methods:
            row = table_row(
                task,
                method,
                metrics["test_accuracy"],
                baseline,
                metrics["kept_neurons"],
                metrics["total_neurons"],
                metrics["parameters"],
                metrics["dense_parameters"],
                speeds,
                variant,
            )
            if "kept_groups" in metrics:
                row[ATTENTION_KEPT] = round(100 * metrics["kept_groups"] / metrics["total_groups"], 1)
            rows.append(row)
    table = pd.DataFrame(rows)
    if ATTENTION_KEPT in table:  # only where the attention variant ran: every other model keeps all of it
        kept = table.pop(ATTENTION_KEPT).fillna(100.0)
        table.insert(table.columns.get_loc("FFN neurons kept (%)") + 1, ATTENTION_KEPT, kept)
    write_table(table, dict(job.output))


def skill_method_name(constant: str) -> str:
    """The pruning table's name of Wang et al.'s method with a frozen constant: plain for the authors' one."""
    return "skill_neurons" if constant == "prompt_mean" else f"skill_neurons ({CONSTANT_NAMES[constant]})"


def table_row(
    task: str,
    method: str,
    test_accuracy: float,
    dense_accuracy: float | None,
    kept: int,
    total: int,
    parameters: int,
    dense_parameters: int,
    speeds: pd.DataFrame,
    variant: str,
) -> dict:
    row = {
        "task": task,
        "method": method,
        "test acc (%)": round(100 * test_accuracy, 1),
        "change (points)": "" if dense_accuracy is None else f"{100 * (test_accuracy - dense_accuracy):+.1f}",
        "FFN neurons kept (%)": round(100 * kept / total, 1),
        "parameters (M)": round(parameters / 1e6, 1),
        "parameters kept (%)": round(100 * parameters / dense_parameters, 1),
    }
    for dtype, part in speeds[speeds["variant"] == variant].groupby("dtype"):
        speed = part.iloc[0]
        row[f"speedup {dtype}"] = (
            f"{speed['speedup']:.2f}x"
            if variant == "dense"
            else f"{speed['speedup']:.2f}x ({speed['speedup_q1']:.2f}-{speed['speedup_q3']:.2f})"
        )
    return row
