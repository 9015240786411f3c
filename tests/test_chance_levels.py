"""Chance levels beside the skill-neuron numbers: lopsided subtasks, majority classes, prompts stuck on one class.

rank_neurons, table1 and controls_table run as stages on hand-made activation folders of two seeds:
'toy' (binary; test 14 of 20 label 1; seed 1's prompt answers 'positive' to every test example) and
'toy3' (3 classes; dev holds 3 neutral examples against 20 others; test 14 of 20 label 2).
"""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skill_neurons.activation_store import read_examples
from skill_neurons.data import Subtask, Task
from skill_neurons.io import read_parquet, write_parquet
from skill_neurons.reproduction import controls_measured
from skill_neurons.scores import chance_p_value, majority_rate, score_run, task_chance
from skill_neurons.stages.controls import controls_table
from skill_neurons.stages.ranking import SUBTASKS_COLUMN, chance_table, rank_neurons, subtask_summary, table1

from .conftest import fake_job, write_activation_run

TOY = Task(
    name="toy",
    dataset="toy",
    text_fields=("sentence",),
    template="{sentence}",
    labels=(0, 1),
    label_words=("negative", "positive"),
)
TOY3 = Task(
    name="toy3",
    dataset="toy3",
    text_fields=("sentence",),
    template="{sentence}",
    labels=(0, 1, 2),
    label_words=("negative", "neutral", "positive"),
    subtasks=(Subtask("polar", (2,), (0,)), Subtask("neutral", (1,), (0, 2))),
)
SEEDS = [0, 1]
# Per task and split: how many examples of each class index.
CLASS_COUNTS = {
    "toy": {"dev": [12, 12], "test": [6, 14]},
    "toy3": {"dev": [10, 3, 10], "test": [4, 2, 14]},
}
MIN_SUBTASK_EXAMPLES = 10


def task_params(task: Task) -> dict:
    return {
        "name": task.name,
        "dataset": task.dataset,
        "text_fields": list(task.text_fields),
        "template": task.template,
        "labels": list(task.labels),
        "label_words": list(task.label_words),
        "subtask_name": [s.name for s in task.subtasks],
        "subtask_positive": [list(s.positive) for s in task.subtasks],
        "subtask_negative": [list(s.negative) for s in task.subtasks],
    }


def predictions(task: Task, labels: np.ndarray, seed: int, rng: np.random.Generator) -> np.ndarray:
    """Seed 1 of 'toy' answers 'positive' to everything; otherwise the label, a quarter of them replaced at random."""
    if task.name == "toy" and seed == 1:
        return np.ones_like(labels)
    wrong = rng.random(len(labels)) < 0.25
    return np.where(wrong, rng.integers(0, len(task.labels), len(labels)), labels)


def ranked(folder, task: Task) -> dict:
    """rank_neurons over two seeds of random activations; its outputs, log and per-seed runs."""
    rng = np.random.default_rng(len(task.name))
    runs, scores, metrics = [], [], []
    for seed in SEEDS:
        splits = {}
        for split, counts in CLASS_COUNTS[task.name].items():
            labels = np.repeat(np.arange(len(counts)), counts)
            prompt = rng.standard_normal((len(labels), 2, 4)).astype(np.float32)
            splits[split] = (prompt, labels, predictions(task, labels, seed, rng))
        run = write_activation_run(folder / f"run{seed}", splits)
        runs.append(str(run))
        scores.append(str(folder / f"scores{seed}.parquet"))
        write_parquet(score_run(run, task), scores[-1])
        test_labels, test_predictions = splits["test"][1:]
        metrics.append(str(folder / f"metrics{seed}.json"))
        (folder / f"metrics{seed}.json").write_text(
            json.dumps({"test_accuracy": (test_labels == test_predictions).mean()})
        )
    outputs = {name: str(folder / f"{name}.parquet") for name in ("ranking", "correlation", "selectivity")}
    outputs["summary"] = str(folder / "summary.json")
    rank_neurons(
        fake_job(
            input={"scores": scores, "runs": runs, "metrics": metrics},
            output=outputs,
            params={**task_params(task), "seeds": SEEDS, "min_subtask_examples": MIN_SUBTASK_EXAMPLES},
            log=[str(folder / "rank.log")],
        )
    )
    return {
        "summary": json.loads((folder / "summary.json").read_text()),
        "summary_path": outputs["summary"],
        "ranking": read_parquet(outputs["ranking"]),
        "log": (folder / "rank.log").read_text(),
        "runs": runs,
    }


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return ranked(tmp_path_factory.mktemp("toy"), TOY)


