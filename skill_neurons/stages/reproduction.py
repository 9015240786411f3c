"""Rules of reproduction.smk: the papers' numbers beside ours."""

from __future__ import annotations

from pathlib import Path

from .. import reproduction
from ..io import atomic_path, read_json, read_parquet, write_parquet
from .common import Job, log, stage, tasks_at_chance


@stage
def reproduction_table(job: Job) -> None:
    """One row per claim of the papers: its number, ours, the model, and what this run does differently."""
    params = job.params
    claims = reproduction.load_claims(job.input.claims)
    skeleton = dict(zip(params.pruning_tasks, (read_json(f) for f in job.input.skeleton)))
    ours = reproduction.measure_all(
        table1=[read_json(f) for f in job.input.table1],
        controls=read_parquet(job.input.controls),
        control_seeds=params.control_seeds,
        perturbation=read_parquet(job.input.perturbation),
        specificity=read_parquet(job.input.specificity),
        task_types=dict(zip(params.tasks, params.types)),
        label_words=read_parquet(job.input.label_words) if job.input.label_words else None,
        pruning=read_parquet(job.input.pruning) if job.input.pruning else None,
        skeleton_metrics=skeleton,
        transferability=read_parquet(job.input.transferability) if job.input.transferability else None,
        at_chance=tasks_at_chance(job.input.chance),
    )
    differences = reproduction.settings_differences(
        n_tokens=params.n_tokens,
        seeds=params.seeds,
        data_caps={"train": params.max_train, "dev": params.max_dev, "test": params.max_test},
        perturbation_positions=params.positions,
        perturbation_scope=params.scope,
        perturbation_examples=params.sweep_examples,
        label_word_draws=params.draws,
        keep_share=params.keep_share,
        layer_share=params.layer_share,
        speed_reference={"batch": params.reference_batch, "length": params.reference_length},
        precision=params.precision,
    )
    table = reproduction.reproduction_table(claims, ours, job.wildcards.model, differences)
    if unclaimed := reproduction.unclaimed(claims, ours):
        log.info("measured but claimed by no paper: %s", ", ".join(unclaimed))
    write_parquet(table, job.output.parquet)
    with atomic_path(job.output.markdown) as tmp:
        Path(tmp).write_text(reproduction.reproduction_markdown(table, f"Reproduction: {job.wildcards.model}"))
    with atomic_path(job.output.html) as tmp:
        Path(tmp).write_text(table.to_html(index=False, border=0))
