"""Rules of aux_metrics.smk: Zhao, Wang et al.'s auxiliary metrics on generation tasks, and our causal test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import aux_metrics, completions, plots, reproduction
from ..activation_store import LayerActivations, read_layer
from ..architecture import ffn_width
from ..devices import pick_device
from ..generation import GenerationTask, in_example_order, split_generation
from ..io import (
    atomic_path,
    read_json,
    read_parquet,
    read_tensors,
    require_free_space,
    write_json,
    write_parquet,
    write_tensors,
)
from ..models import load_model, set_threads
from ..perturbation import Perturbation, perturbed
from ..plan import expected_bytes
from ..prompting import PromptedLM
from ..settings import GenerationTuning
from .common import Job, log, markdown_table, stage
from .plots import style as plot_style

SPLIT = "validation"  # the paper ranks and reads neurons on the validation split


def task_of(job: Job) -> GenerationTask:
    return GenerationTask.from_entry(job.wildcards.aux, job.params.task)


def load_lm(job: Job, n_tokens: int) -> PromptedLM:
    """The causal model of the job's input, read through an `n_tokens` soft prompt (no template or label words)."""
    set_threads(job.threads)
    model, tokenizer = load_model(job.input.model, pick_device(job.params.device))
    lm = PromptedLM(model, tokenizer, "{instruction}", (), n_tokens, precision=job.params.precision)
    if lm.kind != "causal":
        raise ValueError(f"aux_metrics needs a causal LM: {job.input.model} is a masked LM")
    return lm


@stage
def split_generation_data(job: Job) -> None:
    """Train, dev and validation examples of one generation task."""
    params = job.params
    caps = {"train": params.max_train, "dev": params.max_dev, "validation": params.max_validation}
    splits = split_generation(task_of(job), params.data_root, caps, params.split_seed)
    for split, frame in splits.items():
        write_parquet(frame, job.output[split])
        log.info("%s: %d examples", split, len(frame))


@stage
def tune_generation(job: Job) -> None:
    """A soft prompt after the instruction, tuned on the completion loss (AdamW, early stop on dev loss)."""
    settings = GenerationTuning.from_params(job.params)
    task = task_of(job)
    lm = load_lm(job, settings.n_tokens)
    train, dev = read_parquet(job.input.train), read_parquet(job.input.dev)
    prompt, curve = completions.tune_generation_prompt(lm, task, train, dev, int(job.wildcards.seed), settings)
    write_tensors({"prompt": prompt}, job.output.prompt)
    write_parquet(curve, job.output.curve)
    best = curve.loc[curve["dev_loss"].idxmin()]
    write_json(
        {"best_dev_loss": float(best["dev_loss"]), "best_step": int(best["step"]), "steps": int(curve["step"].max())},
        job.output.metrics,
    )


@stage
def dump_generation(job: Job) -> None:
    """Every neuron at every prompt position on the validation split, with each example's loss and confidence."""
    prompt = read_tensors(job.input.prompt)["prompt"]
    lm = load_lm(job, len(prompt))
    frame = read_parquet(job.input.validation)
    widths = [ffn_width(p) for p in lm.projections]
    size = expected_bytes(len(frame), len(prompt), widths, job.params.dtype)
    require_free_space(job.output[0], size, "the activation dump")
    metrics = completions.dump_generation(
        lm, prompt, task_of(job), frame, job.output[0], job.params.eval_batch_size, job.params.dtype
    )
    summary = {"loss": metrics["loss"].mean()}
    if "correct" in metrics:
        summary["accuracy"] = metrics["correct"].mean()
    log.info("validation: %s", ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))


def layers(run: str, n_layers: int) -> Iterator[tuple[int, LayerActivations]]:
    """The validation activations of a dump, one layer at a time."""
    for layer in range(n_layers):
        yield layer, read_layer(run, SPLIT, layer)


def n_layers(run: str) -> int:
    return len(list((Path(run) / SPLIT).glob("layer=*")))


def examples_with_metrics(task: GenerationTask, validation: pd.DataFrame, run: str) -> pd.DataFrame:
    """The validation examples in the dump's order, with instruction, completion, the model's metrics and each
    configured metric as a column named by its label."""
    model_metrics = read_parquet(Path(run) / "examples.parquet")
    examples = in_example_order(validation, model_metrics["example"])
    examples = examples.assign(instruction=task.instructions(examples), completion=task.completions(examples))
    specs = task.metric_specs + ([task.flag_spec] if task.flag_spec is not None else [])
    with_metrics = aux_metrics.with_metric_columns(examples, specs, model_metrics, SPLIT)
    extra = [c for c in ("loss", "confidence", "correct") if c in model_metrics and c not in with_metrics]
    return with_metrics.assign(**{c: model_metrics[c].to_numpy() for c in extra})