@pytest.fixture(scope="module")
def toy3(tmp_path_factory):
    return ranked(tmp_path_factory.mktemp("toy3"), TOY3)


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line]


def test_majority_rate_is_the_share_of_the_commonest_value():
    assert majority_rate(np.array([1, 1, 1, 0])) == 0.75
    assert majority_rate(np.array([2, 0, 1, 2, 0, 2])) == 0.5
    assert math.isnan(majority_rate(np.array([], dtype=np.int64)))


def test_a_subtask_with_few_dev_examples_is_flagged_with_its_counts_and_warned_of(toy3):
    subtasks = {s["subtask"]: s for s in toy3["summary"]["subtasks"]}
    assert list(subtasks) == ["polar", "neutral"]
    neutral, polar = subtasks["neutral"], subtasks["polar"]
    # neutral: dev 3 label-1 examples against 10 + 10; test 2 against 4 + 14
    assert (neutral["dev_positive"], neutral["dev_negative"], neutral["few_dev_examples"]) == (3, 20, True)
    assert (neutral["test_positive"], neutral["test_negative"]) == (2, 18)
    assert neutral["dev_majority_class"] == pytest.approx(20 / 23)
    assert neutral["test_majority_class"] == pytest.approx(18 / 20)
    # polar: label 2 against label 0, dev 10 / 10, test 14 / 4
    assert (polar["dev_positive"], polar["dev_negative"], polar["few_dev_examples"]) == (10, 10, False)
    assert (polar["test_positive"], polar["test_negative"]) == (14, 4)
    assert polar["dev_majority_class"] == 0.5 and polar["test_majority_class"] == pytest.approx(14 / 18)
    assert toy3["summary"]["min_subtask_examples"] == MIN_SUBTASK_EXAMPLES
    lines = [line for line in warnings(toy3["log"]) if "subtask" in line]
    assert len(lines) == 1
    assert (
        "task toy3, subtask neutral: split dev has 3 positive and 20 negative examples, fewer than"
        " ranking.min_subtask_examples = 10 on a side"
    ) in lines[0]
    assert "(majority class: 87.0% of dev, 90.0% of test)" in lines[0]


def test_each_subtasks_top_neuron_is_the_first_of_its_subtask_in_the_ranking(toy3):
    ranking = toy3["ranking"]
    for entry in toy3["summary"]["subtasks"]:
        top = ranking[ranking["subtask"] == entry["subtask"]].iloc[0]
        assert (entry["top1_layer"], entry["top1_neuron"]) == (top["layer"], top["neuron"])
        assert entry["top1_dev_predictivity"] == top["mean"]
        assert entry["top1_test_predictivity"] == top["test_predictivity_mean"]


def test_the_flag_takes_fewer_than_the_threshold_on_a_side(toy3):
    examples = read_examples(toy3["runs"][0])
    neutral = TOY3.subtasks[1]
    assert not subtask_summary(TOY3, neutral, toy3["ranking"], examples, min_examples=3)["few_dev_examples"]
    assert subtask_summary(TOY3, neutral, toy3["ranking"], examples, min_examples=4)["few_dev_examples"]


def test_a_binary_task_with_enough_examples_is_not_flagged(toy):
    (only,) = toy["summary"]["subtasks"]
    assert (only["subtask"], only["dev_positive"], only["dev_negative"]) == ("toy", 12, 12)
    assert not only["few_dev_examples"]
    assert only["dev_majority_class"] == 0.5 and only["test_majority_class"] == pytest.approx(0.7)


