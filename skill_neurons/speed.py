"""Inference speed of dense and pruned models, measured side by side in one process.

Only the forward pass is timed: batches are tokenised (synthetic ids of a fixed length) before the
clock starts, every case is warmed up, and the variants alternate within each repeat so that a slow
spell of the machine hits them alike. A verbalizer reads two label words at one position: a causal LM
computes what the classifier computes (the label words' scores at the last position, `next_token_scores`),
a masked LM runs its encoder (the head on one position is negligible).
Memory, MiB, at the largest case and alike for every variant: memory_mb = weights_mb + forward_peak_mb.
  weights_mb: the bytes of the parameters and buffers in the dtype timed (a tied tensor once), counted.
  forward_peak_mb: how far the forward raises memory above the loaded model. On a GPU, the allocator's peak
    over its allocation just before. On the CPU, the peak resident size (VmHWM) over the resident size just
    before, in a fresh process that loads only this variant, copies its weights out of the checkpoint's
    memory map, and runs the case once untimed first.
Not the process's own peak, which counts the interpreter (~0.4 GiB), a pruned model's full-width build
while loading, and a dense checkpoint (memory-mapped by from_pretrained) only as far as the forward and the
kernel's read-ahead touch its pages, while a pruned one is loaded whole into private memory.
"""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .architecture import (
    FFN_INPUT_PROJECTIONS,
    ffn_output_projection_name,
    ffn_output_projections,
    ffn_width,
    model_kind,
    parameter_count,
    transformer_layers,
)
from .devices import autocast_dtype
from .models import load_model, next_token_scores

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TIMED_LABEL_IDS = torch.tensor([0, 1])  # a binary verbalizer: which two tokens does not change the cost


@dataclass(frozen=True)
class Case:
    batch: int
    length: int


def sweep_cases(batch_sizes: Sequence[int], lengths: Sequence[int], reference: Case) -> list[Case]:
    """SKELETON's Fig. 4: batch sizes at the reference length, lengths at the reference batch size."""
    cases = [Case(b, reference.length) for b in batch_sizes] + [Case(reference.batch, n) for n in lengths]
    return sorted(set(cases + [reference]), key=lambda c: (c.batch, c.length))


def benchmark_dtypes(requested: str | Sequence[str], device: torch.device) -> list[str]:
    """The dtypes to time: as listed, or for 'auto' fp32 plus bf16 where it runs fast (autocast_dtype's rule)."""
    if requested != "auto":
        return list(requested)
    return ["float32"] + (["bfloat16"] if autocast_dtype("auto", device) is not None else [])


