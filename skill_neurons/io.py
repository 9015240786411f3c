"""Atomic writes (a killed job never leaves a file that looks complete) and checked reads (a damaged file is named).

Parquet is written with a CRC32 per data page and read with verification: flipped bytes in an activation file
fail the read instead of turning into a NaN or a 29,136 in a table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # the Snakefile imports this module: torch is loaded only where tensors are written or read
    import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are made private (0600/0700); a finished output gets the modes the user's umask gives.
FILE_MODE, FOLDER_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()


# Room asked beyond an output's expected size: Parquet pages, headers and what else the file system needs.
FREE_SPACE_MARGIN = 1.05


class DiskSpaceError(OSError):
    """Too little free disk for an output, found before the work that writes it starts."""


def require_free_space(path: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Refuse to start writing `what` (about `needed_bytes`) at `path` when its file system has less room.

    Needed: needed_bytes * FREE_SPACE_MARGIN <= the free bytes of the nearest existing folder above `path`.
    """
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed_bytes * FREE_SPACE_MARGIN > free:
        raise DiskSpaceError(
            f"{what} needs about {needed_bytes / 1e9:.2f} GB at {path}, but {free / 1e9:.2f} GB are free there;"
            " free some space (an interrupted run's temporary files: snakemake --delete-temp-output) or set"
            " `results` to a larger disk"
        )


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as save_pretrained writes them (a tied tensor once)."""
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in module.state_dict().values()}
    return sum(tensors.values())


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the files in a folder and below it; a file or folder removed while they are counted counts 0."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk passes over a folder that vanishes under it
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.glob(f"{prefix}*"):  # left by a killed job: Snakemake runs one writer per output
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=target.suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(FOLDER_MODE if directory else FILE_MODE)
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


_held_locks: list = []  # open lock files: a lock lasts as long as this process


def lock_results(folder: str | os.PathLike) -> None:
    """Hold `folder`'s lock for this process, or refuse: two runs writing one results folder would redo and
    overwrite each other's jobs (Snakemake locks its working directory, not the results)."""
    path = Path(folder) / ".skill_neurons.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise RuntimeError(
            f"results folder {folder} is being written by another run ({owner}); wait for it to finish, "
            "or give this run another `results:` folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _held_locks.append(handle)


class DamagedFile(RuntimeError):
    """An intermediate file that cannot be read back as written."""


# pyarrow's writers and readers take these: every page carries its checksum, and every read checks it.
PARQUET_WRITE_OPTIONS = {"write_page_checksum": True}
PARQUET_READ_OPTIONS = {"page_checksum_verification": True}


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed read of `path` into an error that names the file and the way out."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as error:
        raise DamagedFile(
            f"{path} cannot be read ({type(error).__name__}: {error}); it is damaged or was written by another "
            "version: delete it and rerun the workflow, which makes it again"
        ) from error


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, **PARQUET_WRITE_OPTIONS)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file written by this workflow, its page checksums verified."""
    with reading(path):
        return pd.read_parquet(path, columns=columns, **PARQUET_READ_OPTIONS)


def write_json(data: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with reading(path):
        return load_file(str(path))
