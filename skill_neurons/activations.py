"""Neuron activations to Parquet: the train-set baseline, and dev/test activations one file per layer, in the
layout of `activation_store` (which reads them)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from .activation_store import packed_column
from .io import PARQUET_WRITE_OPTIONS, atomic_path, write_json, write_parquet
from .plan import STORAGE_DTYPES, expected_bytes

if TYPE_CHECKING:
    from .batches import Batch
    from .prompting import PromptedLM

log = logging.getLogger(__name__)


class DiskBudgetError(RuntimeError):
    """An activation dump that would outgrow its configured budget."""


def check_budget(n_examples: int, n_prompt: int, widths: Sequence[int], dtype: str, max_gb: float) -> int:
    size = expected_bytes(n_examples, n_prompt, widths, dtype)
    log.info("expected activation size: %.3f GB for %d examples", size / 1e9, n_examples)
    if size > max_gb * 1e9:
        raise DiskBudgetError(
            f"the activation dump would take {size / 1e9:.2f} GB, over activations.max_gb = {max_gb};"
            " lower data.max_dev / data.max_test or prompt.n_tokens, or raise activations.max_gb"
        )
    return size


def layer_table(
    captured_prompt: torch.Tensor, avg: torch.Tensor, peak: torch.Tensor, examples: np.ndarray, dtype: type
) -> pa.Table:
    size, n_prompt, width = captured_prompt.shape
    # torch's conversion: the same bits as numpy's astype, at a fortieth of its time (fp32 to fp16 on a CPU)
    storage = torch.from_numpy(np.empty(0, dtype)).dtype
    parts = (captured_prompt.reshape(-1, width), avg, peak)
    values = torch.cat([part.to(storage) for part in parts]).cpu().numpy()
    columns = {
        "example": pa.array(np.concatenate([np.repeat(examples, n_prompt), examples, examples]).astype(np.int32)),
        "kind": pa.array(
            ["prompt"] * (size * n_prompt) + ["input_avg"] * size + ["input_max"] * size
        ).dictionary_encode(),
        "position": pa.array(np.concatenate([np.tile(np.arange(n_prompt), size), -np.ones(2 * size)]).astype(np.int16)),
        "activation": packed_column(values),
    }
    metadata = {"activation": {"dtype": np.dtype(dtype).name, "neurons": str(width)}}
    schema = pa.schema([pa.field(name, column.type, metadata=metadata.get(name)) for name, column in columns.items()])
    return pa.table(columns, schema=schema)


class SplitWriter:
    """One split's activations, streamed batch by batch into one Parquet file per layer (`read_layer` reads it)."""

    def __init__(self, folder: Path, n_layers: int, storage: type) -> None:
        self.folder, self.storage = folder, storage
        self.writers: list[pq.ParquetWriter | None] = [None] * n_layers

    def write(
        self,
        prompt: Sequence[torch.Tensor],
        avg: Sequence[torch.Tensor],
        peak: Sequence[torch.Tensor],
        examples: np.ndarray,
    ) -> None:
        """Per layer: (B, l, D) prompt positions, (B, D) input Avg and Max of the examples `examples`."""
        for layer, writer in enumerate(self.writers):
            table = layer_table(prompt[layer], avg[layer], peak[layer], examples, self.storage)
            if writer is None:
                path = self.folder / f"layer={layer:02d}" / "part-0.parquet"
                path.parent.mkdir(parents=True)
                # fp16 activations barely compress (zstd ~6%, a fast codec); dictionaries only cost time. No
                # reader filters on an activation's min/max, and computing them took 40% of a write (SmolLM2 dump).
                writer = self.writers[layer] = pq.ParquetWriter(
                    path,
                    table.schema,
                    compression="zstd",
                    use_dictionary=["kind"],
                    write_statistics=[name for name in table.schema.names if name != "activation"],
                    **PARQUET_WRITE_OPTIONS,
                )
            writer.write_table(table)

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for writer in self.writers:
            if writer is not None:
                writer.close()


@torch.no_grad()
def train_baseline(lm: PromptedLM, prompt: torch.Tensor, batches: Iterable[Batch]) -> pd.DataFrame:
    """Mean over the train set of every neuron at every prompt position, and of its input Avg/Max."""
    sums: dict[str, list[torch.Tensor]] | None = None
    count = 0
    for batch in batches:
        captured = lm.capture(prompt, batch)
        parts = {
            "prompt": [a.double().sum(0) for a in captured.prompt],
            "input_avg": [a.double().sum(0, keepdim=True) for a in captured.input_avg],
            "input_max": [a.double().sum(0, keepdim=True) for a in captured.input_max],
        }
        sums = parts if sums is None else {k: [s + p for s, p in zip(sums[k], parts[k])] for k in parts}
        count += len(batch.labels)
    rows = []
    for kind, per_layer in sums.items():
        for layer, total in enumerate(per_layer):
            for position, mean in enumerate((total / count).float().cpu().numpy()):
                rows.append(
                    {"layer": layer, "kind": kind, "position": position if kind == "prompt" else -1, "activation": mean}
                )
    return pd.DataFrame(rows)