def synthetic_inputs(vocab_size: int, case: Case, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (case.batch, case.length), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def forward_once(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        if model_kind(model.config) == "causal":
            next_token_scores(model, TIMED_LABEL_IDS.to(inputs["input_ids"].device), **inputs)
        else:
            model.base_model(**inputs)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(
    models: Mapping[str, nn.Module], cases: Sequence[Case], warmup: int, repeats: int, device: torch.device
) -> pd.DataFrame:
    """Seconds of every forward: one row per (variant, batch, length, repeat)."""
    vocab = min(m.config.vocab_size for m in models.values())
    rows = []
    for case in cases:
        inputs = synthetic_inputs(vocab, case, device)
        for model in models.values():
            for _ in range(warmup):
                forward_once(model, inputs)
        for repeat in range(repeats):
            for name, model in models.items():
                _synchronise(device)
                started = time.perf_counter()
                forward_once(model, inputs)
                _synchronise(device)
                rows.append(
                    {
                        "variant": name,
                        "batch": case.batch,
                        "length": case.length,
                        "repeat": repeat,
                        "seconds": time.perf_counter() - started,
                    }
                )
    return pd.DataFrame(rows)


def with_attention(model: nn.Module, attention: str | None) -> nn.Module:
    """The model with its attention kernel set to `attention` (transformers' name); None leaves it as loaded."""
    if attention is not None:
        model.set_attn_implementation(attention)
    return model


PARTS = ("ffn", "attention", "norm", "embedding")


def model_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The modules of each part of a forward: every layer's FFN, attention and norms, the embeddings, the final norm.

    A layer's direct child is its FFN if it holds an FFN projection, else a norm if its name says 'norm' or
    starts with 'ln', else attention if it says 'attn' or 'attention'. What no part holds (residual adds, rotary
    embeddings, masks, the verbalizer's head) is the forward's 'other'.
    """
    parts: dict[str, list[nn.Module]] = {part: [] for part in PARTS}
    for index, layer in enumerate(transformer_layers(model)):
        output = ffn_output_projection_name(model, index, layer)
        ffn_names = {output, *(name for layout in FFN_INPUT_PROJECTIONS[output] for name in layout.values())}
        for name, child in layer.named_children():
            if any(n == name or n.startswith(name + ".") for n in ffn_names):
                parts["ffn"].append(child)
            elif "norm" in name or name.startswith("ln"):  # before attention: 'post_attention_layernorm'
                parts["norm"].append(child)
            elif "attn" in name or "attention" in name:
                parts["attention"].append(child)
    parts["embedding"].append(model.get_input_embeddings())
    parts["norm"] += [child for name, child in model.base_model.named_children() if "norm" in name or name == "ln_f"]
    return parts


def part_times(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], repeats: int, device: torch.device, warmup: int = 2
) -> pd.DataFrame:
    """Seconds of each part in each timed forward (after `warmup` untimed): rows repeat, part, seconds.

    Part times come from hooks around the part's modules; 'total' is the whole forward and
    'other' = total - the parts. On a GPU every hook synchronises, which slows the forward a little.
    """
    spent: dict[str, float] = {}
    started: dict[int, float] = {}
    handles = []

    def before(module: nn.Module, _args) -> None:
        _synchronise(device)
        started[id(module)] = time.perf_counter()

    def after(part: str):
        def hook(module: nn.Module, _args, _output) -> None:
            _synchronise(device)
            spent[part] = spent.get(part, 0.0) + time.perf_counter() - started[id(module)]

        return hook

    for part, modules in model_parts(model).items():
        for module in modules:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after(part))]
    rows = []
    try:
        for _ in range(warmup):
            forward_once(model, inputs)
        for repeat in range(repeats):
            spent.clear()
            _synchronise(device)
            begin = time.perf_counter()
            forward_once(model, inputs)
            _synchronise(device)
            total = time.perf_counter() - begin
            for part in PARTS:
                rows.append({"repeat": repeat, "part": part, "seconds": spent.get(part, 0.0)})
            rows.append({"repeat": repeat, "part": "other", "seconds": total - sum(spent.values())})
            rows.append({"repeat": repeat, "part": "total", "seconds": total})
    finally:
        for handle in handles:
            handle.remove()
    return pd.DataFrame(rows)


def speedup_bounds(part_ms: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per dtype and variant, from median ms per part (columns dtype, variant, part, median_ms):

    speedup = total_ref / total;  ffn_bound = total_ref / (total_ref - ffn_ref + ffn): the speedup had only
    the FFN changed;  ffn_share = ffn / total.
    """
    ms = part_ms.pivot_table(index=["dtype", "variant"], columns="part", values="median_ms")
    ref = ms.xs(reference, level="variant").reindex(ms.index.get_level_values("dtype"))
    ref.index = ms.index
    return pd.DataFrame(
        {
            "total_ms": ms["total"],
            "speedup": ref["total"] / ms["total"],
            "ffn_bound": ref["total"] / (ref["total"] - ref["ffn"] + ms["ffn"]),
            "ffn_share": ms["ffn"] / ms["total"],
        }
    ).reset_index()


def summarise(times: pd.DataFrame, dense: str) -> pd.DataFrame:
    """Median, quartiles and min per (variant, batch, length), and the paired speedup with its quartiles.

    speedup = median over repeats r of dense_seconds(r) / variant_seconds(r): the two forwards of a repeat
    run back to back, so a slow spell of the machine cancels in their ratio instead of widening the spread.
    """
    keys = ["variant", "batch", "length"]
    grouped = times.groupby(keys)["seconds"]
    table = pd.DataFrame(
        {
            "median_ms": grouped.median() * 1e3,
            "q1_ms": grouped.quantile(0.25) * 1e3,
            "q3_ms": grouped.quantile(0.75) * 1e3,
            "min_ms": grouped.min() * 1e3,
            "repeats": grouped.size(),
        }
    ).reset_index()
    dense_seconds = times[times["variant"] == dense].set_index(["batch", "length", "repeat"])["seconds"]
    paired = times.join(dense_seconds.rename("dense_seconds"), on=["batch", "length", "repeat"])
    ratios = (paired["dense_seconds"] / paired["seconds"]).groupby([paired[k] for k in keys])
    speedups = pd.DataFrame(
        {"speedup": ratios.median(), "speedup_q1": ratios.quantile(0.25), "speedup_q3": ratios.quantile(0.75)}
    )
    return table.join(speedups, on=keys)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    projections = ffn_output_projections(model)
    return {
        "parameters": parameter_count(model),
        "ffn_neurons": sum(ffn_width(p) for p in projections),
    }


# Without it glibc raises its mmap threshold as blocks are freed and serves the measured forward's tensors
# from blocks the warm-up or loading freed, which the resident size already holds (measured: a forward of
# 25 MiB read -0.3 to 33); at a fixed threshold every tensor of 64 KiB or more is mapped and returned alone.
CHILD_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def weights_mb(model: nn.Module) -> float:
    """Bytes of the model's parameters and buffers as they are held (each tied tensor once), MiB."""
    tensors = {t.data_ptr(): t for t in itertools.chain(model.parameters(), model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20


@torch.no_grad()
def in_private_memory(model: nn.Module) -> nn.Module:
    """The model with every tensor copied out of the checkpoint's memory map into memory of its own.

    A memory-mapped weight counts towards the resident size only once the forward touches its pages: the
    weights would be counted partly, and as part of the forward.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        tensor.data = tensor.data.clone()
    return model


def _status_mb(key: str) -> float:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: peak resident since the last reset), MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{key}:"))
    return int(line.split()[1]) / 1024


def _forward_peak_of_this_process(
    model_dir: str, dtype: str, case: Case, threads: int, attention: str | None = None
) -> float:
    """Load the variant into private memory, run the case untimed, then again: its peak over the resident size.

    The untimed run leaves what the first forward sets up once (thread pools, kernels) out of the measure.
    """
    torch.set_num_threads(threads)
    model = with_attention(load_model(model_dir)[0], attention)
    model = in_private_memory(model.to(DTYPES[dtype]))
    inputs = synthetic_inputs(model.config.vocab_size, case, torch.device("cpu"))
    forward_once(model, inputs)
    gc.collect()
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # Linux: reset VmHWM to the current resident size
    forward_once(model, inputs)
    return _status_mb("VmHWM") - before


def forward_peak_mb(
    model_dir: str,
    model: nn.Module,
    dtype: str,
    case: Case,
    device: torch.device,
    threads: int,
    attention: str | None = None,
) -> float:
    """How far running `case` through the variant raises memory above its loaded weights, MiB (module doc)."""
    if device.type == "cuda":
        inputs = synthetic_inputs(model.config.vocab_size, case, device)
        _synchronise(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward_once(model, inputs)
        _synchronise(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    # A fresh interpreter (not multiprocessing, whose spawn re-runs the caller's __main__, e.g. a Snakemake script).
    command = [
        sys.executable,
        "-m",
        "skill_neurons.speed",
        model_dir,
        dtype,
        str(case.batch),
        str(case.length),
        str(threads),
        *([attention] if attention else []),
    ]
    # The child imports this very package, wherever it was imported from (a checkout first on sys.path).
    package_root = str(Path(__file__).resolve().parents[1])
    search_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    environment = {**os.environ, **CHILD_ENVIRONMENT, "PYTHONPATH": search_path}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return float(result.stdout.strip().splitlines()[-1])


def benchmark(
    model_dirs: Mapping[str, str],
    dense: str,
    cases: Sequence[Case],
    dtypes: Sequence[str],
    warmup: int,
    repeats: int,
    device: torch.device,
    threads: int,
    peak_memory: bool = True,
    attention: str | None = None,
) -> pd.DataFrame:
    """Every variant in every dtype over every case: timing summary, parameters, memory (the forward's optionally).

    `attention`: the attention kernel of every variant (transformers' 'sdpa', 'eager', ...); None, the models' own.
    """
    tables = []
    largest = max(cases, key=lambda c: c.batch * c.length)
    for dtype in dtypes:
        models = {
            name: with_attention(load_model(path, device)[0], attention).to(DTYPES[dtype])
            for name, path in model_dirs.items()
        }
        table = summarise(time_variants(models, cases, warmup, repeats, device), dense)
        for name, model in models.items():
            selected = table["variant"] == name
            for key, value in parameter_counts(model).items():
                table.loc[selected, key] = value
            table.loc[selected, "weights_mb"] = weights_mb(model)
            table.loc[selected, "attention"] = model.config._attn_implementation  # each model's own, if not set
            table.loc[selected, "forward_peak_mb"] = (
                forward_peak_mb(model_dirs[name], model, dtype, largest, device, threads, attention)
                if peak_memory
                else float("nan")
            )
        tables.append(table.assign(dtype=dtype, device=str(device), threads=threads))
        del models
    table = pd.concat(tables, ignore_index=True)
    table[["parameters", "ffn_neurons"]] = table[["parameters", "ffn_neurons"]].astype(np.int64)
    table["memory_mb"] = table["weights_mb"] + table["forward_peak_mb"]
    return table


if __name__ == "__main__":  # the child of forward_peak_mb: model_dir dtype batch length threads [attention]
    directory, precision, batch, length, n_threads = sys.argv[1:6]
    kernel = sys.argv[6] if len(sys.argv) > 6 else None
    print(_forward_peak_of_this_process(directory, precision, Case(int(batch), int(length)), int(n_threads), kernel))
