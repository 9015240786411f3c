"""Rules of ranking.smk: neuron scores per seed, seeds merged into rankings, Table 1, task specificity."""

from __future__ import annotations

import pandas as pd

from ..activation_store import read_examples
from ..data import Subtask, Task
from ..io import read_json, read_parquet, write_json, write_parquet
from ..ranking import merge_seeds, order_correlation, specificity_summary
from ..scores import (
    METRICS,
    majority_rate,
    predicted_classes,
    score_run,
    split_labels,
    subtask_counts,
    task_chance,
    top_neuron_accuracy,
)
from .common import Job, chance_columns, log, percent, stage, tasks_at_chance, write_table


def score(run_dir: str, task: Task, output: str) -> None:
    """Every neuron's scores of one run's activations (scores.score_run), to Parquet."""
    scores = score_run(run_dir, task)
    write_parquet(scores, output)
    best = scores.sort_values("predictivity", ascending=False).iloc[0]
    log.info(
        "top neuron layer %d #%d: dev %.4f, test %.4f",
        best["layer"],
        best["neuron"],
        best["predictivity"],
        best["test_predictivity"],
    )


@stage
def score_neurons(job: Job) -> None:
    """One seed: predictivity, Avg/Max baselines and auxiliary-metric correlations of every neuron."""
    score(job.input[0], Task.from_params(job.params), job.output[0])


@stage
def rank_neurons(job: Job) -> None:
    """Seeds merged into the predictivity, correlation and selectivity rankings and a Table-1 row."""
    task, seeds = Task.from_params(job.params), job.params.seeds
    per_seed = [read_parquet(f).assign(seed=s) for s, f in zip(seeds, job.input.scores)]
    scores = pd.concat(per_seed, ignore_index=True)
    names = [s.name for s in task.binary_subtasks()]
    ranking = merge_seeds(scores, "predictivity", names)
    keys = ["subtask", "layer", "neuron"]
    test = scores.groupby(keys)["test_predictivity"].mean()
    ranking["test_predictivity_mean"] = test.loc[pd.MultiIndex.from_frame(ranking[keys])].to_numpy()
    write_parquet(ranking, job.output.ranking)
    correlation = [merge_seeds(scores, f"corr_{metric}", names).assign(metric=metric) for metric in METRICS]
    write_parquet(pd.concat(correlation, ignore_index=True), job.output.correlation)
    write_parquet(merge_seeds(scores, "selectivity", names), job.output.selectivity)
    prompt_accuracy = pd.Series([read_json(f)["test_accuracy"] for f in job.input.metrics])
    neuron_accuracy = pd.Series([top_neuron_accuracy(d, task, ranking, s) for d, s in zip(job.input.runs, per_seed)])
    top = ranking.iloc[0]
    # The dev and test splits are the task's, the same for every seed: any run's examples carry their labels.
    examples = [read_examples(run) for run in job.input.runs]
    min_examples = job.params.min_subtask_examples
    summary = {
        "task": task.name,
        "seeds": list(seeds),
        "prompt_test_accuracy_mean": float(prompt_accuracy.mean()),
        "prompt_test_accuracy_std": float(prompt_accuracy.std(ddof=1)) if len(seeds) > 1 else 0.0,
        "top1_neuron_test_accuracy_mean": float(neuron_accuracy.mean()),
        "top1_neuron_test_accuracy_std": float(neuron_accuracy.std(ddof=1)) if len(seeds) > 1 else 0.0,
        "top1_layer": int(top["layer"]),
        "top1_neuron": int(top["neuron"]),
        "top1_dev_predictivity": float(top["mean"]),
        "n_neurons": int(len(ranking)),
        "per_seed_prompt_accuracy": prompt_accuracy.tolist(),
        "per_seed_top1_accuracy": neuron_accuracy.tolist(),
        "random_guess": 1 / len(task.labels),
        "test_majority_class": majority_rate(split_labels(examples[0], "test")),
        "one_class_seeds": one_class_seeds(task, seeds, examples),
        "min_subtask_examples": min_examples,
        "subtasks": [subtask_summary(task, s, ranking, examples[0], min_examples) for s in task.binary_subtasks()],
    }
    log.info("%s", summary)
    write_json(summary, job.output.summary)


def subtask_summary(
    task: Task, subtask: Subtask, ranking: pd.DataFrame, examples: pd.DataFrame, min_examples: int
) -> dict[str, object]:
    """The subtask's top neuron beside the share of its larger side, with its dev and test counts.

    A neuron that never crosses its baseline already scores the larger side's share: the top neuron of a
    lopsided subtask means little unless it beats that share.
    """
    top = ranking[ranking["subtask"] == subtask.name].iloc[0]
    row: dict[str, object] = {
        "subtask": subtask.name,
        "top1_layer": int(top["layer"]),
        "top1_neuron": int(top["neuron"]),
        "top1_dev_predictivity": float(top["mean"]),
        "top1_test_predictivity": float(top["test_predictivity_mean"]),
    }
    for split in ("dev", "test"):
        counts = subtask_counts(split_labels(examples, split), task, subtask)
        row |= {f"{split}_{key}": value for key, value in counts.items()}
    row["few_dev_examples"] = min(row["dev_positive"], row["dev_negative"]) < min_examples
    if row["few_dev_examples"]:
        log.warning(
            "task %s, subtask %s: split dev has %d positive and %d negative examples, fewer than"
            " ranking.min_subtask_examples = %d on a side; its top neurons' dev predictivity rests on them"
            " (majority class: %.1f%% of dev, %.1f%% of test)",
            task.name,
            subtask.name,
            row["dev_positive"],
            row["dev_negative"],
            min_examples,
            100 * row["dev_majority_class"],
            100 * row["test_majority_class"],
        )
    return row


