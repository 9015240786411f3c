"""Rules of transfer.smk: zero-shot prompt transfer between tasks with the same label words, and its indicator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import transfer
from ..data import Task
from ..io import atomic_path, read_parquet, read_tensors, write_parquet
from ..settings import Prompting
from .common import Job, log, markdown_table, stage, tasks_at_chance


@stage
def prompt_transfer(job: Job) -> None:
    """Each source task's prompt (this seed) on the target's test split, and its activation overlap with the
    target's own prompt, over all neurons and over the target's top skill neurons."""
    # Here, not at the top: the transferability table of this module runs no model.
    from ..architecture import ffn_width
    from ..prompting import load_prompted
    from ..text_cache import text_batches
    from ..tuning import evaluate
    from .text import stored_text

    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    test = read_parquet(job.input.test)
    batches = list(
        text_batches(
            lm,
            test,
            task.text_fields,
            prompting.eval_batch_size,
            stored_text(job.input.text or None, ["test"], job.threads)["test"],
            reuse=True,
        )
    )
    own = read_tensors(job.input.prompt)["prompt"]
    own_state = transfer.activation_states(lm, own)
    own_accuracy = evaluate(lm, own.to(lm.device), batches)
    widths = [ffn_width(p) for p in lm.projections]
    skill = transfer.top_share_mask(
        read_parquet(job.input.ranking, columns=["layer", "neuron", "rank"]), widths, job.params.skill_share
    )
    rows = []
    for source, path in zip(job.params.sources, job.input.sources):
        prompt = read_tensors(path)["prompt"]
        state = transfer.activation_states(lm, prompt)
        rows.append(
            {
                "source": source,
                "target": task.name,
                "seed": int(job.wildcards.seed),
                "transfer_accuracy": evaluate(lm, prompt.to(lm.device), batches),
                "own_accuracy": own_accuracy,
                "overlap_all": transfer.overlap_rate(state, own_state),
                "overlap_skill": transfer.overlap_rate(state, own_state, skill),
            }
        )
        log.info("%s -> %s: %s", source, task.name, rows[-1])
    write_parquet(pd.DataFrame(rows), job.output[0])


@stage
def transferability_table(job: Job) -> None:
    """Per task pair: transfer accuracy and overlap rates (mean over seeds); their Spearman over pairs (§6.2)."""
    pairs = pd.concat([read_parquet(f) for f in job.input.pairs], ignore_index=True)
    means = pairs.groupby(["source", "target"], as_index=False)[
        ["transfer_accuracy", "own_accuracy", "overlap_all", "overlap_skill"]
    ].mean()
    at_chance = tasks_at_chance(job.input.chance)
    correlations = transfer.indicator_correlations(pairs, at_chance)
    write_parquet(means, job.output.parquet)
    write_parquet(correlations, job.output.correlations)
    text = [
        f"# Prompt transferability ({job.wildcards.model})",
        "",
        "Zero-shot transfer between tasks with the same label words; overlap = Su et al.'s overlapping rate of"
        " activated neurons of the two prompts, over all neurons and over the target's top"
        f" {job.params.skill_share:.0%} skill neurons (Wang et al. §6.2). Means over seeds.",
        "",
        markdown_table(means, 3),
        "Spearman correlation with the transfer accuracy over task pairs"
        " (NaN below 3 pairs; paper: 0.53 all neurons, 0.71 skill neurons); 'above chance' leaves out the pairs"
        " of a task whose tuned prompt is at chance on this model"
        + (f" ({', '.join(at_chance)})" if at_chance else " (none is)")
        + ":",
        "",
        markdown_table(correlations, 3),
    ]
    with atomic_path(job.output.markdown) as tmp:
        Path(tmp).write_text("\n".join(text))
    with atomic_path(job.output.html) as tmp:
        Path(tmp).write_text(means.to_html(index=False, border=0) + correlations.to_html(index=False, border=0))
