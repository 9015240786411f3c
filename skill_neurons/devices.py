"""One GPU per job on a multi-GPU workstation.

Snakemake's `gpu` resource only counts GPUs; it does not say which one a job gets, so two jobs would
share card 0. Each model job therefore leases a free card through an exclusive `flock` on a node-local
lock file and narrows `CUDA_VISIBLE_DEVICES` to it before CUDA starts. The kernel drops the lock when
the process ends, killed or not, so a lease never outlives its job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import torch

log = logging.getLogger(__name__)

_held: list[IO] = []  # open lock files: the leases of this process, released when it exits


def visible_gpus() -> list[str]:
    """The GPUs this process may use: `CUDA_VISIBLE_DEVICES` if set, else every card nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []


def default_lock_dir() -> Path:
    # Node-local on purpose: a lock in a shared results folder would make jobs on different nodes collide.
    return Path(tempfile.gettempdir()) / f"skill_neurons-gpu-leases-{os.getuid()}"


def lease_gpu(
    gpus: list[str] | None = None, lock_dir: Path | None = None, timeout_s: float = 3600.0, poll_s: float = 1.0
) -> str | None:
    """Hold the first free GPU of `gpus` for the rest of this process and make it the only visible one.

    Returns its id, or None when there is no GPU. Waits up to `timeout_s` for one to free up.
    """
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return None
    lock_dir = default_lock_dir() if lock_dir is None else lock_dir
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for gpu in gpus:
            handle = open(lock_dir / f"gpu-{gpu}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            return gpu
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"all GPUs {gpus} stayed leased by other jobs for {timeout_s:.0f} s (locks in {lock_dir}); "
                "give Snakemake no more GPUs than the machine has: --resources gpu=N"
            )
        time.sleep(poll_s)


def pick_device(requested: str = "auto") -> torch.device:
    """'auto': a leased GPU of its own (or the one SLURM gave the job), else the CPU, said in the log."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda":
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (device.index or 0) >= visible:
                raise RuntimeError(
                    f"config key device: {requested!r} asked for, but this machine shows {visible} CUDA device(s)"
                    f" (torch {torch.__version__}, CUDA build {torch.version.cuda}); use 'auto' or 'cpu' here"
                )
        return device
    if os.environ.get("SLURM_JOB_ID"):
        # SLURM already confined the job to its own cards; their ids can repeat across jobs on a node.
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = lease_gpu()
    if gpu is None or not torch.cuda.is_available():
        log.info("no GPU found; running on the CPU")
        return torch.device("cpu")
    log.info("leased GPU %s", gpu)
    return torch.device("cuda")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware does it fast (CUDA, CPUs with AMX or AVX512-BF16), else fp32 ('auto')."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_bf16_unit() else None


# The units that run bf16 matmuls natively, fastest first. Without one, bf16 is converted to fp32 inside every
# matmul: on a Xeon without either, bf16 weights ran 3.8-6.8x slower than fp32. With AVX512-BF16 (AMD EPYC, Zen 5,
# one thread) a SmolLM2-135M forward at batch 8 x 64 ran 3.1x faster under bf16 autocast, a prompt-tuning step 3.0x.
BF16_UNITS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


def cpu_bf16_unit() -> str | None:
    """The CPU's unit that makes bf16 matmuls fast ('AMX', 'AVX512-BF16'), None where it has none."""
    flags = _cpu_flags().split()
    return next((name for flag, name in BF16_UNITS.items() if flag in flags), None)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return ""
