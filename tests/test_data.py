import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from skill_neurons.config import validate_config
from skill_neurons.data import (
    DataError,
    Subtask,
    Task,
    make_splits,
    mirror_sources,
    read_split,
    subtask_targets,
    task_data_root,
)
from skill_neurons.settings import Splitting

from .conftest import toy_reviews

ROOT = Path(__file__).resolve().parents[1]


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
    binary = task(dataset="toy3", labels=(2, 0), drop_unlisted_labels=True)
    splits = make_splits(binary, mirror, max_train=10, max_dev=5, max_test=6)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [10, 5, 6]
    source = pd.read_parquet(mirror / "toy3" / "validation.parquet")
    assert len(make_splits(binary, mirror)["test"]) == source["label"].isin([0, 2]).sum()
    assert set(splits["train"]["label"]) <= {0, 1}


def dataset(root: Path, name: str, **splits: pd.DataFrame) -> Path:
    """A mirror folder `root/name` holding the given splits; returns the data root."""
    (root / name).mkdir(parents=True, exist_ok=True)
    for split, frame in splits.items():
        frame.to_parquet(root / name / f"{split}.parquet")
    return root


def toy_split(mirror: Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(mirror / "toy" / f"{split}.parquet")


def test_missing_train_split_uses_the_fallback_and_says_so(mirror, tmp_path, caplog):
    root = dataset(tmp_path, "tw", test=toy_split(mirror, "validation"), validation=toy_split(mirror, "train"))
    tweet = task(dataset="tw", test_split="test", fallback_train_split="validation")
    with caplog.at_level(logging.WARNING, logger="skill_neurons.data"):
        splits = make_splits(tweet, root)
    assert len(splits["train"]) + len(splits["dev"]) == 120 and len(splits["test"]) == 40
    assert "no 'train' split: cutting fallback_train_split 'validation' into train/dev" in caplog.text
    assert mirror_sources(tweet, root) == [root / "tw" / "test.parquet", root / "tw" / "validation.parquet"]


def test_without_train_or_fallback_the_test_split_is_cut_three_ways_and_the_log_says_so(mirror, tmp_path, caplog):
    root = dataset(tmp_path, "toy", validation=toy_split(mirror, "validation"))
    with caplog.at_level(logging.WARNING, logger="skill_neurons.data"):
        splits = make_splits(task(), root)
    assert sum(len(frame) for frame in splits.values()) == 40
    assert "cutting the test split 'validation' three ways" in caplog.text


def test_a_misspelt_train_split_is_an_error_naming_the_key_and_the_splits_there(mirror):
    expected = (
        f"task 'toy': tasks.toy.train_split is 'trian', which the mirror folder {mirror / 'toy'}"
        " does not have (it has ['train', 'validation'])"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        make_splits(task(train_split="trian"), mirror)
    assert mirror_sources(task(train_split="trian"), mirror) == [mirror / "toy" / "validation.parquet"]


def test_an_explicit_split_never_falls_back(mirror, tmp_path):
    root = dataset(tmp_path, "tw", test=toy_split(mirror, "validation"), validation=toy_split(mirror, "train"))
    named = task(dataset="tw", test_split="test", train_split="train", fallback_train_split="validation")
    with pytest.raises(DataError, match=r"tasks\.toy\.train_split is 'train', which the mirror folder"):
        make_splits(named, root)
    with pytest.raises(
        DataError, match=r"tasks\.toy\.fallback_train_split is 'valid', which .* \(it has \['test', 'validation'\]\)"
    ):
        make_splits(task(dataset="tw", test_split="test", fallback_train_split="valid"), root)


def test_a_missing_test_split_is_an_error_naming_the_key(mirror):
    with pytest.raises(DataError, match=r"task 'toy': tasks\.toy\.test_split is 'test', which the mirror folder"):
        make_splits(task(test_split="test"), mirror)


def test_a_dataset_missing_from_the_mirror_names_the_folder_tried(mirror):
    with pytest.raises(DataError, match=re.escape(f"has no folder {mirror / 'no_such_set'}: check tasks.toy.dataset")):
        make_splits(task(dataset="no_such_set"), mirror)


def test_the_rules_inputs_are_the_mirror_files_read_and_none_for_hub_data(mirror):
    assert mirror_sources(task(), mirror) == [mirror / "toy" / "validation.parquet", mirror / "toy" / "train.parquet"]
    assert mirror_sources(task(dataset="no_such_set"), mirror) == []
    assert mirror_sources(task(), None) == []


def test_a_task_from_the_config_has_every_key_of_the_schema():
    config = validate_config(
        yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), ROOT / "workflow/schemas/config.schema.yaml"
    )
    ag_news = Task.from_config(config, "ag_news")
    assert ag_news.train_split is None and ag_news.drop_unlisted_labels and ag_news.max_dropped_share == 0
    assert Task.from_config(config, "tweet").subtasks[1] == Subtask("neutral_vs_rest", (1,), (0, 2))


def test_dropped_rows_are_counted_per_split_and_label_value(mirror, tmp_path, caplog):
    train, test = toy_split(mirror, "train"), toy_split(mirror, "validation")
    train.loc[[0, 1, 2, 3], "label"] = [-1, -1, 7, -1]
    test.loc[5, "label"] = -1
    root = dataset(tmp_path, "toy", train=train, validation=test)
    with caplog.at_level(logging.INFO, logger="skill_neurons.data"):
        splits = make_splits(task(max_dropped_share=0.05), root)
    assert len(splits["train"]) + len(splits["dev"]) == 116 and len(splits["test"]) == 39
    dropped = [line for line in caplog.text.splitlines() if " dropped, " in line]
    assert len(dropped) == 2
    assert "task toy, split validation: 1 of 40 rows (2.5%) dropped, their label not in labels [0, 1]" in dropped[0]
    assert dropped[0].endswith("per value: {-1: 1}")
    assert "task toy, split train: 4 of 120 rows (3.3%) dropped" in dropped[1]
    assert dropped[1].endswith("per value: {-1: 3, 7: 1}")


def test_dropping_more_than_the_share_is_an_error_unless_the_task_opts_in(mirror):
    counts = pd.read_parquet(mirror / "toy3" / "validation.parquet")["label"].value_counts()
    expected = (
        f"task 'toy', split 'validation': {counts[1]} of 40 rows ({counts[1] / 40:.1%}) have a 'label' outside"
        f" labels [2, 0] (per value: {{1: {counts[1]}}}), more than tasks.toy.max_dropped_share = 0.0;"
        " set tasks.toy.drop_unlisted_labels: true"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        make_splits(task(dataset="toy3", labels=(2, 0)), mirror)
    with pytest.raises(DataError, match="max_dropped_share = 0.2"):
        make_splits(task(dataset="toy3", labels=(2, 0), max_dropped_share=0.2), mirror)
    make_splits(task(dataset="toy3", labels=(2, 0), max_dropped_share=0.5), mirror)
    make_splits(task(dataset="toy3", labels=(2, 0), drop_unlisted_labels=True), mirror)


@pytest.mark.parametrize(
    ("values", "described"),
    [
        (lambda s: s.str.encode("utf-8"), "dtype object (bytes values)"),
        (lambda s: s.str.len(), "dtype int64 (integer values)"),
    ],
)
def test_a_text_column_that_is_not_strings_is_refused(mirror, tmp_path, values, described):
    test = toy_split(mirror, "validation")
    root = dataset(
        tmp_path, "toy", train=toy_split(mirror, "train"), validation=test.assign(sentence=values(test["sentence"]))
    )
    with pytest.raises(
        DataError, match=re.escape(f"split 'validation': text column 'sentence' has {described}, not strings")
    ):
        make_splits(task(), root)


def test_empty_or_blank_texts_are_refused_with_the_first_row_and_id(mirror, tmp_path):
    train = toy_split(mirror, "train")
    train.loc[[4, 9], "sentence"] = ["", " \t "]
    train["idx"] = train.index + 1000
    root = dataset(tmp_path, "toy", train=train, validation=toy_split(mirror, "validation"))
    expected = (
        "task 'toy', split 'train': 2 empty or whitespace-only text(s) in column 'sentence' (first at row 4, idx 1004)"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        make_splits(task(), root)


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


# SuperGLUE CB's labels, as its jsonl writes them.
CB_LABELS = ("entailment", "contradiction", "neutral")


def cb_task(**overrides) -> Task:
    return task(dataset="cb", labels=CB_LABELS, label_words=(" yes", " no", " maybe"), **overrides)


def cb_mirror(root: Path, labels: list[str | None]) -> Path:
    """A mirror folder `cb` whose labels are strings: the toy 3-class train split, and a test split of `labels`."""
    train = toy_reviews(120, 1, n_classes=3)
    train["label"] = train["label"].map(dict(enumerate(CB_LABELS)))
    test = pd.DataFrame({"sentence": [f"the film {i}" for i in range(len(labels))], "label": labels})
    return dataset(root, "cb", train=train, validation=test)


def test_string_labels_become_class_indices_in_the_listed_order_and_subtasks_name_them(tmp_path):
    root = cb_mirror(tmp_path, ["neutral", "entailment", "contradiction", "entailment", "neutral"])
    entailed = Subtask("entailed", ("entailment",), ("contradiction",))
    cb = cb_task(subtasks=(entailed, Subtask("neutral", ("neutral",), CB_LABELS[:2])))
    splits = make_splits(cb, root)
    assert splits["test"]["label"].tolist() == [2, 0, 1, 0, 2]
    assert splits["test"]["label"].dtype == np.int64
    source = pd.read_parquet(root / "cb" / "train.parquet")["label"].value_counts()
    pool = pd.concat([splits["train"], splits["dev"]])["label"].value_counts()
    assert [pool[i] for i in range(3)] == [source["entailment"], source["contradiction"], source["neutral"]]
    rows, y = subtask_targets(splits["test"]["label"].to_numpy(), cb, cb.subtasks[0])
    np.testing.assert_array_equal(rows, [1, 2, 3])
    np.testing.assert_array_equal(y, [1, 0, 1])
    rows, y = subtask_targets(splits["test"]["label"].to_numpy(), cb, cb.subtasks[1])
    np.testing.assert_array_equal(rows, np.arange(5))
    np.testing.assert_array_equal(y, [1, 0, 0, 0, 1])


def test_an_unlisted_or_missing_string_label_is_a_dropped_row(tmp_path):
    root = cb_mirror(tmp_path, ["neutral", "entailment", None, "contradiction", "entailment"])
    two = task(dataset="cb", labels=CB_LABELS[:2], label_words=(" yes", " no"), drop_unlisted_labels=True)
    assert make_splits(two, root)["test"]["label"].tolist() == [0, 1, 0]
    with pytest.raises(DataError, match=re.escape("2 of 5 rows (40.0%) have a 'label' outside labels")):
        make_splits(task(dataset="cb", labels=CB_LABELS[:2], label_words=(" yes", " no")), root)


def test_labels_of_another_type_than_the_label_column_are_refused_naming_key_split_and_value(mirror, tmp_path):
    root = cb_mirror(tmp_path, ["neutral", "entailment", "contradiction"])
    expected = (
        "task 'toy', split 'validation': column 'label' holds 'neutral', a string (3 of 3 rows), but tasks.toy.labels"
        " lists integer ids [0, 1, 2]: list the labels as the column holds them"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        make_splits(task(dataset="cb", labels=(0, 1, 2), label_words=(" yes", " no", " maybe")), root)
    first = toy_split(mirror, "validation")["label"].iloc[0]
    expected = (
        f"task 'toy', split 'validation': column 'label' holds {first}, not a string (40 of 40 rows), but"
        " tasks.toy.labels lists strings ['negative', 'positive']"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        make_splits(task(labels=("negative", "positive")), mirror)


def test_labels_of_two_types_are_refused():
    with pytest.raises(DataError, match=re.escape("tasks.toy.labels [0, 'positive'] must be all integer ids or all")):
        task(labels=(0, "positive"))
    with pytest.raises(DataError, match=re.escape("subtask 'x' names labels [0] outside labels ['no', 'yes']")):
        task(labels=("no", "yes"), subtasks=(Subtask("x", ("yes",), (0,)),))


def split_data_params(config: dict, task_name: str) -> dict:
    """The params of the rule split_data (data.smk) as Snakemake evaluates them for the job of one task."""
    wildcards = SimpleNamespace(task=task_name)
    params = Task.params(config) | Splitting.params(config)
    return {key: value(wildcards) if callable(value) else value for key, value in params.items()}


def test_a_task_with_its_own_data_root_reads_there_and_the_others_the_shared_root(mirror, tmp_path):
    own_root = dataset(tmp_path, "toy", train=toy_reviews(60, 5), validation=toy_reviews(30, 6))
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data_root"] = str(mirror)
    shared = {"dataset": "toy", "text_fields": ["sentence"], "template": "{sentence}", "labels": [0, 1]}
    shared |= {"label_words": [" negative", " positive"], "test_split": "validation"}
    config["tasks"] = {"shared": shared, "own": shared | {"data_root": str(own_root)}}
    config["label_words"]["tasks"] = config["pruning"]["tasks"] = ["shared"]
    validate_config(config, ROOT / "workflow/schemas/config.schema.yaml")
    for name, root in (("shared", mirror), ("own", own_root)):
        params = split_data_params(config, name)
        task_, splitting = Task.from_params(params), Splitting.from_params(params)
        assert splitting.data_root == str(root)
        test = make_splits(task_, splitting.data_root)["test"]
        assert test["sentence"].tolist() == pd.read_parquet(root / "toy" / "validation.parquet")["sentence"].tolist()
        assert mirror_sources(task_, task_data_root(config, name)) == [
            root / "toy" / "validation.parquet",
            root / "toy" / "train.parquet",
        ]


def test_a_pinned_hub_revision_is_what_the_hub_is_asked_for_and_a_param_of_the_split(monkeypatch):
    import datasets

    asked = []

    def load_dataset(name, subset, split, revision=None):
        asked.append((name, subset, split, revision))
        return SimpleNamespace(to_pandas=lambda: toy_reviews(4, 0))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = Task("toy", "someone/reviews", ("sentence",), "{sentence}", (0, 1), ("a", "b"), revision="v1.2")
    assert len(read_split(task, "train", data_root=None)) == 4
    assert asked == [("someone/reviews", None, "train", "v1.2")]
    # A rule's params hold the revision: pinning another one reruns the split and what follows.
    config = {"tasks": {"toy": {"revision": "v1.3"}}}
    assert Task.params(config)["revision"](SimpleNamespace(task="toy")) == "v1.3"