SHOWN_COLUMNS = ("instruction", "completion")  # beside the metrics, in the interpretation tables


@stage
def rank_by_metrics(job: Job) -> None:
    """Per metric: every neuron's max-over-positions |r|, the top-k and the threshold, their extreme examples."""
    task, params, run = task_of(job), job.params, job.input.run
    examples = examples_with_metrics(task, read_parquet(job.input.validation), run)
    count = n_layers(run)
    rankings, tops, interpretations, activations, flags = [], [], [], [], []
    thresholds = {}
    flag_label = task.flag_spec.label if task.flag_spec is not None else None
    for spec in task.metric_specs:
        metric = examples[spec.label].to_numpy(np.float64)
        ranking = aux_metrics.rank_by_metric(layers(run, count), metric)
        top, thresholds[spec.label] = aux_metrics.top_neurons(ranking, params.top_k)
        log.info("%s: top-%d threshold %.3f (top neuron r %.3f)", spec.label, params.top_k, *top["corr"].iloc[[-1, 0]])
        at_best = aux_metrics.activations_at_best_position(top, layers(run, count))
        shown = examples[["example", *SHOWN_COLUMNS, *dict.fromkeys(s.label for s in task.metric_specs)]]
        if flag_label is not None and flag_label not in shown:
            shown = shown.assign(**{flag_label: examples[flag_label]})
        if task.group_by and task.group_by not in shown:
            shown = shown.assign(**{task.group_by: examples[task.group_by]})
        interpretation = aux_metrics.extreme_examples(top, at_best, shown, params.extremes)
        rankings.append(ranking.assign(metric=spec.label))
        tops.append(top.assign(metric=spec.label))
        interpretations.append(interpretation.assign(metric=spec.label))
        activations.append(
            at_best.reset_index().melt("example", var_name="rank", value_name="activation").assign(metric=spec.label)
        )
        if flag_label is not None:
            stats = aux_metrics.shortcut_statistics(
                at_best[1].to_numpy(), examples[flag_label].to_numpy() > 0, params.extremes, params.permutation_draws
            )
            flags.append(
                stats.assign(metric=spec.label, flag=flag_label, layer=top["layer"][0], neuron=top["neuron"][0])
            )
    write_parquet(pd.concat(rankings, ignore_index=True), job.output.ranking)
    write_parquet(pd.concat(tops, ignore_index=True), job.output.top)
    write_parquet(pd.concat(activations, ignore_index=True), job.output.activations)
    write_parquet(examples.drop(columns=list(SHOWN_COLUMNS)), job.output.examples)
    write_json({"top_k": params.top_k, "thresholds": thresholds}, job.output.thresholds)
    write_parquet(pd.concat(flags, ignore_index=True) if flags else pd.DataFrame(), job.output.flags)
    interpretation = pd.concat(interpretations, ignore_index=True)
    write_parquet(interpretation, job.output.interpretation)
    with atomic_path(job.output.markdown) as tmp:
        Path(tmp).write_text(interpretation_markdown(interpretation, job.wildcards.aux))
    with atomic_path(job.output.html) as tmp:
        Path(tmp).write_text(interpretation.to_html(index=False, border=0))


def interpretation_markdown(interpretation: pd.DataFrame, task: str) -> str:
    """One section per metric and top neuron: its highest and lowest examples, one line each."""
    lines = [f"# Interpretation: {task}", ""]
    for (metric, rank), part in interpretation.groupby(["metric", "rank"], sort=False):
        first = part.iloc[0]
        lines += [
            f"## {metric}: rank {rank}, layer {first['layer']} neuron {first['neuron']} (position {first['position']})",
            "",
        ]
        table = part[["side", "order", "activation", "instruction", "completion", metric]].copy()
        table["instruction"] = table["instruction"].str.replace("\n", " / ")
        lines += [markdown_table(table, 4), ""]
    return "\n".join(lines)


def random_neurons(top: dict[int, torch.Tensor], widths: dict[int, int], seed: int) -> dict[int, torch.Tensor]:
    """As many neurons per layer as `top` has there, drawn at random from the layer's other neurons."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for layer, chosen in top.items():
        others = np.setdiff1d(np.arange(widths[layer]), chosen.numpy())
        drawn[layer] = torch.tensor(np.sort(rng.choice(others, size=len(chosen), replace=False)), dtype=torch.long)
    return drawn


def groups_of(task: GenerationTask, examples: pd.DataFrame, causal_groups) -> np.ndarray:
    """The group label of each example for the causal table: a column's value, a 0/1 metric, or 'all'."""
    spec = aux_metrics.MetricSpec.parse(causal_groups) if causal_groups is not None else task.flag_spec
    if spec is None:
        return np.full(len(examples), "all", dtype=object)
    if spec.kind == "column" and spec.equals is None and not pd.api.types.is_numeric_dtype(examples[spec.name]):
        return examples[spec.name].astype(str).to_numpy()
    values = aux_metrics.metric_values(spec, examples, None, SPLIT)
    return np.where(values > 0, spec.label, f"not {spec.label}").astype(object)


