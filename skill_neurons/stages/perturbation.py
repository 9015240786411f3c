"""Rules of perturbation.smk: perturbation sweeps, neuronal importance, and the sweeps' table."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .. import sweep_tables
from ..data import Task
from ..io import read_parquet, read_tensors, write_parquet
from ..settings import Prompting, Sweep
from .common import Job, log, stage, write_table

ORDER_COLUMNS = ["layer", "neuron", "rank"]


@stage
def perturbation_sweep(job: Job) -> None:
    """One (evaluation task, seed): accuracy with the top-r% neurons of each source order perturbed.

    Each mode acts at `positions` (a prompt-only mode at the prompt positions) with neurons chosen by
    `scope`; the evaluation task's selectivity-index order joins the source orders (Wang et al. Fig. 15).
    """
    # Here, not at the top: the table jobs of this module read sweeps without loading torch and transformers.
    from .. import perturbation
    from ..architecture import ffn_width
    from ..prompting import load_prompted

    task, prompting, sweep = (
        Task.from_params(job.params),
        Prompting.from_params(job.params),
        Sweep.from_params(job.params),
    )
    seed = int(job.wildcards.seed)
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    test = read_parquet(job.input.test)
    test = test.iloc[: sweep.max_examples] if sweep.max_examples else test
    prompt = read_tensors(job.input.prompt)["prompt"].to(lm.device)
    orders = {
        source: read_parquet(path, columns=ORDER_COLUMNS)
        for source, path in zip(job.params.sources, job.input.rankings)
    }
    orders[sweep_tables.SELECTIVITY_ORDER] = read_parquet(job.input.selectivity, columns=ORDER_COLUMNS)
    orders[sweep_tables.RANDOM_ORDER] = perturbation.random_order([ffn_width(p) for p in lm.projections], seed)
    baselines = read_baselines(job.input.run, sweep.modes)
    by_positions: dict[str, list[str]] = {}
    for mode in sweep.modes:
        by_positions.setdefault(perturbation.mode_positions(mode, sweep.positions), []).append(mode)
    results = []
    for positions, modes in by_positions.items():
        started = time.perf_counter()
        result = perturbation.sweep(
            evaluation(job, lm, task, prompting, prompt, test, at_prompt=positions == "prompt"),
            lm.projections,
            lm.device,
            orders,
            sweep.rates,
            modes,
            sweep.sigma,
            baselines,
            seed,
            lm.prompt_positions if positions == "prompt" else None,
            scope=sweep.scope,
            noise_shared_across_tokens=sweep.noise_shared_across_tokens,
        )
        log.info(
            "%s: %d sweep points on %d test examples in %.0f s",
            ", ".join(modes),
            len(result),
            len(test),
            time.perf_counter() - started,
        )
        results.append(result.assign(positions=positions, scope=sweep.scope))
    result = pd.concat(results, ignore_index=True)
    result.insert(0, "seed", seed)
    result.insert(0, "task", task.name)
    write_parquet(result, job.output[0])


def evaluation(job: Job, lm, task: Task, prompting: Prompting, prompt, test: pd.DataFrame, at_prompt: bool):
    """The accuracy function of a sweep, its test batches tokenised once for every point.

    At the prompt positions the text is never perturbed, so its keys/values (stored, or run once) serve
    every point. At every token the text runs anew each time, in one forward with the prompt, so that
    noise shared across an example's tokens is one vector for text and prompt alike.
    """
    from ..text_cache import text_batches
    from ..tuning import evaluate
    from .text import stored_text

    stored = stored_text(job.input.text, ["test"], job.threads)["test"] if at_prompt else None
    batches = text_batches(lm, test, task.text_fields, prompting.eval_batch_size, stored, reuse=at_prompt)
    if at_prompt:
        return lambda: evaluate(lm, prompt, batches)
    return lambda: evaluate(lm, prompt, batches, one_forward=True)


def read_baselines(run_dir: str, modes) -> dict:
    """The per-layer baselines the 'baseline' and 'position_baseline' modes set neurons to, if asked for."""
    from .. import perturbation

    readers = {"baseline": perturbation.neuron_baseline, "position_baseline": perturbation.position_baseline}
    wanted = [mode for mode in modes if mode in readers]
    if not wanted:
        return {}
    table = read_parquet(Path(run_dir) / "baseline.parquet")
    return {mode: readers[mode](table) for mode in wanted}


def read_sweeps(files) -> pd.DataFrame:
    return pd.concat([read_parquet(f) for f in files], ignore_index=True)


@stage
def neuronal_importance(job: Job) -> None:
    """Neuronal importance per (evaluation, source, seed, mode): the area between random and source curves."""
    table = sweep_tables.neuronal_importance(read_sweeps(job.input))
    write_parquet(table, job.output[0])
    for mode in table["mode"].unique():
        log.info(
            "neuronal importance (%s), z-scored per evaluation task:\n%s",
            mode,
            sweep_tables.importance_matrix(table, mode).round(2),
        )


@stage
def perturbation_table(job: Job) -> None:
    """Per evaluation task, mode, rate and order: accuracy over seeds and its drop, beside the random order's."""
    write_table(sweep_tables.sweep_summary(read_sweeps(job.input)).round(4), dict(job.output))
