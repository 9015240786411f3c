"""Rules of methods.smk: LoRA and BitFit in place of the prompt, and the perturbation sweep on the tuned models."""

from __future__ import annotations

import pandas as pd
import torch

from .. import perturbation, sweep_tables, tuning_methods
from ..architecture import ffn_width
from ..data import Task
from ..io import read_json, read_parquet, read_tensors, write_json, write_parquet, write_tensors
from ..prompting import PromptedLM, load_prompted
from ..settings import MethodTuning, Prompting
from ..tuning import evaluate
from .common import Job, log, stage, write_table
from .perturbation import ORDER_COLUMNS, read_sweeps


def method_lm(job: Job) -> tuple[Task, PromptedLM, dict[str, int]]:
    """The task's model prepared for the job's method, read without a prompt (0 vectors)."""
    task, prompting = Task.from_params(job.params), Prompting.from_params(job.params)
    lm = load_prompted(job.input.model, task, prompting, job.threads).with_prompt_length(0)
    counts = tuning_methods.apply_method(lm.model, job.wildcards.method, job.params.lora_rank, job.params.lora_alpha)
    return task, lm, counts


@stage
def tune_method(job: Job) -> None:
    """The model tuned with LoRA (attention only) or BitFit (biases only) on the task; FFN weights frozen."""
    task, lm, counts = method_lm(job)
    settings = MethodTuning.from_params(job.params)
    train, dev, test = (read_parquet(job.input[split]) for split in ("train", "dev", "test"))
    dev_batches = lm.batches(dev, task.text_fields, job.params.eval_batch_size)
    state, curve = tuning_methods.tune_model(lm, train, dev_batches, task.text_fields, job.params.seed, settings)
    tuning_methods.load_trainable_state(lm.model, state)
    empty = torch.zeros(0, lm.hidden_size, device=lm.device)
    test_batches = lm.batches(test, task.text_fields, job.params.eval_batch_size)
    metrics = {
        "task": task.name,
        "method": job.wildcards.method,
        **counts,
        "dev_accuracy": float(curve["dev_accuracy"].max()),
        "test_accuracy": evaluate(lm, empty, test_batches, one_forward=True),
        "steps": int(curve["step"].max()),
    }
    log.info("%s on %s: %s", job.wildcards.method, task.name, metrics)
    write_tensors(state, job.output.weights)
    write_parquet(curve, job.output.curve)
    write_json(metrics, job.output.metrics)


@stage
def method_sweep(job: Job) -> None:
    """Accuracy of the tuned model with the top-r% neurons of each prompt-found order perturbed (noise, every
    token, per layer: Wang et al.'s setting) and of a random order."""
    task, lm, _ = method_lm(job)
    tuning_methods.load_trainable_state(lm.model, read_tensors(job.input.weights))
    test = read_parquet(job.input.test)
    test = test.iloc[: job.params.max_examples] if job.params.max_examples else test
    batches = lm.batches(test, task.text_fields, job.params.eval_batch_size)
    empty = torch.zeros(0, lm.hidden_size, device=lm.device)
    orders = {s: read_parquet(p, columns=ORDER_COLUMNS) for s, p in zip(job.params.sources, job.input.rankings)}
    seed = job.params.seed
    orders[sweep_tables.RANDOM_ORDER] = perturbation.random_order([ffn_width(p) for p in lm.projections], seed)
    result = perturbation.sweep(
        lambda: evaluate(lm, empty, batches, one_forward=True),
        lm.projections,
        lm.device,
        orders,
        job.params.rates,
        ["noise"],
        job.params.sigma,
        {},
        seed,
        None,
        scope="per_layer",
        noise_shared_across_tokens=True,
    )
    result = result.assign(positions="all", scope="per_layer", method=job.wildcards.method)
    result.insert(0, "seed", seed)
    result.insert(0, "task", task.name)
    write_parquet(result, job.output[0])


@stage
def methods_table(job: Job) -> None:
    """Per tuning method: the sweeps' drops beside random, and the neuronal importance of each prompt order."""
    sweeps = read_sweeps(job.input.sweeps)
    summary = pd.concat(
        [sweep_tables.sweep_summary(part).assign(method=method) for method, part in sweeps.groupby("method")]
    )
    importance = pd.concat(
        [sweep_tables.neuronal_importance(part).assign(method=method) for method, part in sweeps.groupby("method")]
    )
    tuned = pd.DataFrame([read_json(f) for f in job.input.metrics])
    write_parquet(importance, job.output.importance)
    write_parquet(tuned, job.output.tuned)
    write_table(summary.round(4), {k: job.output[k] for k in ("parquet", "markdown", "html")})