@stage
def causal_test(job: Job) -> None:
    """Loss (and choice accuracy) per group with the top-k neurons of a metric perturbed, against k random ones."""
    task, params, run = task_of(job), job.params, job.input.run
    seed = int(job.wildcards.seed)
    prompt = read_tensors(job.input.prompt)["prompt"]
    lm = load_lm(job, len(prompt))
    validation = read_parquet(job.input.validation)
    examples = in_example_order(validation, read_parquet(Path(run) / "examples.parquet")["example"])
    spec = task.metric_specs[params.causal_metric]
    top = read_parquet(job.input.top)
    top = top[top["metric"] == spec.label]
    chosen = {
        int(layer): torch.tensor(part["neuron"].to_numpy(), dtype=torch.long) for layer, part in top.groupby("layer")
    }
    widths = {layer: ffn_width(lm.projections[layer]) for layer in chosen}  # GPT-2's Conv1D has no in_features
    baseline = None
    if params.mode == "position_baseline":
        baseline = {layer: torch.from_numpy(read_layer(run, SPLIT, layer).prompt.mean(0)) for layer in chosen}
    groups = groups_of(task, examples, params.causal_groups)
    batches = completions.task_batches(lm, task, examples, params.eval_batch_size)
    conditions = [("none", 0, {}), ("top", 0, chosen)]
    conditions += [("random", d, random_neurons(chosen, widths, seed * 1000 + d)) for d in range(params.random_draws)]
    rows = []
    for perturbed_set, draw, neurons in conditions:
        generator = torch.Generator(device=lm.device).manual_seed(seed * 1000 + draw)
        perturbation = Perturbation(
            params.mode,
            neurons,
            params.sigma,
            baseline,
            generator,
            lm.prompt_positions,
            noise_shared_across_tokens=False,
        )
        with perturbed(lm.projections, perturbation), torch.no_grad():
            loss = per_example_loss(lm, prompt, batches, examples["example"].to_numpy())
            correct = (
                completions.choice_accuracy(lm, prompt, task, examples, params.eval_batch_size)
                if params.causal_accuracy and task.has_choices
                else np.full(len(examples), np.nan)
            )
        for group in pd.unique(groups):
            members = groups == group
            rows.append(
                {
                    "seed": seed,
                    "draw": draw,
                    "perturbed": perturbed_set,
                    "group": group,
                    "n_examples": int(members.sum()),
                    "loss": float(loss[members].mean()),
                    "accuracy": float(np.mean(correct[members])),
                }
            )
        log.info("%s draw %d: loss %.4f", perturbed_set, draw, loss.mean())
    table = pd.DataFrame(rows).assign(metric=spec.label, mode=params.mode, k=len(top))
    write_parquet(table, job.output[0])


def per_example_loss(lm: PromptedLM, prompt: torch.Tensor, batches, order: np.ndarray) -> np.ndarray:
    """Each example's completion loss, in the order of `order` (example ids)."""
    values = {}
    for batch in batches:
        for example, loss in zip(batch.examples.tolist(), completions.completion_loss(lm, prompt, batch).tolist()):
            values[example] = loss
    return np.array([values[e] for e in order], dtype=np.float64)


