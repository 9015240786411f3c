import numpy as np
import pandas as pd
import pytest
from scipy import stats

from skill_neurons.ranking import (
    best_correlation,
    best_position,
    directed_accuracy,
    interleave,
    merge_seeds,
    pearson_abs,
    position_accuracy,
    predictivity,
    selectivity_index,
)


def test_predictivity_by_hand_with_ties_and_a_constant_neuron():
    # 4 dev examples, 1 position, 3 neurons; baseline 0.5 for each.
    activations = np.array([[0.9, 0.5, 0.1], [0.2, 0.5, 0.8], [0.7, 0.5, 0.3], [0.6, 0.5, 0.9]])[:, None, :]
    baseline = np.full((1, 3), 0.5)
    targets = np.array([1, 0, 1, 0])
    accuracy = position_accuracy(activations, baseline, targets)
    # neuron 0 fires on examples 0, 2, 3 -> agrees on 0, 1, 2 -> 3/4
    # neuron 1 equals its baseline everywhere: a tie is "not firing" -> predicts 0 -> agrees on 1, 3 -> 2/4
    # neuron 2 fires on 1, 3 -> agrees on none -> 0/4, an inverse predictor
    np.testing.assert_allclose(accuracy, [[0.75, 0.5, 0.0]])
    np.testing.assert_allclose(predictivity(accuracy), [[0.75, 0.5, 1.0]])


def test_best_position_takes_the_max_over_positions():
    accuracy = np.array([[0.6, 0.1, 0.5], [0.8, 0.45, 0.5]])  # (positions, neurons)
    score, position = best_position(accuracy)
    np.testing.assert_allclose(score, [0.8, 0.9, 0.5])
    np.testing.assert_array_equal(position, [1, 0, 0])


def test_directed_accuracy_reads_test_in_the_direction_chosen_on_dev():
    dev = np.array([0.8, 0.3, 0.4, 0.5, 0.0])
    test = np.array([0.9, 0.2, 0.7, 0.45, 1.0])
    # dev >= 0.5: test as is; dev < 0.5 (fires for the negative class): 1 - test; a dev tie counts as >= 0.5
    np.testing.assert_allclose(directed_accuracy(test, dev), [0.9, 0.8, 0.3, 0.45, 0.0])


def test_pearson_matches_scipy_and_is_zero_for_constant_neurons():
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(50, 2, 4))
    activations[:, 1, 3] = 7.0
    metric = rng.normal(size=50)
    r = pearson_abs(activations, metric)
    for p in range(2):
        for d in range(3):
            assert r[p, d] == pytest.approx(abs(stats.pearsonr(activations[:, p, d], metric).statistic), abs=1e-12)
    assert r[1, 3] == 0.0


def test_best_correlation_takes_the_max_over_positions_of_the_absolute_correlation():
    metric = np.array([1.0, 2.0, 3.0, 4.0])
    activations = np.zeros((4, 3, 2))
    activations[:, 0, 0] = [1.0, 2.0, 3.0, 5.0]  # r < 1
    activations[:, 2, 0] = [-1.0, -2.0, -3.0, -4.0]  # r = -1: the absolute value wins
    activations[:, 1, 1] = [2.0, 1.0, 4.0, 3.0]  # r = 0.6; positions 0 and 2 are constant (r taken as 0)
    correlation, position = best_correlation(activations, metric)
    np.testing.assert_allclose(correlation, [1.0, 0.6])
    np.testing.assert_array_equal(position, [2, 1])


def test_interleave_alternates_subtasks_and_skips_repeats():
    assert interleave([[3, 1, 2], [3, 0, 2]]) == [(3, 0), (1, 0), (0, 1), (2, 0)]