def one_class_seeds(task: Task, seeds: list[int], examples: list[pd.DataFrame]) -> list[int]:
    """The seeds whose tuned prompt predicts one class for every test example, each named in the log.

    Such a prompt's test accuracy is that class's share of the test split, whatever its neurons encode.
    """
    stuck = []
    for seed, frame in zip(seeds, examples):
        classes = predicted_classes(frame, "test")
        if len(classes) == 1:
            log.warning(
                "task %s, seed %d: the tuned prompt predicts class %d (%r) for every test example; its test"
                " accuracy is that class's share of the test split, %.1f%%",
                task.name,
                seed,
                classes[0],
                task.label_words[classes[0]],
                100 * (split_labels(frame, "test") == classes[0]).mean(),
            )
            stuck.append(seed)
    return stuck


SUBTASKS_COLUMN = "subtasks: top-1 neuron vs majority class (dev / test, %)"


@stage
def table1(job: Job) -> None:
    """Prompt-tuning accuracy next to the top skill neuron's accuracy, per task (Wang et al. Table 1)."""
    rows = [read_json(f) for f in job.input]
    table = pd.DataFrame(
        [
            {
                "task": r["task"],
                "prompt tuning (test acc, %)": percent(r, "prompt_test_accuracy"),
                "one-class seeds": f"{len(r['one_class_seeds'])} of {len(r['seeds'])}",
                "top-1 skill neuron (test acc, %)": percent(r, "top1_neuron_test_accuracy"),
                **chance_columns(r),
                "top-1 neuron (layer, index)": f"({r['top1_layer']}, {r['top1_neuron']})",
                "neurons ranked": r["n_neurons"],
            }
            for r in rows
        ]
    )
    if any(len(r["subtasks"]) > 1 for r in rows):
        table[SUBTASKS_COLUMN] = [subtasks_cell(r["subtasks"]) if len(r["subtasks"]) > 1 else "" for r in rows]
    write_table(table, dict(job.output))


def subtasks_cell(subtasks: list[dict]) -> str:
    """Each subtask's top neuron beside its majority-class rate, and its dev counts where they are few."""
    parts = []
    for s in subtasks:
        text = (
            f"{s['subtask']}: top-1 {100 * s['top1_dev_predictivity']:.1f} / {100 * s['top1_test_predictivity']:.1f},"
            f" majority {100 * s['dev_majority_class']:.1f} / {100 * s['test_majority_class']:.1f}"
        )
        if s["few_dev_examples"]:
            text += f" (few dev examples: {s['dev_positive']} positive, {s['dev_negative']} negative)"
        parts.append(text)
    return "; ".join(parts)


@stage
def chance_table(job: Job) -> None:
    """Per task: the tuned prompt's mean test accuracy against a random guess (one-sided binomial test)."""
    summaries = [read_json(f) for f in job.input.summaries]
    sizes = [len(read_parquet(f, columns=["label"])) for f in job.input.tests]
    table = task_chance(summaries, sizes, job.params.alpha)
    if not table["above_chance"].all():
        log.warning(
            "at chance (p >= %g), left out of the task-similarity claims: %s",
            job.params.alpha,
            ", ".join(table.loc[~table["above_chance"], "task"]),
        )
    write_table(table, dict(job.output), significant=3)


@stage
def task_specificity(job: Job) -> None:
    """Spearman correlation of the predictivity orders of every pair of tasks (Wang et al. Fig. 5 and 14)."""
    rankings = {
        task: read_parquet(f, columns=["layer", "neuron", "rank"]) for task, f in zip(job.params.tasks, job.input)
    }
    table = order_correlation(rankings)
    log.info(
        "Spearman correlation of predictivity orders, all layers:\n%s",
        table[table["layer"] == -1].pivot(index="task_a", columns="task_b", values="spearman").round(3),
    )
    write_parquet(table, job.output[0])


@stage
def specificity_table(job: Job) -> None:
    """Per pair of tasks: the per-layer Spearman averaged over layers (the headline, Fig. 5) and the pooled one,
    and whether both tasks' prompts are above chance."""
    types = dict(zip(job.params.tasks, job.params.types))
    table = specificity_summary(read_parquet(job.input.specificity))
    table = table[table["task_a"] != table["task_b"]]
    table.insert(2, "same type", [types[a] == types[b] for a, b in zip(table["task_a"], table["task_b"])])
    at_chance = tasks_at_chance(job.input.chance)
    # A task at chance has no skill to compare: the reproduction table leaves its pairs out.
    table.insert(3, "both above chance", ~table["task_a"].isin(at_chance) & ~table["task_b"].isin(at_chance))
    log.info("task similarity:\n%s", table.round(3).to_string(index=False))
    write_table(table.round(4), dict(job.output))
