"""Rules of controls.smk: the top-1 neuron found without a tuned prompt or without pre-training (Table 3).

The model stages import the model side of the library inside their functions: transformers costs about
7 s a job, which the many small scoring jobs of this file need not pay.
"""

from __future__ import annotations

import pandas as pd

from ..data import Task
from ..io import read_json, write_json, write_parquet, write_tensors
from ..ranking import merge_seeds
from ..scores import score_run, top_neuron_accuracy
from ..settings import Prompting
from .common import Job, chance_columns, chunks, log, percent, stage, write_table


@stage
def random_model(job: Job) -> None:
    """The model's architecture and tokenizer with random weights."""
    from ..controls import save_random_model

    seed = int(job.wildcards.seed)
    save_random_model(job.input[0], job.output[0], seed)
    log.info("%s: the architecture of %s with random weights (seed %d)", job.output[0], job.input[0], seed)


@stage
def dump_control(job: Job) -> None:
    """A control's prompt and its activations, captured exactly as for a tuned prompt (one model load for both).

    The prompt: random vectors, N(0, init_std^2) drawn with the seed (Wang et al.'s initialisation, whatever
    `prompt.init` the tuned prompts used), or the input embeddings of the hard prompt.
    """
    from ..controls import hard_prompt_embeddings
    from ..prompting import load_prompted
    from ..tuning import init_prompt
    from .activations import dump

    params, task = job.params, Task.from_params(job.params)
    lm = load_prompted(job.input.model, task, Prompting.from_params(params), job.threads)
    if job.wildcards.control == "hard_prompt":
        prompt = hard_prompt_embeddings(lm, params.hard_prompt)
        log.info("hard prompt %r: %d tokens", params.hard_prompt, len(prompt))
    else:
        prompt = init_prompt(lm, "normal", params.init_std, int(job.wildcards.seed))
    write_tensors({"prompt": prompt}, job.output.prompt)
    dump(job, lm, task, prompt, job.output.activations)


@stage
def score_control(job: Job) -> None:
    """A control's neuron scores and the test accuracy of its top-1 neuron(s), as for Table 1."""
    task, seed, run_dir = Task.from_params(job.params), int(job.wildcards.seed), job.input[0]
    scores = score_run(run_dir, task)
    ranking = merge_seeds(scores.assign(seed=seed), "predictivity", [s.name for s in task.binary_subtasks()])
    top = ranking.iloc[0]
    summary = {
        "task": task.name,
        "seed": seed,
        "top1_test_accuracy": top_neuron_accuracy(run_dir, task, ranking, scores),
        "top1_dev_predictivity": float(top["mean"]),
        "top1_layer": int(top["layer"]),
        "top1_neuron": int(top["neuron"]),
        "random_guess": 1 / len(task.labels),
    }
    log.info("%s", summary)
    write_parquet(scores, job.output.scores)
    write_json(summary, job.output.summary)


@stage
def controls_table(job: Job) -> None:
    """Top-1 neuron test accuracy per task: chance levels, each control, the tuned prompt (Wang et al. Table 3)."""
    tasks, controls = job.params.tasks, job.params.controls
    # Each control's inputs run over tasks, then its seeds: one list of seed files per task.
    per_control = {name: chunks(list(job.input[name]), len(tasks)) for name in controls}
    rows = []
    for index, task in enumerate(tasks):
        tuned = read_json(job.input.tuned[index])
        # The tuned prompt's rank summary, so that Table 1 and Table 3 read their chance levels from one place.
        row = {"task": task, **chance_columns(tuned)}
        for name in controls:
            trials = [read_json(f) for f in per_control[name][index]]
            row[f"{name.replace('_', ' ')} (%)"] = mean_sd([t["top1_test_accuracy"] for t in trials])
        row["tuned prompt (%)"] = percent(tuned, "top1_neuron_test_accuracy")
        rows.append(row)
    write_table(pd.DataFrame(rows), dict(job.output))


def mean_sd(values: list[float]) -> str:
    """'mean ± sd (n=k)' in percent; one trial reads as its value alone."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    series = 100 * pd.Series(values)
    return f"{series.mean():.1f} ± {series.std(ddof=1):.1f} (n={len(values)})"