def test_the_summary_holds_both_chance_levels_of_the_test_split(toy, toy3):
    assert toy["summary"]["random_guess"] == 0.5
    assert toy["summary"]["test_majority_class"] == pytest.approx(14 / 20)
    assert toy3["summary"]["random_guess"] == pytest.approx(1 / 3)
    assert toy3["summary"]["test_majority_class"] == pytest.approx(14 / 20)


def test_a_prompt_that_predicts_one_class_only_is_flagged_and_warned_of(toy, toy3):
    assert toy["summary"]["one_class_seeds"] == [1]
    assert toy3["summary"]["one_class_seeds"] == []
    (line,) = [line for line in warnings(toy["log"]) if "seed" in line]
    assert "task toy, seed 1: the tuned prompt predicts class 1 ('positive') for every test example" in line
    assert line.endswith("its test accuracy is that class's share of the test split, 70.0%")
    assert not [line for line in warnings(toy3["log"]) if "seed" in line]


def tables(folder, name: str) -> dict[str, str]:
    return {kind: str(folder / f"{name}.{kind}") for kind in ("parquet", "markdown", "html")}


def test_table1_shows_chance_levels_one_class_seeds_and_subtasks_beside_their_majority(toy, toy3, tmp_path):
    outputs = tables(tmp_path, "table1")
    table1(fake_job(input=[toy["summary_path"], toy3["summary_path"]], output=outputs))
    table = pd.read_parquet(outputs["parquet"]).set_index("task")
    assert table["random guess (%)"].tolist() == ["50.0", "33.3"]
    assert table["majority class (%)"].tolist() == ["70.0", "70.0"]
    assert table["one-class seeds"].tolist() == ["1 of 2", "0 of 2"]
    assert table.loc["toy", SUBTASKS_COLUMN] == ""  # a binary task's one subtask is the row itself
    polar, neutral = table.loc["toy3", SUBTASKS_COLUMN].split("; ")
    subtasks = {s["subtask"]: s for s in toy3["summary"]["subtasks"]}
    top = subtasks["neutral"]
    expected = f"top-1 {100 * top['top1_dev_predictivity']:.1f} / {100 * top['top1_test_predictivity']:.1f}"
    # 20 / 23 = 87.0%, 18 / 20 = 90.0%; polar 10 / 20 = 50.0%, 14 / 18 = 77.8%
    assert neutral == (f"neutral: {expected}, majority 87.0 / 90.0 (few dev examples: 3 positive, 20 negative)")
    assert polar.startswith("polar: top-1 ") and polar.endswith(", majority 50.0 / 77.8")
    assert "| majority class (%) |" in open(outputs["markdown"]).read()


def test_table1_leaves_the_subtasks_column_out_without_a_multi_class_task(toy, tmp_path):
    outputs = tables(tmp_path, "table1")
    table1(fake_job(input=[toy["summary_path"]], output=outputs))
    assert SUBTASKS_COLUMN not in pd.read_parquet(outputs["parquet"]).columns


def test_controls_table_shows_both_chance_levels_and_the_reproduction_reads_no_control_from_them(toy, toy3, tmp_path):
    controls = ["hard_prompt", "random_model"]
    trials = {"hard_prompt": [0.6], "random_model": [0.5, 0.55]}
    inputs = {}
    for control, accuracies in trials.items():
        inputs[control] = []
        for task in ("toy", "toy3"):
            for seed, accuracy in enumerate(accuracies):
                path = tmp_path / f"{control}-{task}-{seed}.json"
                path.write_text(json.dumps({"top1_test_accuracy": accuracy, "random_guess": 0.0}))
                inputs[control].append(str(path))
    outputs = tables(tmp_path, "controls")
    controls_table(
        fake_job(
            input={**inputs, "tuned": [toy["summary_path"], toy3["summary_path"]]},
            output=outputs,
            params={"tasks": ["toy", "toy3"], "controls": controls},
        )
    )
    table = pd.read_parquet(outputs["parquet"])
    assert list(table.columns) == [
        "task",
        "random guess (%)",
        "majority class (%)",
        "hard prompt (%)",
        "random model (%)",
        "tuned prompt (%)",
    ]
    assert table["random guess (%)"].tolist() == ["50.0", "33.3"]
    assert table["majority class (%)"].tolist() == ["70.0", "70.0"]
    assert table["hard prompt (%)"].tolist() == ["60.0", "60.0"]
    assert set(controls_measured(table)) == {f"table3.{t}.{c}" for t in ("toy", "toy3") for c in controls}


