import pandas as pd
import pytest
import torch

from skill_neurons.io import (
    DamagedFile,
    DiskSpaceError,
    atomic_path,
    read_json,
    read_parquet,
    read_tensors,
    require_free_space,
    tensor_bytes,
    write_json,
    write_parquet,
    write_tensors,
)


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "run"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_path(target, directory=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_round_trips(tmp_path):
    frame = pd.DataFrame({"layer": [0, 1], "score": [0.5, 0.75]})
    write_parquet(frame, tmp_path / "x" / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x" / "f.parquet"), frame)
    write_json({"b": 1, "a": [1, 2]}, tmp_path / "m.json")
    assert read_json(tmp_path / "m.json") == {"a": [1, 2], "b": 1}


def test_a_damaged_table_or_tensor_file_is_named_with_the_way_out(tmp_path):
    frame = pd.DataFrame({"layer": range(5000), "score": [i / 7 for i in range(5000)]})
    write_parquet(frame, tmp_path / "scores.parquet")
    pd.testing.assert_frame_equal(read_parquet(tmp_path / "scores.parquet"), frame)
    data = bytearray((tmp_path / "scores.parquet").read_bytes())
    for index in range(64):  # inside the first data page, past the 4-byte magic
        data[200 + 5 * index] ^= 0xFF
    (tmp_path / "scores.parquet").write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match=r"scores.parquet cannot be read \(OSError: .*CRC.*delete it and rerun"):
        read_parquet(tmp_path / "scores.parquet")
    write_tensors({"prompt": torch.ones(4, 3)}, tmp_path / "prompt.safetensors")
    (tmp_path / "prompt.safetensors").write_bytes((tmp_path / "prompt.safetensors").read_bytes()[:40])
    with pytest.raises(DamagedFile, match=r"prompt.safetensors cannot be read .*delete it and rerun"):
        read_tensors(tmp_path / "prompt.safetensors")
    with pytest.raises(FileNotFoundError):  # a missing file is not called damaged
        read_parquet(tmp_path / "absent.parquet")


def free_disk(monkeypatch, free_bytes: int) -> None:
    """Make every file system report `free_bytes` free."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free_bytes, free_bytes))


def test_an_output_needs_its_size_and_five_percent_free_before_it_starts(tmp_path, monkeypatch):
    target = tmp_path / "not" / "yet" / "there" / "dump"  # checked on the nearest folder that exists
    free_disk(monkeypatch, 1_060_000_000)
    require_free_space(target, 1_000_000_000, "the activation dump")  # 1.05 GB needed, 1.06 free
    free_disk(monkeypatch, 1_040_000_000)
    with pytest.raises(
        DiskSpaceError, match=r"the activation dump needs about 1.00 GB at .*dump, but 1.04 GB are free"
    ):
        require_free_space(target, 1_000_000_000, "the activation dump")
    assert not (tmp_path / "not").exists()


def test_a_random_model_on_a_full_disk_is_refused_before_anything_is_written(llama_dir, tmp_path, monkeypatch):
    from skill_neurons.controls import save_random_model

    free_disk(monkeypatch, 1000)
    with pytest.raises(DiskSpaceError, match="a random-weight copy of the model needs about"):
        save_random_model(llama_dir, tmp_path / "random", seed=0)
    assert list(tmp_path.iterdir()) == []


def test_tensor_bytes_are_what_save_pretrained_writes(llama_dir, tmp_path):
    from safetensors import safe_open

    from skill_neurons.models import load_model

    model = load_model(llama_dir)[0]
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as saved:
        written = sum(saved.get_tensor(k).numel() * saved.get_tensor(k).element_size() for k in saved.keys())
    assert tensor_bytes(model) == written  # the tied head is written once
    assert model.config.tie_word_embeddings
