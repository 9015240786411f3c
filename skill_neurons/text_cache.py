"""The text's keys/values and input Avg/Max activations, computed once per task and shared by every prompt.

A causal LM reads ``text p_1..p_l``: nothing in the text depends on the prompt, so every seed, control
prompt and label-word draw of a task can run its prompt on the same stored text. One safetensors file
per task holds, for each split, ``{split}.examples`` and ``{split}.lengths`` (tokens per example) and,
per layer L, ``{split}.keys.L`` / ``{split}.values.L`` (tokens, heads, head_dim: the examples' unpadded
text one after the other) and ``{split}.input_avg.L`` / ``{split}.input_max.L`` (examples, neurons).
A masked LM puts the prompt inside the text: its ticket names no store and every stage runs the text.

The store is not a workflow file: encode_text writes it with a ticket (`TextTicket`, the workflow file its
readers depend on) that says how to encode it again, and release_text removes it after its last reader,
so that a later new reader rebuilds it instead of Snakemake rerunning every job that read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DynamicCache

from .batches import Batch
from .io import atomic_path, read_json, reading, write_json
from .prompting import PromptedLM

log = logging.getLogger(__name__)

PARTS = ("keys", "values", "input_avg", "input_max")


@dataclass
class SplitText:
    """One split's stored text states, looked up by example id."""

    examples: np.ndarray  # (N,) example ids in storage order
    lengths: np.ndarray  # (N,) text tokens of each example
    keys: list[torch.Tensor]  # per layer (tokens, heads, head_dim)
    values: list[torch.Tensor]
    input_avg: list[torch.Tensor]  # per layer (N, D)
    input_max: list[torch.Tensor]
    _row: dict[int, int] = field(init=False, repr=False)
    _start: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._row = {int(e): i for i, e in enumerate(self.examples)}
        self._start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def attach(self, batch: Batch) -> Batch:
        """Give `batch` its text keys/values (left-padded like its tokens) and input Avg/Max from the store."""
        wanted = batch.examples.tolist()
        missing = [e for e in wanted if e not in self._row]
        if missing:
            raise KeyError(f"text cache has no example {missing[0]}: it was encoded from other splits")
        rows = np.array([self._row[e] for e in wanted])
        lengths = batch.attention_mask.sum(1).cpu().numpy()
        if not np.array_equal(lengths, self.lengths[rows]):
            raise ValueError(
                "text cache lengths differ from this batch's tokens: it was encoded with another"
                " template, tokenizer or data.max_field_tokens"
            )
        size, width = batch.attention_mask.shape
        # Flat positions: stored tokens of row i go to the last lengths[i] slots of batch row i.
        source = np.concatenate([np.arange(self._start[r], self._start[r] + n) for r, n in zip(rows, lengths)])
        target = np.concatenate([i * width + np.arange(width - n, width) for i, n in enumerate(lengths)])
        source, target = torch.from_numpy(source), torch.from_numpy(target)
        device = batch.attention_mask.device
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(zip(self.keys, self.values)):
            padded = []
            for stored in (keys, values):
                flat = stored.new_zeros(size * width, *stored.shape[1:])
                flat[target] = stored[source]
                padded.append(flat.view(size, width, *stored.shape[1:]).transpose(1, 2).to(device))
            cache.update(padded[0], padded[1], layer)
        batch.prefix_cache = cache
        index = torch.from_numpy(rows)
        batch.input_avg = [a[index].to(device) for a in self.input_avg]
        batch.input_max = [m[index].to(device) for m in self.input_max]
        return batch

    def attached(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """The batches with their text attached one at a time, released once the next is asked for."""
        for batch in batches:
            yield self.attach(batch)
            batch.prefix_cache = batch.input_avg = batch.input_max = None


@torch.no_grad()
def encode_split(lm: PromptedLM, frame: pd.DataFrame, text_fields: Sequence[str], batch_size: int) -> SplitText:
    """Run the text of every example once and keep each one's unpadded keys/values and input Avg/Max."""
    examples, lengths, parts = [], [], {part: [] for part in PARTS}
    for batch in lm.batches(frame, text_fields, batch_size):
        cache, input_avg, input_max = lm.encode_text(batch)
        batch_lengths = batch.attention_mask.sum(1).tolist()
        width = batch.attention_mask.shape[1]
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        per_layer = {
            "keys": [
                torch.cat([k[i, :, width - n :].transpose(0, 1) for i, n in enumerate(batch_lengths)]).cpu()
                for k, _ in layers
            ],
            "values": [
                torch.cat([v[i, :, width - n :].transpose(0, 1) for i, n in enumerate(batch_lengths)]).cpu()
                for _, v in layers
            ],
            "input_avg": [a.cpu() for a in input_avg],
            "input_max": [m.cpu() for m in input_max],
        }
        for part in PARTS:
            parts[part].append(per_layer[part])
        examples.extend(batch.examples.tolist())
        lengths.extend(batch_lengths)
    joined = {part: [torch.cat(per_batch) for per_batch in zip(*parts[part])] for part in PARTS}
    return SplitText(np.array(examples, dtype=np.int64), np.array(lengths, dtype=np.int64), **joined)


KV_STORAGE = {"float32": torch.float32, "float16": torch.float16}
FP16_MAX = float(torch.finfo(torch.float16).max)


def store_bytes(
    lm: PromptedLM, frames: Mapping[str, pd.DataFrame], text_fields: Sequence[str], kv_dtype: str = "float32"
) -> int:
    """The bytes `write_text_cache` will take for `frames`: every split's tokens times the keys/values of one
    token, and every example's input Avg/Max, measured on the first example (tokenising all, running one)."""
    first = next(frame for frame in frames.values() if len(frame))
    one = encode_split(lm, first.head(1), text_fields, 1)
    tokens = int(one.lengths.sum())
    per_token = sum(kv_storage(t, kv_dtype).element_size() * t.numel() for t in one.keys + one.values) // tokens
    per_example = sum(t.element_size() * t.numel() for t in one.input_avg + one.input_max)
    total_tokens = sum(
        int(batch.attention_mask.sum()) for frame in frames.values() for batch in lm.batches(frame, text_fields, 64)
    )
    return total_tokens * per_token + sum(len(frame) for frame in frames.values()) * per_example


def write_text_cache(splits: dict[str, SplitText], path: str | Path, kv_dtype: str = "float32") -> None:
    """Save the splits' text states.

    `kv_dtype` "float16" stores fp32 keys/values in half the bytes (read back as fp32, rounded to ~3 significant
    digits); keys/values computed in a 2-byte dtype (bf16 autocast) and the input Avg/Max are stored as they are.
    """
    tensors: dict[str, torch.Tensor] = {}
    computed = ""
    for name, split in splits.items():
        tensors[f"{name}.examples"] = torch.from_numpy(split.examples)
        tensors[f"{name}.lengths"] = torch.from_numpy(split.lengths)
        for part in PARTS:
            for layer, tensor in enumerate(getattr(split, part)):
                if part in ("keys", "values"):
                    computed = str(tensor.dtype).removeprefix("torch.")
                    tensor = kv_storage(tensor, kv_dtype)
                tensors[f"{name}.{part}.{layer}"] = tensor.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"splits": ",".join(splits), "kv_computed_dtype": computed})


