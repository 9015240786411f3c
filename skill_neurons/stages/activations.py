"""Rules of activations.smk: every neuron at every prompt position, to Parquet."""

from __future__ import annotations

import time

import torch

from .. import activations
from ..architecture import ffn_width
from ..data import SPLITS, Task
from ..io import read_tensors, require_free_space
from ..prompting import PromptedLM, load_prompted
from ..settings import Dump, Prompting
from ..text_cache import text_batches
from .common import Job, log, read_splits, split_inputs, stage
from .text import stored_text


def dump(job: Job, lm: PromptedLM, task: Task, prompt: torch.Tensor, out_dir: str) -> None:
    """Activations of the job's splits through `prompt` (of any length: a hard prompt's own) into `out_dir`."""
    prompting, settings = Prompting.from_params(job.params), Dump.from_params(job.params)
    frames = read_splits(split_inputs(job))
    lm = lm.with_prompt_length(len(prompt))
    widths = [ffn_width(p) for p in lm.projections]
    expected = activations.check_budget(
        len(frames["dev"]) + len(frames["test"]), lm.n_prompt, widths, settings.dtype, settings.max_gb
    )
    require_free_space(out_dir, expected, "the activation dump")
    started = time.perf_counter()
    text = stored_text(job.input.text or None, SPLITS, job.threads)
    batches = {s: text_batches(lm, frames[s], task.text_fields, prompting.eval_batch_size, text[s]) for s in SPLITS}
    meta = activations.dump_activations(
        lm, prompt, batches["train"], {s: batches[s] for s in ("dev", "test")}, out_dir, settings.dtype
    )
    log.info(
        "activations: expected %.3f GB uncompressed, %.3f GB on disk, %.0f s",
        expected / 1e9,
        meta["bytes_on_disk"] / 1e9,
        time.perf_counter() - started,
    )


@stage
def dump_activations(job: Job) -> None:
    """One seed's tuned prompt: train baseline, dev and test activations."""
    dump_prompt(job, Task.from_params(job.params))


def dump_prompt(job: Job, task: Task) -> None:
    """Activations through the tuned prompt of `job.input.prompt` into the job's folder."""
    lm = load_prompted(job.input.model, task, Prompting.from_params(job.params), job.threads)
    dump(job, lm, task, read_tensors(job.input.prompt)["prompt"], job.output[0])
