import pandas as pd
import pytest

from skill_neurons.io import atomic_path, read_json, write_json, write_parquet


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