def kv_storage(tensor: torch.Tensor, kv_dtype: str) -> torch.Tensor:
    """Keys or values in their storage dtype: fp32 ones halved where `kv_dtype` asks, if fp16 can hold them."""
    if tensor.dtype != torch.float32 or KV_STORAGE[kv_dtype] == torch.float32:
        return tensor
    peak = float(tensor.abs().max()) if tensor.numel() else 0.0
    if peak > FP16_MAX:
        raise ValueError(
            f"config key activations.text_dtype: a text key/value of {peak:.3g} exceeds float16's range"
            f" ({FP16_MAX:.0f}); store the text states in float32"
        )
    return tensor.to(torch.float16)


def read_text_cache(path: str | Path, splits: Sequence[str]) -> dict[str, SplitText]:
    """The stored text states of `splits`."""
    with reading(path), safe_open(str(path), framework="pt") as stored:
        available = [s for s in stored.metadata()["splits"].split(",") if s]
        absent = [s for s in splits if s not in available]
        result = {}
        for name in [] if absent else splits:
            n_layers = sum(1 for key in stored.keys() if key.startswith(f"{name}.keys."))
            parts = {part: [stored.get_tensor(f"{name}.{part}.{layer}") for layer in range(n_layers)] for part in PARTS}
            if computed := stored.metadata().get("kv_computed_dtype"):
                # Keys/values stored in fp16 are read back in the dtype the model computed them in.
                parts |= {part: [t.to(getattr(torch, computed)) for t in parts[part]] for part in ("keys", "values")}
            result[name] = SplitText(
                stored.get_tensor(f"{name}.examples").numpy(), stored.get_tensor(f"{name}.lengths").numpy(), **parts
            )
    if absent:  # out here: `reading` calls any error inside it a damaged file
        raise KeyError(f"text cache {path} has no split {absent[0]!r} (it holds {available})")
    log.info("text cache %s: %s", path, ", ".join(f"{n} {len(s.examples)} examples" for n, s in result.items()))
    return result


