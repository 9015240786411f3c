"""Rules of perturbation.smk: perturbation sweeps, neuronal importance, and the sweeps' table."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .. import perturbation
from ..architecture import ffn_width
from ..data import Task
from ..io import read_tensors, write_parquet
from ..prompting import load_prompted
from ..settings import Prompting, Sweep
from ..text_cache import stored_text, text_batches
from ..tuning import evaluate
from .common import Job, log, stage, write_table

ORDER_COLUMNS = ["layer", "neuron", "rank"]


@stage
def perturbation_sweep(job: Job) -> None:
    """One (evaluation task, seed): accuracy with the top-r% neurons of each source order perturbed.

    positions 'prompt' perturbs the soft-prompt positions only, 'all' every token; the evaluation task's
    selectivity-index order joins the source orders (Wang et al. Fig. 15).
    """
    task, prompting, sweep = (
        Task.from_params(job.params),
        Prompting.from_params(job.params),
        Sweep.from_params(job.params),
    )
    seed = int(job.wildcards.seed)
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    test = pd.read_parquet(job.input.test)
    test = test.iloc[: sweep.max_examples] if sweep.max_examples else test
    # Tokenised once for every point of the sweep; the text is never perturbed at prompt positions, so its
    # keys/values serve every point, and with `positions: all` it must be run anew each time.
    text_only_once = sweep.positions == "prompt"
    stored = stored_text(job.input.text, ["test"])["test"] if text_only_once else None
    batches = text_batches(lm, test, task.text_fields, prompting.eval_batch_size, stored, reuse=text_only_once)
    prompt = read_tensors(job.input.prompt)["prompt"].to(lm.device)
    orders = {
        source: pd.read_parquet(path, columns=ORDER_COLUMNS)
        for source, path in zip(job.params.sources, job.input.rankings)
    }
    orders[perturbation.SELECTIVITY_ORDER] = pd.read_parquet(job.input.selectivity, columns=ORDER_COLUMNS)
    orders[perturbation.RANDOM_ORDER] = perturbation.random_order([ffn_width(p) for p in lm.projections], seed)
    readers = {
        mode: read
        for mode, read in (
            ("baseline", perturbation.neuron_baseline),
            ("position_baseline", perturbation.position_baseline),
        )
        if mode in sweep.modes
    }
    baseline_table = pd.read_parquet(Path(job.input.run) / "baseline.parquet") if readers else None
    baselines = {mode: read(baseline_table) for mode, read in readers.items()}
    started = time.perf_counter()
    result = perturbation.sweep(
        lambda: evaluate(lm, prompt, batches),
        lm.projections,
        lm.device,
        orders,
        sweep.rates,
        sweep.modes,
        sweep.sigma,
        baselines,
        seed,
        lm.prompt_positions if text_only_once else None,
    )
    log.info("%d sweep points on %d test examples in %.0f s", len(result), len(test), time.perf_counter() - started)
    result.insert(0, "seed", seed)
    result.insert(0, "task", task.name)
    write_parquet(result, job.output[0])


def read_sweeps(files) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@stage
def neuronal_importance(job: Job) -> None:
    """Neuronal importance per (evaluation, source, seed, mode): the area between random and source curves."""
    table = perturbation.neuronal_importance(read_sweeps(job.input))
    write_parquet(table, job.output[0])
    for mode in table["mode"].unique():
        log.info(
            "neuronal importance (%s), z-scored per evaluation task:\n%s",
            mode,
            perturbation.importance_matrix(table, mode).round(2),
        )


@stage
def perturbation_table(job: Job) -> None:
    """Per evaluation task, mode, rate and order: accuracy over seeds and its drop, beside the random order's."""
    write_table(perturbation.sweep_summary(read_sweeps(job.input)).round(4), dict(job.output))
