"""Rules of text.smk: the task's text store encoded once, and released after its last reader (text_cache.py)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from transformers import AutoConfig

from ..architecture import model_kind
from ..data import SPLITS, Task
from ..io import require_free_space, write_json
from ..prompting import load_prompted
from ..settings import Prompting
from ..text_cache import (
    SplitText,
    TextTicket,
    encode_split,
    ensure_store,
    read_text_cache,
    release_store,
    store_bytes,
    write_text_cache,
)
from ..tuning import run_fingerprint
from .common import Job, log, read_splits, split_inputs, stage


def store_fingerprint(model: str, splits: Mapping[str, str], params: Mapping[str, object]) -> dict[str, str]:
    """What the store is encoded from: the model's and the splits' contents, the task, and the rule's params."""
    settings = json.dumps(params, sort_keys=True, default=list)
    return {
        **run_fingerprint(model, Task.from_params(params), [splits[s] for s in SPLITS]),
        "params": hashlib.sha256(settings.encode()).hexdigest(),
    }


def check_inputs(ticket: TextTicket) -> TextTicket:
    """The ticket, if the model, data and settings it names are still those its store was encoded from."""
    if store_fingerprint(ticket.model, ticket.splits, ticket.params) != ticket.fingerprint:
        raise RuntimeError(
            f"the model, data or settings of {ticket.store} changed since its ticket was written:"
            " rerun encode_text (snakemake --forcerun encode_text)"
        )
    return ticket


def encode_store(ticket: TextTicket, threads: int) -> None:
    """Encode every split of the ticket's task into its store."""
    task, prompting = Task.from_params(ticket.params), Prompting.from_params(ticket.params)
    lm = load_prompted(ticket.model, task, prompting, threads)
    frames = read_splits(ticket.splits)
    kv_dtype = str(ticket.params.get("text_dtype", "float32"))
    require_free_space(ticket.store, store_bytes(lm, frames, task.text_fields, kv_dtype), "the task's text states")
    started = time.perf_counter()
    encoded = {name: encode_split(lm, frames[name], task.text_fields, prompting.eval_batch_size) for name in SPLITS}
    write_text_cache(encoded, ticket.store, kv_dtype)
    log.info(
        "text of %d examples encoded in %.0f s, %.2f GB",
        sum(len(f) for f in frames.values()),
        time.perf_counter() - started,
        Path(ticket.store).stat().st_size / 1e9,
    )


@stage
def encode_text(job: Job) -> None:
    """Every split's text states under the frozen model, for all the prompts of the task, and their ticket."""
    params = {key: value for key, value in job.params.items() if key != "store"}
    splits = split_inputs(job)
    kind = model_kind(AutoConfig.from_pretrained(job.input.model))
    store = job.params.store if kind == "causal" else None
    fingerprint = store_fingerprint(job.input.model, splits, params)
    ticket = TextTicket(store, job.input.model, dict(splits), params, fingerprint)
    if store is None:
        log.info("a %s model reads the prompt inside the text: no text states to share", kind)
    else:
        encode_store(ticket, job.threads)
    ticket.write(job.output[0])


def stored_text(ticket_file: str | None, splits: Sequence[str], threads: int = 1) -> dict[str, SplitText | None]:
    """The stored text of `splits` (encoded again if it was released), or None for each where there is none:
    no ticket (a control with its own weights) or a masked LM."""
    ticket = ensure_store(ticket_file, lambda t: encode_store(check_inputs(t), threads)) if ticket_file else None
    if ticket is None or ticket.store is None:
        return dict.fromkeys(splits)
    return read_text_cache(ticket.store, splits)


@stage
def release_text(job: Job) -> None:
    """Remove the task's text store once every job that reads it is done (activations.keep_text_states false)."""
    freed = release_store(job.input.ticket)
    log.info("text store of %s released: %.2f GB freed", job.wildcards.task, freed / 1e9)
    write_json({"store": TextTicket.read(job.input.ticket).store, "bytes_freed": freed}, job.output[0])
