"""Rules of label_words.smk: prompts tuned with random label words find the same neurons (Wang et al. §4.4).

The model stages import the model side of the library inside their functions: transformers costs about
7 s a job, which the scoring jobs of this file need not pay.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..data import Task
from ..io import read_json, read_parquet, write_json
from ..ranking import merge_seeds, order_correlation
from .common import Job, chunks, log, stage, write_table
from .ranking import score


def with_label_words(task: Task, words_file: str) -> Task:
    """The task read through the label words a random-label-word job drew."""
    return dataclasses.replace(task, label_words=tuple(read_json(words_file)["label_words"]))


@stage
def draw_label_words(job: Job) -> None:
    """Random label words of one draw: common one-token whole words of the task's training text."""
    from transformers import AutoTokenizer

    from .. import label_words

    task, draw = Task.from_params(job.params), int(job.wildcards.draw)
    train = read_parquet(job.input.train, columns=list(task.text_fields))
    texts = [" ".join(str(value) for value in row) for row in train.itertuples(index=False)]
    tokenizer = AutoTokenizer.from_pretrained(job.input.model)
    words = label_words.draw_label_words(tokenizer, texts, len(task.labels), draw, task.label_words)
    log.info("draw %d: label words %s in place of %s", draw, list(words), list(task.label_words))
    write_json({"draw": draw, "label_words": list(words), "original": list(task.label_words)}, job.output[0])


@stage
def tune_random_words(job: Job) -> None:
    """Prompt tuning of the label-word seed with one draw of random label words."""
    from .prompt import tune_and_write

    tune_and_write(job, with_label_words(Task.from_params(job.params), job.input.words), job.params.seed)


@stage
def dump_random_words(job: Job) -> None:
    """Activations through the prompt tuned with random label words."""
    from .activations import dump_prompt

    dump_prompt(job, with_label_words(Task.from_params(job.params), job.input.words))


@stage
def score_random_words(job: Job) -> None:
    """Neuron scores of one random-label-word draw."""
    score(job.input[0], Task.from_params(job.params), job.output[0])


def independence_row(
    task: str, seed: int, original: str, draws: list[str], words: list[str], other_seed: str | None = None
) -> dict:
    """Spearman correlation of each draw's predictivity order with the original words' order, and between draws.

    `other_seed`: the scores of another tuning seed with the original words; their Spearman with the
    original's is the scale a draw's value is read against (how much a new seed alone moves the order).
    """
    drawn = [read_json(w) for w in words]
    scores = {"original": read_parquet(original)}
    if other_seed is not None:
        scores["other seed"] = read_parquet(other_seed)
    scores |= {f"draw{d['draw']}": read_parquet(f) for f, d in zip(draws, drawn)}
    subtasks = list(scores["original"]["subtask"].unique())
    rankings = {name: merge_seeds(frame.assign(seed=seed), "predictivity", subtasks) for name, frame in scores.items()}
    table = order_correlation(rankings)
    overall = table[(table["layer"] == -1) & (table["task_a"] != table["task_b"])]
    is_draw = overall["task_b"].str.startswith("draw")
    with_original = overall[(overall["task_a"] == "original") & is_draw]["spearman"]
    between = overall[overall["task_a"].str.startswith("draw") & is_draw]["spearman"]
    seeds = overall[(overall["task_a"] == "original") & (overall["task_b"] == "other seed")]["spearman"]
    return {
        "task": task,
        "draws": len(draws),
        "label words": "; ".join("/".join(d["label_words"]) for d in drawn),
        "spearman with original (mean)": round(float(with_original.mean()), 3),
        "spearman with original (min)": round(float(with_original.min()), 3),
        "spearman between draws (mean)": round(float(between.mean()), 3),
        "spearman between two seeds, original words": round(float(seeds.iloc[0]), 3) if len(seeds) else None,
    }


@stage
def label_word_independence(job: Job) -> None:
    """Spearman correlation between the orders of the random-label-word draws and of the original words."""
    tasks, seed = job.params.tasks, job.params.seed
    draws, words = chunks(list(job.input.draws), len(tasks)), chunks(list(job.input.words), len(tasks))
    other_seed = list(job.input.other_seed) or [None] * len(tasks)
    rows = []
    for index, task in enumerate(tasks):
        rows.append(
            independence_row(task, seed, job.input.original[index], draws[index], words[index], other_seed[index])
        )
        log.info("%s: %s", task, rows[-1])
    write_table(pd.DataFrame(rows), dict(job.output))