@dataclass(frozen=True)
class TextTicket:
    """What encode_text wrote: where the store is (None for a masked LM) and what encodes it again."""

    store: str | None
    model: str
    splits: dict[str, str]
    params: dict[str, object]  # the encode_text rule's params: task, prompting, text_dtype
    fingerprint: dict[str, str]  # of the model, task, data and params the store was encoded from

    def write(self, path: str | Path) -> None:
        write_json(asdict(self), path)

    @classmethod
    def read(cls, path: str | Path) -> TextTicket:
        return cls(**read_json(path))


@contextlib.contextmanager
def holding(ticket_file: str | Path) -> Iterator[None]:
    """An exclusive lock on the ticket, so that two readers that find the store gone do not both encode it.

    Where the file system has no flock (Lustre without -o flock), readers go on unlocked: two of them may then
    both encode the store, and the atomic write keeps it whole.
    """
    with open(ticket_file, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            log.warning("no lock on %s (%s): going on without one", ticket_file, error)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_store(ticket_file: str | Path, encode: Callable[[TextTicket], None]) -> TextTicket:
    """The ticket, with its store on disk: `encode(ticket)` writes it again if release_text removed it."""
    ticket = TextTicket.read(ticket_file)
    if ticket.store is None or Path(ticket.store).is_file():
        return ticket
    with holding(ticket_file):
        if not Path(ticket.store).is_file():  # another reader may have encoded it while this one waited
            log.info("text store %s was released after its last reader: encoding it again", ticket.store)
            encode(ticket)
    return ticket


def release_store(ticket_file: str | Path) -> int:
    """Remove the ticket's store (its readers are done); the bytes freed."""
    ticket = TextTicket.read(ticket_file)
    if ticket.store is None:
        return 0
    with holding(ticket_file):
        store = Path(ticket.store)
        size = store.stat().st_size if store.is_file() else 0
        store.unlink(missing_ok=True)
    return size


def text_batches(
    lm: PromptedLM,
    frame: pd.DataFrame,
    text_fields: Sequence[str],
    batch_size: int,
    stored: SplitText | None = None,
    reuse: bool = False,
) -> Iterable[Batch]:
    """A split's batches with their text states: attached from the store where there is one, else run.

    `reuse`: the batches are evaluated again and again (dev during tuning, every point of a sweep), so
    each keeps its keys/values; otherwise stored text is attached one batch at a time and released.
    """
    batches = lm.batches(frame, text_fields, batch_size)
    if stored is None:
        return lm.keep_text_cache(batches) if reuse else batches
    return [stored.attach(batch) for batch in batches] if reuse else stored.attached(batches)
