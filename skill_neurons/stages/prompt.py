"""Rules of prompt.smk: prompt tuning of one seed."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .. import tuning
from ..data import SPLITS, Task
from ..io import write_json, write_parquet, write_tensors
from ..prompting import load_prompted
from ..settings import Prompting, Tuning
from ..text_cache import text_batches
from .common import Job, log, read_splits, split_inputs, stage
from .text import stored_text


def tune_and_write(job: Job, task: Task, seed: int, checkpoint: str | None = None) -> None:
    """Tune the prompt of `task` with `seed`, evaluate it on test, write prompt, curve and metrics."""
    prompting, settings = Prompting.from_params(job.params), Tuning.from_params(job.params)
    splits = split_inputs(job)
    frames = read_splits(splits)
    lm = load_prompted(job.input.model, task, prompting, job.threads)
    text = stored_text(job.input.text, SPLITS, job.threads)
    dev = text_batches(lm, frames["dev"], task.text_fields, prompting.eval_batch_size, text["dev"], reuse=True)
    fingerprint = None
    if checkpoint is not None:  # what a resumed run must share with the one that saved the checkpoint
        fingerprint = tuning.run_fingerprint(job.input.model, task, [splits[s] for s in SPLITS])
        fingerprint["prompting"] = json.dumps(dataclasses.asdict(prompting), sort_keys=True)
    started = time.perf_counter()
    result = tuning.tune_prompt(
        lm,
        frames["train"],
        dev,
        task.text_fields,
        seed=seed,
        **dataclasses.asdict(settings),
        checkpoint=checkpoint,
        train_text=text["train"],
        fingerprint=fingerprint,
    )
    seconds = time.perf_counter() - started
    test = text_batches(lm, frames["test"], task.text_fields, prompting.eval_batch_size, text["test"])
    test_accuracy = tuning.evaluate(lm, result.prompt.to(lm.device), test)
    log.info(
        "seed %d: dev %.4f (step %d), test %.4f, %.0f s",
        seed,
        result.dev_accuracy,
        result.best_step,
        test_accuracy,
        seconds,
    )
    write_tensors({"prompt": result.prompt}, job.output.prompt)
    write_parquet(result.curve, job.output.curve)
    write_json(
        {
            "seed": seed,
            "dev_accuracy": result.dev_accuracy,
            "test_accuracy": test_accuracy,
            "best_step": result.best_step,
            "steps": result.steps,
            "train_seconds": seconds,
            "autocast": str(lm.autocast),
            "resumed_from_step": result.resumed_from,
        },
        job.output.metrics,
    )
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)  # the outputs now hold everything it had


@stage
def tune_prompt(job: Job) -> None:
    """Prompt tuning of one seed: only the soft prompt trains, the model stays frozen."""
    tune_and_write(job, Task.from_params(job.params), int(job.wildcards.seed), checkpoint=job.params.checkpoint)
