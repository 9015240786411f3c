import numpy as np
import pandas as pd
import pytest

from skill_neurons.data import DataError, Subtask, Task, make_splits, subtask_targets


def task(**overrides) -> Task:
    fields = dict(
        name="toy",
        dataset="toy",
        text_fields=("sentence",),
        template="{sentence}",
        labels=(0, 1),
        label_words=(" negative", " positive"),
    )
    return Task(**(fields | overrides))


def test_test_is_the_hub_evaluation_split_and_train_is_cut_80_20(mirror):
    splits = make_splits(task(), mirror, dev_fraction=0.2, seed=0)
    train_source = pd.read_parquet(mirror / "toy" / "train.parquet")
    assert len(splits["train"]) == 96 and len(splits["dev"]) == 24
    assert len(splits["test"]) == len(pd.read_parquet(mirror / "toy" / "validation.parquet"))
    together = pd.concat([splits["train"], splits["dev"]])["sentence"].sort_values().tolist()
    assert together == train_source["sentence"].sort_values().tolist()
    for frame in splits.values():
        np.testing.assert_array_equal(frame["example"], np.arange(len(frame)))
    again = make_splits(task(), mirror, dev_fraction=0.2, seed=0)
    pd.testing.assert_frame_equal(splits["dev"], again["dev"])


def test_caps_and_label_subset_become_class_indices(mirror):
    splits = make_splits(task(dataset="toy3", labels=(2, 0)), mirror, max_train=10, max_dev=5, max_test=6)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [10, 5, 6]
    source = pd.read_parquet(mirror / "toy3" / "validation.parquet")
    assert len(make_splits(task(dataset="toy3", labels=(2, 0)), mirror)["test"]) == source["label"].isin([0, 2]).sum()
    assert set(splits["train"]["label"]) <= {0, 1}


def test_missing_train_split_uses_the_fallback(mirror, tmp_path):
    (tmp_path / "tw").mkdir()
    pd.read_parquet(mirror / "toy" / "validation.parquet").to_parquet(tmp_path / "tw" / "test.parquet")
    pd.read_parquet(mirror / "toy" / "train.parquet").to_parquet(tmp_path / "tw" / "validation.parquet")
    splits = make_splits(task(dataset="tw", test_split="test", fallback_train_split="validation"), tmp_path)
    assert len(splits["train"]) + len(splits["dev"]) == 120 and len(splits["test"]) == 40


def test_missing_column_is_named_with_the_task(mirror):
    with pytest.raises(DataError, match=r"task 'toy', split 'validation': missing column\(s\) \['premise'\]"):
        make_splits(task(text_fields=("premise",), template="{premise}"), mirror)


def test_unknown_label_is_named(mirror):
    with pytest.raises(DataError, match=r"task 'toy', split 'validation': label\(s\) \[7\] of `labels` never occur"):
        make_splits(task(labels=(0, 7)), mirror)


def test_empty_split_is_refused(mirror, tmp_path):
    (tmp_path / "toy").mkdir()
    pd.read_parquet(mirror / "toy" / "train.parquet").to_parquet(tmp_path / "toy" / "train.parquet")
    pd.read_parquet(mirror / "toy" / "validation.parquet").iloc[:0].to_parquet(tmp_path / "toy" / "validation.parquet")
    with pytest.raises(DataError, match="split 'validation': no rows"):
        make_splits(task(), tmp_path)


def test_bad_task_definitions_are_refused():
    with pytest.raises(DataError, match="template uses \\['text'\\] not listed in text_fields"):
        task(template="{text}")
    with pytest.raises(DataError, match="2 labels but 3 label_words"):
        task(label_words=("a", "b", "c"))
    with pytest.raises(DataError, match="define its binary subtasks"):
        task(labels=(0, 1, 2), label_words=("a", "b", "c")).binary_subtasks()
    with pytest.raises(DataError, match="subtask 'x' names labels \\[5\\]"):
        task(subtasks=(Subtask("x", (5,), (0,)),))


def test_subtask_targets_select_rows_and_binarise():
    three = task(
        labels=(0, 1, 2),
        label_words=("a", "b", "c"),
        subtasks=(Subtask("polar", (2,), (0,)), Subtask("neutral", (1,), (0, 2))),
    )
    labels = np.array([0, 1, 2, 2, 1, 0])
    rows, y = subtask_targets(labels, three, three.subtasks[0])
    np.testing.assert_array_equal(rows, [0, 2, 3, 5])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    rows, y = subtask_targets(labels, three, three.subtasks[1])
    np.testing.assert_array_equal(rows, np.arange(6))
    np.testing.assert_array_equal(y, [0, 1, 0, 0, 1, 0])