def dump_activations(
    lm: PromptedLM,
    prompt: torch.Tensor,
    train_batches: Iterable[Batch],
    split_batches: dict[str, Iterable[Batch]],
    out_dir: str | Path,
    dtype: str = "float16",
) -> dict:
    """Write a run's activation folder (layout in the module docstring), streaming batch by batch."""
    storage = STORAGE_DTYPES[dtype]
    prompt = prompt.to(lm.device)
    with atomic_path(out_dir, directory=True) as tmp:
        write_parquet(train_baseline(lm, prompt, train_batches), tmp / "baseline.parquet")
        example_rows = []
        for split, batches in split_batches.items():
            with SplitWriter(tmp / split, len(lm.projections), storage) as writer:
                for batch in batches:
                    with verbalizer_logits(lm) as full_logits:
                        captured = lm.capture(prompt, batch)
                    writer.write(captured.prompt, captured.input_avg, captured.input_max, batch.examples.cpu().numpy())
                    example_rows.append(_example_metrics(split, captured.logits, batch, full_logits(), lm.label_ids))
        widths = [int(a.shape[-1]) for a in captured.prompt]
        examples = pd.concat(example_rows, ignore_index=True).sort_values(["split", "example"])
        write_parquet(examples, tmp / "examples.parquet")
        meta = {
            "n_prompt": lm.n_prompt,
            "widths": widths,
            "dtype": dtype,
            "examples": examples.groupby("split").size().to_dict(),
            "bytes_on_disk": sum(f.stat().st_size for f in tmp.rglob("*.parquet")),
        }
        write_json(meta, tmp / "meta.json")
    return meta


class _VerbalizerLogits:
    """What the hooks of `verbalizer_logits` saw in the last forward; called, the (B, V) logits."""

    def __init__(self, lm: PromptedLM) -> None:
        self.lm = lm
        self.model_logits: torch.Tensor | None = None  # the model's own head output (B, T', V)
        self.last_hidden: torch.Tensor | None = None  # causal LMs: the base model's last position (B, H)

    def __call__(self) -> torch.Tensor:
        lm = self.lm
        if lm.kind == "mlm":
            return self.model_logits[:, lm.n_prompt + 1].float()  # [MASK] follows [CLS] and the prompt
        if self.model_logits is not None:  # a causal LM whose head transforms its logits: its own forward
            return self.model_logits[:, -1].float()
        head = lm.model.get_output_embeddings()  # the scores read the label words' rows of the head alone
        bias = None if getattr(head, "bias", None) is None else head.bias.float()
        return F.linear(self.last_hidden.float(), head.weight.float(), bias)


@contextlib.contextmanager
def verbalizer_logits(lm: PromptedLM) -> Iterator[_VerbalizerLogits]:
    """Inside: record the whole-vocabulary logits at the verbalizer position of the forwards `lm` runs.

    Masked LMs run the whole model (its head output at [MASK]); a causal LM's label scores come from its
    base model's last position (the last call: the prompt's pass after the text's), projected here onto
    the whole head, or from the model's own forward when its head transforms the logits (models.py).
    """
    # Imported here: models imports transformers (~7 s), which the scoring jobs that read dumps need not pay.
    from .models import LOGIT_TRANSFORMS

    seen = _VerbalizerLogits(lm)

    def keep_logits(_module, _args, output) -> None:
        seen.model_logits = output.logits.detach()

    def keep_hidden(_module, _args, output) -> None:
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        seen.last_hidden = hidden[:, -1].detach()

    transformed = any(getattr(lm.model.config, key, None) for key in LOGIT_TRANSFORMS)
    handles = [lm.model.register_forward_hook(keep_logits)]
    if lm.kind == "causal" and not transformed:
        handles.append(lm.model.base_model.register_forward_hook(keep_hidden))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _example_metrics(
    split: str,
    logits: torch.Tensor,
    batch: Batch,
    full_logits: torch.Tensor | None = None,
    label_ids: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Per-example auxiliary metrics of Zhao et al. (module docstring).

    `logits` (B, C) are the label-word scores; `full_logits` (B, V) the whole vocabulary's at the same
    position, with `label_ids` (C,) the label words' token ids. Without them `loss` is the label-word loss.
    """
    probabilities = logits.float().softmax(-1)
    loss_label_words = F.cross_entropy(logits.float(), batch.labels, reduction="none")
    if full_logits is None:
        loss = loss_label_words
    else:
        gold = label_ids.to(full_logits.device)[batch.labels.to(full_logits.device)]
        loss = F.cross_entropy(full_logits.float(), gold, reduction="none")
    return pd.DataFrame(
        {
            "split": split,
            "example": batch.examples.cpu().numpy(),
            "label": batch.labels.cpu().numpy(),
            "prediction": probabilities.argmax(-1).cpu().numpy(),
            "loss": loss.cpu().numpy(),
            "loss_label_words": loss_label_words.cpu().numpy(),
            "confidence": probabilities.max(-1).values.cpu().numpy(),
        }
    )
