"""The activation dump's layout on disk and its readers, without torch: score, ranking and table jobs read
dumps without loading it (`activations` writes them).

Layout of one run's folder:
  baseline.parquet                 layer, kind, position, activation (float32 list): train-set means
  examples.parquet                 split, example, label, prediction, loss, loss_label_words, confidence
  {split}/layer=NN/part-0.parquet  example, kind, position, activation (the D neurons' float16 values packed
                                   as one fixed-size binary, little-endian; dtype in the field's metadata)
  meta.json                        prompt length, layer widths, example counts, bytes
`kind` is 'prompt' (position = prompt index) or 'input_avg' / 'input_max' (position = -1): the mean
and max over the input tokens, the Avg/Max baselines of Wang et al.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .io import PARQUET_READ_OPTIONS, read_json, read_parquet, reading

KINDS = ("prompt", "input_avg", "input_max")


def packed_column(values: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Each row's D values as one fixed-size binary of their little-endian bytes.

    Parquet writes a list column with a repetition and a definition level per value: a list of 1536 fp16
    neurons wrote ~10x slower than the same bytes packed (and compressed no better).
    """
    rows, width = values.shape
    packed = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width * packed.itemsize), rows, [None, pa.py_buffer(packed)])


def activation_values(table: pa.Table) -> np.ndarray:
    """(rows, D) of a layer table's activation column: packed bytes (their dtype in the field's metadata), or
    a list of values as runs before the packing wrote it."""
    field = table.schema.field("activation")
    column = table.column("activation").combine_chunks()
    if pa.types.is_fixed_size_list(field.type):
        return column.flatten().to_numpy().reshape(-1, field.type.list_size)
    dtype = np.dtype(field.metadata[b"dtype"].decode()).newbyteorder("<")
    row_bytes = field.type.byte_width
    start = column.offset * row_bytes
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8)[start : start + len(column) * row_bytes]
    return raw.view(dtype).reshape(len(column), row_bytes // dtype.itemsize)


@dataclass
class LayerActivations:
    examples: np.ndarray  # (N,) sorted example ids
    prompt: np.ndarray  # (N, l, D) float32
    input_avg: np.ndarray  # (N, D)
    input_max: np.ndarray  # (N, D)


def read_layer(run_dir: str | Path, split: str, layer: int) -> LayerActivations:
    """One layer of one split, as float32 arrays ordered by example id."""
    folder = Path(run_dir) / split / f"layer={layer:02d}"
    with reading(folder):
        table = pq.read_table(folder, **PARQUET_READ_OPTIONS)
    frame = table.select(["example", "kind", "position"]).to_pandas()
    frame["kind"] = frame["kind"].astype(str)
    values = activation_values(table)
    width = values.shape[1]
    order = np.lexsort((frame["position"].to_numpy(), frame["example"].to_numpy()))
    frame, values = frame.iloc[order].reset_index(drop=True), values[order]
    by_kind = {kind: frame.index[frame["kind"] == kind].to_numpy() for kind in KINDS}
    examples = frame["example"].to_numpy()[by_kind["input_avg"]]
    n_prompt = len(by_kind["prompt"]) // len(examples)
    return LayerActivations(
        examples=examples,
        prompt=values[by_kind["prompt"]].astype(np.float32).reshape(len(examples), n_prompt, width),
        input_avg=values[by_kind["input_avg"]].astype(np.float32),
        input_max=values[by_kind["input_max"]].astype(np.float32),
    )


def read_baseline(run_dir: str | Path) -> dict[str, list[np.ndarray]]:
    """Per kind, per layer: (l, D) prompt-position means, or (1, D) for input_avg / input_max."""
    frame = read_parquet(Path(run_dir) / "baseline.parquet")
    out: dict[str, list[np.ndarray]] = {}
    for kind in KINDS:
        part = frame[frame["kind"] == kind].sort_values(["layer", "position"])
        out[kind] = [np.stack(g["activation"].to_list()).astype(np.float32) for _, g in part.groupby("layer")]
    return out


def read_meta(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "meta.json")


def read_examples(run_dir: str | Path) -> pd.DataFrame:
    """Per dev and test example: label, the prompt's prediction and the auxiliary metrics."""
    return read_parquet(Path(run_dir) / "examples.parquet")
