"""Rules of words.smk: the vocabulary tokens each top skill neuron responds to (Wang et al. Table 2)."""

from __future__ import annotations

import pandas as pd

from ..data import Task
from ..io import atomic_path, read_parquet, write_parquet
from ..prompting import load_prompted
from ..settings import Prompting, WordSelectivity
from ..word_selectivity import top_neurons, word_selectivity_table
from .common import Job, log, markdown_table, stage


@stage
def word_selectivity(job: Job) -> None:
    """Top and bottom tokens of the task's top neurons by embedding cosine and by mean activation over train."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    settings = WordSelectivity.from_params(job.params)
    neurons = top_neurons(read_parquet(job.input.ranking), settings.top_neurons)
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    texts = lm.render(read_parquet(job.input.train, columns=list(task.text_fields)), task.text_fields)
    table = word_selectivity_table(lm, neurons, texts, settings.min_count, prompting.eval_batch_size)
    log.info("%s: %d neurons over %d training texts, %d rows", task.name, len(neurons), len(texts), len(table))
    write_token_table(table.assign(task=task.name)[["task", *table.columns]], dict(job.output))


def write_token_table(table: pd.DataFrame, outputs: dict[str, str]) -> None:
    """The table as Parquet (tokens as decoded), Markdown and HTML (tokens quoted, so that a leading space or a
    newline shows; '|' escaped in Markdown)."""
    write_parquet(table, outputs["parquet"])
    shown = table.assign(token=table["token"].map(repr))
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(markdown_table(shown.assign(token=shown["token"].str.replace("|", "\\|"))))
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(shown.to_html(index=False, border=0))