def scores_table(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """values[subtask][seed] = predictivity of neurons 0..n-1 (one layer)."""
    rows = []
    for subtask, per_seed in values.items():
        for seed, scores in enumerate(per_seed):
            rows += [
                {"subtask": subtask, "seed": seed, "layer": 0, "neuron": n, "predictivity": v}
                for n, v in enumerate(scores)
            ]
    return pd.DataFrame(rows)


def test_merge_seeds_means_over_seeds_and_interleaves_subtasks():
    scores = scores_table(
        {
            "polar": [[0.9, 0.6, 0.7, 0.5], [0.7, 0.6, 0.9, 0.5]],  # means 0.8, 0.6, 0.8, 0.5
            "neutral": [[0.6, 0.95, 0.5, 0.7], [0.6, 0.85, 0.5, 0.9]],  # means 0.6, 0.9, 0.5, 0.8
        }
    )
    table = merge_seeds(scores, "predictivity", ["polar", "neutral"])
    # polar order: 0, 2 (tie at 0.8 keeps the lower index first), 1, 3; neutral order: 1, 3, 0, 2
    assert table["neuron"].tolist() == [0, 1, 2, 3]
    assert table["subtask"].tolist() == ["polar", "neutral", "polar", "neutral"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(table["mean"], [0.8, 0.9, 0.8, 0.8])
    np.testing.assert_allclose(table.loc[0, ["seed_0", "seed_1"]].astype(float), [0.9, 0.7])
    assert table.loc[0, "std"] == pytest.approx(np.std([0.9, 0.7], ddof=1))


def test_order_correlation_matches_scipy_over_all_neurons_and_per_layer():
    from scipy.stats import spearmanr

    from skill_neurons.ranking import order_correlation

    rng = np.random.default_rng(0)
    layers, neurons = np.repeat([0, 1, 2], 6), np.tile(np.arange(6), 3)
    first = rng.permutation(18) + 1
    second = np.where(rng.random(18) < 0.5, first, rng.permutation(18) + 1)
    rankings = {
        name: pd.DataFrame({"layer": layers, "neuron": neurons, "rank": r}).sample(frac=1, random_state=1)
        for name, r in (("a", first), ("b", second))
    }
    table = order_correlation(rankings).set_index(["task_a", "task_b", "layer"])["spearman"]
    assert table[("a", "b", -1)] == pytest.approx(spearmanr(first, second).statistic)
    for layer in range(3):
        rows = layers == layer
        assert table[("a", "b", layer)] == pytest.approx(spearmanr(first[rows], second[rows]).statistic)
    assert table[("a", "a", -1)] == 1.0 and ("b", "a", -1) not in table.index


def test_selectivity_index_by_hand():
    targets = np.array([0, 0, 1, 1])
    activations = np.array([[1.0, -2.0, 0.0, 4.0], [1.0, -2.0, 0.0, 2.0], [3.0, 2.0, 0.0, 1.0], [3.0, 2.0, 0.0, 1.0]])
    # class means (1, 1) vs (3, 3): (3 - 1) / (3 + 1); (-2, 2): 4 / 4; zero: 0; (3, 1): (3 - 1) / (3 + 1)
    np.testing.assert_allclose(selectivity_index(activations, targets), [0.5, 1.0, 0.0, 0.5])
    # on non-negative activations it is Morcos et al.'s (mu_max - mu_other) / (mu_max + mu_other)
    rng = np.random.default_rng(0)
    positive, labels = rng.random((50, 3)), rng.integers(0, 2, 50)
    means = np.stack([positive[labels == c].mean(0) for c in (0, 1)])
    np.testing.assert_allclose(
        selectivity_index(positive, labels), (means.max(0) - means.min(0)) / (means.max(0) + means.min(0))
    )


def test_label_word_independence_correlates_each_draw_with_the_original(tmp_path):
    from skill_neurons.stages.label_words import independence_row

    rng = np.random.default_rng(0)
    neurons = pd.DataFrame({"subtask": "all", "layer": np.repeat([0, 1], 50), "neuron": np.tile(np.arange(50), 2)})
    original = neurons.assign(predictivity=rng.random(100))
    same = original.copy()  # a draw that finds the same order: Spearman 1
    reversed_order = original.assign(predictivity=1 - original["predictivity"])  # the opposite order: -1
    files = []
    for name, frame in {"original": original, "same": same, "reversed": reversed_order}.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
        files.append(str(tmp_path / f"{name}.parquet"))
    words = []
    for draw in (0, 1):
        (tmp_path / f"w{draw}.json").write_text(f'{{"draw": {draw}, "label_words": ["a{draw}", "b{draw}"]}}')
        words.append(str(tmp_path / f"w{draw}.json"))
    row = independence_row("toy", 0, files[0], files[1:], words, other_seed=files[2])
    assert row["spearman with original (mean)"] == pytest.approx(0.0)  # (1 + -1) / 2
    assert row["spearman with original (min)"] == pytest.approx(-1.0)
    assert row["spearman between draws (mean)"] == pytest.approx(-1.0)
    assert row["label words"] == "a0/b0; a1/b1"
    assert row["spearman between two seeds, original words"] == pytest.approx(-1.0)  # the reversed order's
    assert independence_row("toy", 0, files[0], files[1:], words)["spearman between two seeds, original words"] is None


def test_specificity_summary_averages_the_per_layer_spearman_and_keeps_the_pooled_one():
    from scipy.stats import spearmanr

    from skill_neurons.ranking import order_correlation, specificity_summary

    layers, neurons = np.repeat([0, 1], 4), np.tile(np.arange(4), 2)
    first = np.arange(1, 9)
    second = np.array([1, 2, 3, 4, 8, 7, 6, 5])  # layer 0: the same order (+1); layer 1: reversed (-1)
    rankings = {
        name: pd.DataFrame({"layer": layers, "neuron": neurons, "rank": r}) for name, r in (("a", first), ("b", second))
    }
    summary = specificity_summary(order_correlation(rankings)).set_index(["task_a", "task_b"])
    assert list(summary.columns) == ["spearman_layer_mean", "spearman_pooled"]
    assert summary.loc[("a", "b"), "spearman_layer_mean"] == pytest.approx((1 + -1) / 2)
    # pooled: squared rank differences 0,0,0,0,9,1,1,9 -> 1 - 6 * 20 / (8 * 63)
    assert summary.loc[("a", "b"), "spearman_pooled"] == pytest.approx(1 - 6 * 20 / (8 * 63))
    assert summary.loc[("a", "b"), "spearman_pooled"] == pytest.approx(spearmanr(first, second).statistic)
    per_layer = [spearmanr(first[layers == k], second[layers == k]).statistic for k in (0, 1)]
    assert summary.loc[("a", "b"), "spearman_layer_mean"] == pytest.approx(np.mean(per_layer))
    assert summary.loc[("a", "a")].tolist() == [1.0, 1.0] and len(summary) == 3
