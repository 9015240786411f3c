"""Rules of ranking.smk: neuron scores per seed, seeds merged into rankings, Table 1, task specificity."""

from __future__ import annotations

import pandas as pd

from ..data import Task
from ..io import read_json, read_parquet, write_json, write_parquet
from ..ranking import merge_seeds, order_correlation, specificity_summary
from ..scores import METRICS, score_run, top_neuron_accuracy
from .common import Job, log, percent, stage, write_table


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
    }
    log.info("%s", summary)
    write_json(summary, job.output.summary)


@stage
def table1(job: Job) -> None:
    """Prompt-tuning accuracy next to the top skill neuron's accuracy, per task (Wang et al. Table 1)."""
    rows = [read_json(f) for f in job.input]
    table = pd.DataFrame(
        [
            {
                "task": r["task"],
                "prompt tuning (test acc, %)": percent(r, "prompt_test_accuracy"),
                "top-1 skill neuron (test acc, %)": percent(r, "top1_neuron_test_accuracy"),
                "top-1 neuron (layer, index)": f"({r['top1_layer']}, {r['top1_neuron']})",
                "neurons ranked": r["n_neurons"],
            }
            for r in rows
        ]
    )
    write_table(table, dict(job.output))


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
    """Per pair of tasks: the per-layer Spearman averaged over layers (the headline, Fig. 5) and the pooled one."""
    types = dict(zip(job.params.tasks, job.params.types))
    table = specificity_summary(read_parquet(job.input[0]))
    table = table[table["task_a"] != table["task_b"]]
    table.insert(2, "same type", [types[a] == types[b] for a, b in zip(table["task_a"], table["task_b"])])
    log.info("task similarity:\n%s", table.round(3).to_string(index=False))
    write_table(table.round(4), dict(job.output))