def mean_sd(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


@stage
def aux_metrics_table(job: Job) -> None:
    """Per task: validation loss and accuracy, each metric's top-k threshold (mean ± sd over seeds), the flag's
    counts among the top neuron's extreme examples, and the causal test per group (top - random)."""
    params = job.params
    rows, flag_rows, causal_rows = [], [], []
    # The inputs are listed per task, then per seed (the rule's expand over AUX_TASKS and AUX_SEEDS).
    runs = [(task, seed) for task in params.tasks for seed in params.seeds]
    files = zip(runs, job.input.thresholds, job.input.examples, job.input.flags, job.input.causal)
    for (task_name, seed), thresholds_file, examples_file, flags_file, causal_file in files:
        examples = read_parquet(examples_file)
        for metric, threshold in read_json(thresholds_file)["thresholds"].items():
            rows.append(
                {
                    "task": task_name,
                    "seed": seed,
                    "metric": metric,
                    "threshold": threshold,
                    "loss": examples["loss"].mean(),
                    "accuracy": examples["correct"].mean() if "correct" in examples else np.nan,
                }
            )
        flags = read_parquet(flags_file)
        if len(flags):
            flag_rows.append(flags.assign(task=task_name, seed=seed))
        causal_rows.append(read_parquet(causal_file).assign(task=task_name))
    thresholds = pd.DataFrame(rows)
    summary = (
        thresholds.groupby(["task", "metric"], sort=False)
        .agg(
            threshold=("threshold", mean_sd),
            accuracy=("accuracy", mean_sd),
            loss=("loss", mean_sd),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    flags = pd.concat(flag_rows, ignore_index=True) if flag_rows else pd.DataFrame()
    causal = pd.concat(causal_rows, ignore_index=True)
    causal_table = causal_differences(causal)
    write_parquet(summary, job.output.parquet)
    write_parquet(thresholds, job.output.thresholds)
    write_parquet(flags, job.output.flags)
    write_parquet(causal_table, job.output.causal)
    sections = [
        "# Auxiliary metrics (Zhao, Wang et al. 2025)",
        "",
        "## Top-k thresholds, validation loss and accuracy",
        "",
        markdown_table(summary),
        "",
    ]
    if len(flags):
        shown = flags[
            [
                "task",
                "seed",
                "metric",
                "flag",
                "layer",
                "neuron",
                "side",
                "k",
                "count",
                "base_rate",
                "expected",
                "p_permutation",
                "p_hypergeometric",
            ]
        ]
        sections += ["## The flag among the top neuron's extreme examples", "", markdown_table(shown, 3), ""]
    sections += [
        "## Causal test (ours): top-k neurons perturbed at the prompt positions vs k random ones",
        "",
        markdown_table(causal_table, 3),
        "",
    ]
    with atomic_path(job.output.markdown) as tmp:
        Path(tmp).write_text("\n".join(sections))
    with atomic_path(job.output.html) as tmp:
        Path(tmp).write_text("\n".join(f.to_html(index=False, border=0) for f in (summary, flags, causal_table)))


def causal_differences(causal: pd.DataFrame) -> pd.DataFrame:
    """Per task, metric and group: the change from the unperturbed loss (and accuracy) with the top-k set and with
    the random sets, mean ± sd over seeds and draws (`aux_metrics.causal_summary`)."""
    parts = []
    for (task, metric, mode), part in causal.groupby(["task", "metric", "mode"], sort=False):
        clean = part[part["perturbed"] == "none"].set_index(["seed", "group"])
        changed = part[part["perturbed"] != "none"].copy()
        reference = clean.loc[list(zip(changed["seed"], changed["group"]))]
        changed["loss_change"] = changed["loss"].to_numpy() - reference["loss"].to_numpy()
        changed["accuracy_change"] = changed["accuracy"].to_numpy() - reference["accuracy"].to_numpy()
        for value in ("loss_change", "accuracy_change"):
            if changed[value].isna().all():
                continue
            summary = aux_metrics.causal_summary(changed, value)
            parts.append(summary.assign(task=task, metric=metric, mode=mode, value=value))
    columns = ["task", "metric", "mode", "value", "group"]
    table = pd.concat(parts, ignore_index=True)
    return table[columns + [c for c in table.columns if c not in columns]]


@stage
def plot_metric_correlations(job: Job) -> None:
    """Every neuron's |r| with each auxiliary metric, the top-k threshold marked (Zhao et al. Fig. 4, 6, 7)."""
    plots.correlation_histogram(
        job.input.ranking, job.input.thresholds, job.output[0], bins=job.params.bins, **plot_style(job)
    )


@stage
def plot_metric_neurons(job: Job) -> None:
    """Each metric's top neuron: its validation activation density by group (Zhao et al. Fig. 2, 3, 5)."""
    plots.metric_neuron_density(
        job.input.activations, job.input.examples, job.params.groups, job.output[0], **plot_style(job)
    )


@stage
def aux_reproduction_table(job: Job) -> None:
    """The auxiliary-metric claims (aux.*): the paper's threshold, ours (mean ± sd over seeds), what differs."""
    params = job.params
    claims = [c for c in reproduction.load_claims(job.input.claims) if c["id"].startswith("aux.")]
    ours = reproduction.aux_thresholds(
        read_parquet(job.input.thresholds), {(task, metric): name for task, metric, name in params.claims}, params.top_k
    )
    differences = reproduction.aux_settings_differences(
        params.n_tokens,
        params.seeds,
        {"train": params.max_train, "validation": params.max_validation},
        params.precision,
    )
    table = reproduction.reproduction_table(claims, ours, job.wildcards.model, differences)
    write_parquet(table, job.output.parquet)
    with atomic_path(job.output.markdown) as tmp:
        Path(tmp).write_text(reproduction.reproduction_markdown(table, f"Auxiliary metrics: {job.wildcards.model}"))
    with atomic_path(job.output.html) as tmp:
        Path(tmp).write_text(table.to_html(index=False, border=0))
