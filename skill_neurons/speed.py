"""Inference speed of dense and pruned models, measured side by side in one process.

Only the forward pass is timed: batches are tokenised (synthetic ids of a fixed length) before the
clock starts, every case is warmed up, and the variants alternate within each repeat so that a slow
spell of the machine hits them alike. A verbalizer reads two label words at one position: a causal LM
computes what the classifier computes (the label words' scores at the last position, `next_token_scores`),
a masked LM runs its encoder (the head on one position is negligible).
Peak memory: on a GPU the allocator's peak for the largest case; on the CPU the peak resident size of a
fresh process that loads the variant while it runs that case (weights, activations, the interpreter).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .architecture import ffn_output_projections, ffn_width, model_kind, parameter_count
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
    """The dtypes to time: as listed, or for 'auto' fp32 plus bf16 where the hardware runs it fast (GPU, AMX)."""
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


def _resident_peak_mb() -> float:
    """This process's peak resident size since the last reset (VmHWM), MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _peak_rss_of_this_process(model_dir: str, dtype: str, case: Case, threads: int) -> float:
    """Load the variant, reset the peak, run the case: the peak resident size (MiB) while it runs.

    Loading (which builds a pruned model at full width before narrowing it) must not set the peak.
    """
    torch.set_num_threads(threads)
    model, _ = load_model(model_dir)
    model = model.to(DTYPES[dtype])
    inputs = synthetic_inputs(model.config.vocab_size, case, torch.device("cpu"))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # Linux: reset VmHWM to the current resident size
    forward_once(model, inputs)
    return _resident_peak_mb()


def peak_memory_mb(
    model_dir: str, model: nn.Module, dtype: str, case: Case, device: torch.device, threads: int
) -> float:
    """Peak memory (MiB) of running `case` through the variant (module doc: what is measured where)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        forward_once(model, synthetic_inputs(model.config.vocab_size, case, device))
        return torch.cuda.max_memory_allocated(device) / 2**20
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
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
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
) -> pd.DataFrame:
    """Every variant in every dtype over every case: timing summary, parameters and (optionally) peak memory."""
    tables = []
    largest = max(cases, key=lambda c: c.batch * c.length)
    for dtype in dtypes:
        models = {name: load_model(path, device)[0].to(DTYPES[dtype]) for name, path in model_dirs.items()}
        table = summarise(time_variants(models, cases, warmup, repeats, device), dense)
        for name, model in models.items():
            for key, value in parameter_counts(model).items():
                table.loc[table["variant"] == name, key] = value
            table.loc[table["variant"] == name, "peak_memory_mb"] = (
                peak_memory_mb(model_dirs[name], model, dtype, largest, device, threads)
                if peak_memory
                else float("nan")
            )
        tables.append(table.assign(dtype=dtype, device=str(device), threads=threads))
        del models
    table = pd.concat(tables, ignore_index=True)
    table[["parameters", "ffn_neurons"]] = table[["parameters", "ffn_neurons"]].astype(np.int64)
    return table


if __name__ == "__main__":  # the child of peak_memory_mb: model_dir dtype batch length threads
    directory, precision, batch, length, n_threads = sys.argv[1:6]
    print(_peak_rss_of_this_process(directory, precision, Case(int(batch), int(length)), int(n_threads)))
