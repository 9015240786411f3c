"""Generation tasks (Zhao, Wang et al.): rendering, splitting, config checks, tuning, the dump and the causal test."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from skill_neurons import completions
from skill_neurons.activation_store import read_layer
from skill_neurons.aux_metrics import multiplication
from skill_neurons.config import ConfigError, validate_config
from skill_neurons.data import DataError
from skill_neurons.generation import GenerationTask, split_generation
from skill_neurons.models import load_model
from skill_neurons.neurons import on_neurons
from skill_neurons.perturbation import Perturbation, perturbed
from skill_neurons.prompting import PromptedLM
from skill_neurons.settings import GenerationTuning
from skill_neurons.stages.aux_metrics import groups_of, per_example_loss, random_neurons
from skill_neurons.tuning import init_prompt

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

ARITHMETIC = GenerationTask(
    name="arith",
    dataset="bigbench",
    instruction="Q: {inputs} Choices: {choices} A:",
    completion=" {answer}",
    choices_column="multiple_choice_targets",
    scores_column="multiple_choice_scores",
    metrics=("loss",),
    shuffle_choices=False,
)
QUESTIONS = pd.DataFrame(
    {
        "example": [0, 1],
        "inputs": ["What is 2 times 3?", "What is 1 plus 1?"],
        "multiple_choice_targets": [["5", "6", "banana"], ["2", "house"]],
        "multiple_choice_scores": [[0, 1, 0], [1, 0]],
    }
)


def test_an_example_renders_its_choices_and_its_gold_answer():
    assert ARITHMETIC.instructions(QUESTIONS) == [
        "Q: What is 2 times 3? Choices: 5, 6, banana A:",
        "Q: What is 1 plus 1? Choices: 2, house A:",
    ]
    assert ARITHMETIC.completions(QUESTIONS) == [" 6", " 2"]
    assert ARITHMETIC.choice_completions(QUESTIONS) == [[" 5", " 6", " banana"], [" 2", " house"]]
    assert ARITHMETIC.gold_scores(QUESTIONS) == [[0, 1, 0], [1, 0]]


def test_shuffled_choices_keep_the_gold_with_its_choice_in_an_order_seeded_by_the_example():
    shuffled = GenerationTask(**{**ARITHMETIC.__dict__, "shuffle_choices": True})
    many = pd.DataFrame(
        {
            "example": range(40),
            "inputs": ["What is 1 plus 1?"] * 40,
            "multiple_choice_targets": [["a", "b", "c", "gold"]] * 40,  # BIG-bench: the gold answer last
            "multiple_choice_scores": [[0, 0, 0, 1]] * 40,
        }
    )
    choices, gold = shuffled.choices(many), shuffled.gold_scores(many)
    assert all(sorted(c) == ["a", "b", "c", "gold"] for c in choices)
    assert all(c[g.index(1)] == "gold" for c, g in zip(choices, gold)) and shuffled.answers(many) == ["gold"] * 40
    assert {g.index(1) for g in gold} == {0, 1, 2, 3}  # the gold's place varies
    order = np.random.default_rng(7).permutation(4)
    assert choices[7] == [["a", "b", "c", "gold"][i] for i in order]  # seeded by the example id
    assert shuffled.instructions(many)[7] == f"Q: What is 1 plus 1? Choices: {', '.join(choices[7])} A:"


def test_label_words_are_the_answer_of_each_label_and_the_choices():
    task = GenerationTask(name="nli", instruction="{premise}?", completion="{answer}", label_words=(" yes", " no"))
    frame = pd.DataFrame({"premise": ["a", "b"], "label": [1, 0]})
    assert task.completions(frame) == [" no", " yes"]
    assert task.choices(frame) == [[" yes", " no"]] * 2 and task.gold_scores(frame) == [[0, 1], [1, 0]]


def test_multiplication_is_the_skill_label_of_an_arithmetic_question():
    assert [multiplication(q) for q in QUESTIONS["inputs"]] == [True, False]


def write_arithmetic(root: Path, n: int = 60) -> Path:
    folder = root / "bigbench" / "arithmetic"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "subtask": ["add", "mul"] * (n // 2),
            "inputs": [f"What is {i} plus 1?" for i in range(n)],
            "multiple_choice_targets": [[str(i + 1), "x"] for i in range(n)],
            "multiple_choice_scores": [[1, 0]] * n,
        }
    ).to_parquet(folder / "default.parquet")
    return root


def test_one_file_is_cut_into_disjoint_capped_splits_after_the_filter(tmp_path):
    root = write_arithmetic(tmp_path)
    task = GenerationTask(
        name="arith",
        dataset="bigbench",
        subset="arithmetic",
        train_split="default",
        validation_split="default",
        where={"subtask": ("mul",)},
        choices_column="multiple_choice_targets",
        scores_column="multiple_choice_scores",
    )
    splits = split_generation(task, root, {"train": 100, "dev": 5, "validation": 10}, seed=0)
    ids = {split: set(frame["example"]) for split, frame in splits.items()}
    assert [len(ids[s]) for s in ("train", "dev", "validation")] == [15, 5, 10]  # 30 'mul' rows: the rest trains
    assert (
        not (ids["train"] & ids["dev"])
        and not (ids["train"] & ids["validation"])
        and not (ids["dev"] & ids["validation"])
    )
    assert all(i % 2 == 1 for s in ids.values() for i in s)  # 'mul' rows are the odd rows of the file
    again = split_generation(task, root, {"train": 100, "dev": 5, "validation": 10}, seed=0)
    assert all(again[s].equals(splits[s]) for s in splits)


def test_a_filter_or_column_that_the_data_lacks_is_named_with_its_file(tmp_path):
    root = write_arithmetic(tmp_path)
    base = dict(
        name="arith", dataset="bigbench", subset="arithmetic", train_split="default", validation_split="default"
    )
    with pytest.raises(
        DataError, match=r"aux_metrics.tasks.arith.where: no row of .*default.parquet has subtask in \['div'\]"
    ):
        split_generation(
            GenerationTask(**base, where={"subtask": ("div",)}), root, {"train": 5, "dev": 5, "validation": 5}, 0
        )
    with pytest.raises(DataError, match=r"has no column\(s\) \['heuristic'\]"):
        split_generation(GenerationTask(**base, group_by="heuristic"), root, {"train": 5, "dev": 5, "validation": 5}, 0)


def aux_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "aux_metrics.yaml").read_text())


def test_the_aux_config_is_valid_and_its_tasks_build():
    config = validate_config(aux_config(), SCHEMA)
    assert config["aux_metrics"]["prompt"]["n_tokens"] == 20 and config["aux_metrics"]["prompt"]["weight_decay"] == 0.01
    assert GenerationTask.from_config(config, "arithmetic").metric_specs[1].label == "multiplication"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"completion": " {gold}"}, r"aux_metrics.tasks.hans.completion must contain \{answer\}"),
        ({"metrics": ["perplexity"]}, r"config key aux_metrics.tasks.hans.metrics.0: 'perplexity' is not valid"),
        ({"metrics": [{"function": "sum_of_digits"}]}, r"metrics\[0\]: metric function 'sum_of_digits' is not one of"),
        ({"choices_column": "c", "scores_column": "s"}, r"aux_metrics.tasks.hans: give label_words or choices_column"),
        ({"causal_metric": 2}, r"aux_metrics.tasks.hans.causal_metric: 2 is not an index of its 2 metrics"),
    ],
)
def test_a_bad_generation_task_is_refused_with_its_key(change, message):
    config = aux_config()
    config["aux_metrics"]["tasks"]["hans"].update(change)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA)


def test_a_config_without_any_task_is_refused():
    config = aux_config()
    config["aux_metrics"]["tasks"] = {}
    with pytest.raises(ConfigError, match="no task, and no aux_metrics.tasks either"):
        validate_config(copy.deepcopy(config), SCHEMA)


TOY = GenerationTask(
    name="toy",
    instruction="Review : {sentence} \n Sentiment :",
    completion="{answer}",
    label_words=(" negative", " positive"),
)


@pytest.fixture(scope="module")
def lm(llama_dir) -> PromptedLM:
    model, tokenizer = load_model(llama_dir)
    return PromptedLM(model, tokenizer, "{instruction}", (), 3)


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    from .conftest import toy_reviews

    return toy_reviews(24, 5).assign(example=np.arange(100, 124))


def test_tuning_keeps_the_prompt_of_the_lowest_dev_loss(lm, reviews):
    settings = GenerationTuning(3, "normal", 0.5, 0.05, 0.01, 4, 6, 2, 3, 8)
    train, dev = reviews.iloc[:16], reviews.iloc[16:]
    prompt, curve = completions.tune_generation_prompt(lm, TOY, train, dev, seed=0, settings=settings)
    assert curve["step"].tolist() == [0, 2, 4, 6]
    dev_loss = completions.mean_loss(lm, prompt, completions.task_batches(lm, TOY, dev, 8))
    assert dev_loss == pytest.approx(curve["dev_loss"].min(), rel=1e-5)
    assert curve["dev_loss"].min() < curve["dev_loss"].iloc[0]  # lr 0.05 on a tiny model: it learns


def test_the_dump_reads_back_as_the_captured_activations_with_each_examples_loss(lm, reviews, tmp_path):
    prompt = init_prompt(lm, "normal", 0.5, seed=1)
    metrics = completions.dump_generation(lm, prompt, TOY, reviews, tmp_path / "run", batch_size=5, dtype="float32")
    assert metrics["example"].tolist() == list(range(100, 124))
    layer = read_layer(tmp_path / "run", "validation", 1)
    (batch,) = completions.task_batches(lm, TOY, reviews, len(reviews))
    captured = completions.capture_completions(lm, prompt, batch)
    order = np.argsort(batch.examples.numpy())
    np.testing.assert_allclose(layer.prompt, captured.prompt[1].numpy()[order], atol=1e-5)
    np.testing.assert_allclose(metrics["loss"], captured.loss.numpy()[order], rtol=1e-5)
    np.testing.assert_allclose(metrics["confidence"], np.exp(-metrics["n_tokens"] * metrics["loss"]), rtol=1e-6)
    scores = completions.choice_scores(lm, prompt, TOY.instructions(reviews), TOY.choice_completions(reviews), 24)
    expected = [float(np.argmax(s) == label) for s, label in zip(scores, reviews["label"])]
    assert metrics["correct"].tolist() == expected


def test_a_perturbation_of_a_completion_batch_touches_the_prompt_columns_only(lm, reviews):
    prompt = init_prompt(lm, "normal", 0.5, seed=2)
    (batch,) = completions.task_batches(lm, TOY, reviews.iloc[:6], 6)
    width = lm.projections[0].in_features
    zeroed = Perturbation("zero", {0: torch.arange(width)}, positions=lm.prompt_positions)
    seen, clean = {}, {}
    with on_neurons(lm.projections[:1], lambda _, a: clean.setdefault("a", a)):
        completions.completion_loss(lm, prompt, batch)
    with perturbed(lm.projections, zeroed), on_neurons(lm.projections[:1], lambda _, a: seen.setdefault("a", a)):
        completions.completion_loss(lm, prompt, batch)
    columns = slice(batch.prompt_start, batch.prompt_start + lm.n_prompt)
    before, after = clean["a"], seen["a"]
    assert torch.all(after[:, columns] == 0) and torch.count_nonzero(before[:, columns]) > 0
    outside = torch.ones(after.shape[1], dtype=torch.bool)
    outside[columns] = False
    torch.testing.assert_close(after[:, outside], before[:, outside])


def test_per_example_loss_follows_the_given_example_order(lm, reviews):
    prompt = init_prompt(lm, "normal", 0.5, seed=3)
    batches = completions.task_batches(lm, TOY, reviews, 7)
    order = reviews["example"].to_numpy()[::-1]
    losses = per_example_loss(lm, prompt, batches, order)
    alone = completions.completion_loss(lm, prompt, completions.task_batches(lm, TOY, reviews.iloc[[-1]], 1)[0])
    assert losses[0] == pytest.approx(float(alone[0]), rel=1e-5)


def test_random_neurons_match_the_top_sets_per_layer_and_avoid_them():
    top = {0: torch.tensor([1, 2]), 3: torch.tensor([7])}
    drawn = random_neurons(top, {0: 10, 3: 8}, seed=4)
    assert {k: len(v) for k, v in drawn.items()} == {0: 2, 3: 1}
    assert not set(drawn[0].tolist()) & {1, 2} and drawn[3].item() != 7
    assert all(torch.equal(drawn[k], random_neurons(top, {0: 10, 3: 8}, seed=4)[k]) for k in drawn)


def test_causal_groups_are_a_columns_values_or_a_flag_and_its_complement():
    frame = pd.DataFrame({"heuristic": ["lexical_overlap", "subsequence"], "label": [1, 0]})
    assert groups_of(TOY, frame, {"column": "heuristic"}).tolist() == ["lexical_overlap", "subsequence"]
    assert groups_of(TOY, frame, {"column": "label", "equals": 1}).tolist() == ["label == 1", "not label == 1"]
    assert groups_of(TOY, frame, None).tolist() == ["all", "all"]


def test_a_data_metric_constant_on_the_validation_file_is_refused_with_the_config():
    config = aux_config()
    config["aux_metrics"]["tasks"]["hans"]["metrics"] = ["loss", {"column": "heuristic", "equals": "lexical_overlp"}]
    message = (
        r"config key aux_metrics.tasks.hans.metrics\[1\]: metric 'heuristic == lexical_overlp' is constant \(0.0\)"
        r" on the whole validation split"
    )
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA)
