"""Prompt transferability (Wang et al. §6.2): pairs, the overlap of activated neurons, the stage on a tiny model."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from skill_neurons.io import read_parquet, write_tensors
from skill_neurons.models import load_model
from skill_neurons.neurons import on_neurons
from skill_neurons.plan import transfer_pairs
from skill_neurons.prompting import PromptedLM
from skill_neurons.stages.transfer import prompt_transfer, transferability_table
from skill_neurons.transfer import (
    activation_states,
    indicator_correlations,
    overlap_rate,
    top_share_mask,
)
from skill_neurons.tuning import evaluate, init_prompt

from .conftest import TOY_TASK_PARAMS, fake_job, toy_reviews


def test_pairs_are_the_ordered_pairs_of_tasks_with_the_same_label_words():
    words = {"sst2": [" negative", " positive"], "imdb": [" negative", " positive"], "qnli": [" yes", " no"]}
    assert transfer_pairs(words) == [("imdb", "sst2"), ("sst2", "imdb")]
    assert transfer_pairs({"a": ["x", "y"], "b": ["y", "x"]}) == []  # the same words in another order: no transfer


def test_the_overlap_rate_is_the_cosine_of_the_binary_states_by_hand():
    first = np.array([[[1, 1, 0, 1]], [[0, 0, 1, 1]]], dtype=bool)  # (2 layers, 1 position, 4 neurons): 5 on
    second = np.array([[[1, 0, 0, 1]], [[1, 0, 1, 0]]], dtype=bool)  # 4 on; both: (0,0), (0,3), (1,2) = 3
    assert overlap_rate(first, second) == pytest.approx(3 / np.sqrt(5 * 4))
    mask = np.array([[True, True, False, False], [False, False, False, True]])  # neurons (0,0), (0,1), (1,3)
    assert overlap_rate(first, second, mask) == pytest.approx(1 / np.sqrt(3 * 1))  # on: a 3, b 1; both 1
    assert overlap_rate(first, np.zeros_like(first)) == 0.0
    with pytest.raises(ValueError, match="do not compare"):
        overlap_rate(first, first[:1])


def test_the_skill_mask_is_the_top_share_of_all_neurons():
    ranking = pd.DataFrame({"layer": [1, 0, 0, 1], "neuron": [2, 0, 1, 0], "rank": [1, 2, 3, 4]})
    mask = top_share_mask(ranking, [2, 3], 0.4)  # 5 neurons: the top 2
    assert mask.tolist() == [[True, False, False], [False, False, True]]


def test_the_indicator_correlation_is_spearman_over_pair_means_and_nan_below_three_pairs():
    pairs = pd.DataFrame(
        {
            "source": ["a", "a", "b", "c"],
            "target": ["b", "b", "a", "a"],
            "seed": [0, 1, 0, 0],
            "transfer_accuracy": [0.6, 0.8, 0.5, 0.9],
            "overlap_all": [0.2, 0.4, 0.1, 0.5],
            "overlap_skill": [0.3, 0.3, 0.9, 0.1],
        }
    )
    table = indicator_correlations(pairs).set_index("indicator")
    # pair means: (a,b) acc .7 all .3 skill .3; (b,a) .5 .1 .9; (c,a) .9 .5 .1
    assert table.loc["overlap_all", "spearman"] == pytest.approx(1.0) and table.loc["overlap_all", "pairs"] == 3
    assert table.loc["overlap_skill", "spearman"] == pytest.approx(
        spearmanr([0.3, 0.9, 0.1], [0.7, 0.5, 0.9]).statistic
    )
    assert np.isnan(indicator_correlations(pairs[pairs["source"] != "c"])["spearman"]).all()
    assert set(indicator_correlations(pairs)["tasks"]) == {"all"}


def test_pairs_of_a_task_at_chance_are_left_out_of_the_above_chance_correlation():
    names = ["a", "b", "c", "d"]
    pairs = pd.DataFrame([(s, t) for s in names for t in names if s != t], columns=["source", "target"]).assign(seed=0)
    # 12 pairs; d's own prompt is at chance. Without d: 6 pairs where accuracy rises with overlap_all.
    pairs["overlap_all"] = np.arange(12) / 12
    pairs["overlap_skill"] = (np.arange(12) % 5) / 5
    pairs["transfer_accuracy"] = np.where(
        pairs[["source", "target"]].eq("d").any(axis=1), 1 - pairs["overlap_all"], 0.5 + pairs["overlap_all"] / 4
    )
    table = indicator_correlations(pairs, at_chance=["d"]).set_index(["tasks", "indicator"])
    kept = pairs[(pairs["source"] != "d") & (pairs["target"] != "d")]
    assert len(kept) == 6 and table.loc[("above chance", "overlap_all"), "pairs"] == 6
    assert table.loc[("above chance", "overlap_all"), "spearman"] == pytest.approx(1.0)
    assert table.loc[("above chance", "overlap_skill"), "spearman"] == pytest.approx(
        spearmanr(kept["overlap_skill"], kept["transfer_accuracy"]).statistic
    )
    assert table.loc[("all", "overlap_all"), "spearman"] == pytest.approx(
        spearmanr(pairs["overlap_all"], pairs["transfer_accuracy"]).statistic
    )
    assert table.loc[("all", "overlap_all"), "pairs"] == 12


@pytest.fixture(scope="module")
def lm(llama_dir) -> PromptedLM:
    model, tokenizer = load_model(llama_dir)
    return PromptedLM(model, tokenizer, "Review : {sentence}", (" negative", " positive"), 3)


def test_activation_states_are_the_signs_of_the_prompt_fed_alone(lm):
    prompt = init_prompt(lm, "normal", 0.5, seed=1)
    seen = {}
    with on_neurons(lm.projections, lambda layer, a: seen.setdefault(layer, a[0].clone())), torch.no_grad():
        lm.model(inputs_embeds=prompt.unsqueeze(0), use_cache=False)
    states = activation_states(lm, prompt)
    assert states.shape == (len(lm.projections), 3, lm.projections[0].in_features)
    assert all(np.array_equal(states[layer], (seen[layer] > 0).numpy()) for layer in seen)
    assert 0 < states.mean() < 1


def test_the_transfer_stage_evaluates_each_source_prompt_on_the_target_test_split(lm, llama_dir, tmp_path):
    test = toy_reviews(16, 4).assign(example=range(16))
    test.to_parquet(tmp_path / "test.parquet")
    prompts = {name: init_prompt(lm, "normal", 0.5, seed=seed) for name, seed in (("own", 0), ("a", 1), ("b", 2))}
    for name, prompt in prompts.items():
        write_tensors({"prompt": prompt}, tmp_path / f"{name}.safetensors")
    widths = [p.in_features for p in lm.projections]
    ranking = pd.DataFrame(
        [(layer, neuron) for layer, width in enumerate(widths) for neuron in range(width)], columns=["layer", "neuron"]
    ).assign(rank=lambda f: np.arange(1, len(f) + 1))
    ranking.to_parquet(tmp_path / "ranking.parquet")
    prompting = {"n_tokens": 3, "max_field_tokens": None, "precision": "fp32", "eval_batch_size": 8, "device": "cpu"}
    job = fake_job(
        input={
            "test": str(tmp_path / "test.parquet"),
            "model": str(llama_dir),
            "text": [],
            "prompt": str(tmp_path / "own.safetensors"),
            "ranking": str(tmp_path / "ranking.parquet"),
            "sources": [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")],
        },
        output=[str(tmp_path / "pairs.parquet")],
        params={**TOY_TASK_PARAMS, **prompting, "sources": ["a", "b"], "skill_share": 0.2},
        wildcards={"seed": "3", "task": "toy"},
    )
    prompt_transfer(job)
    rows = read_parquet(tmp_path / "pairs.parquet")
    assert rows[["source", "target", "seed"]].values.tolist() == [["a", "toy", 3], ["b", "toy", 3]]
    batches = lm.batches(test, ["sentence"], 8)
    assert rows["transfer_accuracy"].tolist() == [evaluate(lm, prompts[s], batches) for s in ("a", "b")]
    states = {name: activation_states(lm, prompt) for name, prompt in prompts.items()}
    skill = top_share_mask(ranking, widths, 0.2)  # the first 20% of the ranking: layer 0's first neurons
    assert rows["overlap_all"].iloc[0] == pytest.approx(overlap_rate(states["a"], states["own"]))
    assert rows["overlap_skill"].iloc[1] == pytest.approx(overlap_rate(states["b"], states["own"], skill))
    chance = pd.DataFrame({"task": ["toy", "a", "b"], "above_chance": [True, True, False]})
    chance.to_parquet(tmp_path / "chance.parquet")
    table_job = fake_job(
        input={"pairs": [str(tmp_path / "pairs.parquet")], "chance": str(tmp_path / "chance.parquet")},
        output={
            "parquet": str(tmp_path / "t.parquet"),
            "markdown": str(tmp_path / "t.md"),
            "html": str(tmp_path / "t.html"),
            "correlations": str(tmp_path / "c.parquet"),
        },
        params={"skill_share": 0.2},
        wildcards={"model": "tiny"},
    )
    transferability_table(table_job)
    markdown = (tmp_path / "t.md").read_text()
    assert "NaN below 3 pairs" in markdown and "at chance on this model (b)" in markdown
    correlations = read_parquet(tmp_path / "c.parquet")
    assert correlations[["tasks", "pairs"]].values.tolist() == [["all", 2]] * 2 + [["above chance", 1]] * 2