def test_the_chance_test_is_the_binomial_tail_above_a_random_guess():
    # n = 10, guess 1/2: P(X >= 9) = (10 + 1) / 1024, P(X >= 8) = (45 + 10 + 1) / 1024
    assert chance_p_value(0.9, 10, 0.5) == pytest.approx(11 / 1024)
    assert chance_p_value(0.8, 10, 0.5) == pytest.approx(56 / 1024)
    # three classes, n = 3: P(X >= 3) = (1/3)^3
    assert chance_p_value(1.0, 3, 1 / 3) == pytest.approx(1 / 27)


def test_the_chance_table_marks_tasks_whose_prompt_is_not_above_a_random_guess(tmp_path):
    summaries = [
        {"task": "sst2", "prompt_test_accuracy_mean": 0.9, "random_guess": 0.5},
        {"task": "qnli", "prompt_test_accuracy_mean": 0.8, "random_guess": 0.5},
        {"task": "mnli", "prompt_test_accuracy_mean": 1.0, "random_guess": 1 / 3},
    ]
    paths = {"summaries": [], "tests": []}
    for summary, size in zip(summaries, (10, 10, 3)):
        paths["summaries"].append(str(tmp_path / f"{summary['task']}.json"))
        (tmp_path / f"{summary['task']}.json").write_text(json.dumps(summary))
        paths["tests"].append(str(tmp_path / f"{summary['task']}_test.parquet"))
        pd.DataFrame({"example": range(size), "label": [0] * size}).to_parquet(paths["tests"][-1])
    outputs = tables(tmp_path, "chance")
    job = fake_job(input=paths, output=outputs, params={"alpha": 0.05})
    chance_table(job)
    assert "| qnli | 0.8 | 0.5 | 10 |" in open(outputs["markdown"]).read()
    table = read_parquet(outputs["parquet"]).set_index("task")
    assert table["test_examples"].to_dict() == {"sst2": 10, "qnli": 10, "mnli": 3}
    assert table["p_value"].tolist() == pytest.approx([11 / 1024, 56 / 1024, 1 / 27])
    # 0.0107 and 0.037 are below 0.05; 0.0547 is not
    assert table["above_chance"].to_dict() == {"sst2": True, "qnli": False, "mnli": True}
    with pytest.raises(ValueError):
        task_chance(summaries, [10, 10], 0.05)  # a test size for every summary


def test_scoring_a_run_and_the_table_and_plot_stages_load_neither_torch_nor_transformers(toy, tmp_path):
    """Score, rank, table and plot jobs run no model: each would spend seconds loading torch and transformers."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps(task_params(TOY)))
    modules = ["ranking", "controls", "label_words", "reproduction", "plots", "perturbation", "transfer"]
    code = (
        "import json, sys\nfrom skill_neurons.data import Task\nfrom skill_neurons.scores import score_run\n"
        + "".join(f"import skill_neurons.stages.{name}\n" for name in modules)
        + f"task = Task.from_params(json.load(open({str(params)!r})))\n"
        + f"print(len(score_run({toy['runs'][0]!r}, task)))\n"
        + "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows, loaded = result.stdout.split("\n")[:2]
    assert int(rows) == len(score_run(toy["runs"][0], TOY)) > 0  # the same scores as in this process
    assert loaded == "[]", f"scoring loads {loaded}"
