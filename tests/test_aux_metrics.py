"""The analysis side of Zhao, Wang et al. (2025) on hand-built arrays, and the shortcut on the real arithmetic data."""

import re
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skill_neurons.activation_store import LayerActivations
from skill_neurons.aux_metrics import (
    MetricSpec,
    activations_at_best_position,
    causal_summary,
    extreme_examples,
    hypergeometric_p_value,
    last_digit_shortcut,
    metric_values,
    permutation_p_value,
    rank_by_metric,
    shortcut_statistics,
    top_neurons,
    with_metric_columns,
)

SHARED_DATA = next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()), None
)


def layer(prompt: np.ndarray, examples: np.ndarray | None = None) -> LayerActivations:
    """A LayerActivations as read_layer returns it; the input Avg/Max are not used here."""
    n, _, d = prompt.shape
    examples = np.arange(n) if examples is None else examples
    return LayerActivations(examples=examples, prompt=prompt, input_avg=np.zeros((n, d)), input_max=np.zeros((n, d)))


# --- metric specs and values ----------------------------------------------------------------------------------


def test_metric_specs_parse_from_config_shapes():
    assert MetricSpec.parse("loss") == MetricSpec(kind="loss", name="loss")
    assert MetricSpec.parse("confidence").kind == "confidence"
    assert MetricSpec.parse({"column": "x"}) == MetricSpec(kind="column", name="x")
    overlap = MetricSpec.parse({"column": "heuristic", "equals": "lexical_overlap"})
    assert overlap == MetricSpec(kind="column", name="heuristic", equals="lexical_overlap")
    assert overlap.label == "heuristic == lexical_overlap"
    assert MetricSpec.parse({"function": "last_digit_shortcut"}) == MetricSpec(
        kind="function", name="last_digit_shortcut"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("accuracy", "string metric"),
        ({"function": "first_digit"}, "not one of"),
        ({"column": "x", "equal": 1}, "expected"),
        ({"column": "x", "equals": None}, "needs a value"),
    ],
)
def test_malformed_metric_specs_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        MetricSpec.parse(value)


HANS_LIKE = pd.DataFrame(
    {
        "example": [0, 1, 2, 3],
        "heuristic": ["lexical_overlap", "subsequence", "lexical_overlap", "constituent"],
        "x": [0.5, 1.5, -2.0, 3.0],
    }
)


def test_column_equals_value_gives_one_where_equal_and_zero_elsewhere():
    values = metric_values(MetricSpec.parse({"column": "heuristic", "equals": "lexical_overlap"}), HANS_LIKE)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [1.0, 0.0, 1.0, 0.0])


def test_a_numeric_column_is_its_values_and_a_text_column_needs_a_comparison():
    np.testing.assert_array_equal(metric_values(MetricSpec.parse({"column": "x"}), HANS_LIKE), [0.5, 1.5, -2.0, 3.0])
    with pytest.raises(ValueError, match="'heuristic' is not numeric"):
        metric_values(MetricSpec.parse({"column": "heuristic"}), HANS_LIKE)


def test_a_constant_metric_is_refused_with_its_name_and_value():
    only_overlap = HANS_LIKE.assign(heuristic="lexical_overlap")
    spec = MetricSpec.parse({"column": "heuristic", "equals": "lexical_overlap"})
    expected = "metric 'heuristic == lexical_overlap' is constant (1.0) on the validation split: it cannot rank neurons"
    with pytest.raises(ValueError, match=re.escape(expected)):
        metric_values(spec, only_overlap)


def test_model_metrics_are_read_in_the_examples_order_and_must_be_given():
    model = pd.DataFrame({"example": [0, 1, 2, 3], "loss": [2.0, 0.5, 1.0, 0.25], "confidence": [0.5, 0.9, 0.7, 0.95]})
    np.testing.assert_array_equal(metric_values(MetricSpec.parse("loss"), HANS_LIKE, model), [2.0, 0.5, 1.0, 0.25])
    with pytest.raises(ValueError, match="needs the model's per-example metrics"):
        metric_values(MetricSpec.parse("confidence"), HANS_LIKE)
    shuffled = model.iloc[[1, 0, 2, 3]]
    with pytest.raises(ValueError, match="same example order"):
        metric_values(MetricSpec.parse("loss"), HANS_LIKE, shuffled)


def test_with_metric_columns_names_each_column_by_its_metric():
    table = with_metric_columns(HANS_LIKE, [MetricSpec.parse({"column": "heuristic", "equals": "subsequence"})])
    assert table["heuristic == subsequence"].tolist() == [0.0, 1.0, 0.0, 0.0]


# --- the last-digit shortcut ----------------------------------------------------------------------------------


def test_last_digit_shortcut_when_the_gold_is_the_only_choice_with_the_product_last_digit():
    # 7 * 8 = 56: only '56' ends in 6
    assert last_digit_shortcut("What is 7 times 8?", ["56"], ["63", "56", "4", "banana", "house"])


def test_no_shortcut_when_two_choices_share_the_last_digit():
    # the gold '56' comes first: only the second choice ending in 6 makes this False
    assert not last_digit_shortcut("What is 7 times 8?", ["56"], ["56", "16", "4", "banana"])


def test_no_shortcut_when_the_gold_does_not_end_with_the_product_last_digit():
    # 3 * 4 = 12: the only choice ending in 2 is '22', not the (wrong) gold '13'
    assert not last_digit_shortcut("What is 3 times 4?", ["13"], ["13", "22", "7"])


def test_no_shortcut_for_a_question_that_is_not_a_multiplication():
    # read as 2 * 2 = 4 this would be a shortcut (only '4' ends in 4, and it is the gold)
    assert not last_digit_shortcut("What is 2 plus 2?", ["4"], ["4", "5", "9"])


def test_the_shortcut_is_a_named_metric_of_the_arithmetic_columns():
    examples = pd.DataFrame(
        {
            "inputs": ["What is 7 times 8?", "What is 2 plus 2?"],
            "targets": [["56"], ["4"]],
            "multiple_choice_targets": [["63", "56"], ["4", "5"]],
        }
    )
    np.testing.assert_array_equal(
        metric_values(MetricSpec.parse({"function": "last_digit_shortcut"}), examples), [1, 0]
    )
    with pytest.raises(ValueError, match="needs the example columns"):
        metric_values(MetricSpec.parse({"function": "last_digit_shortcut"}), examples.drop(columns="targets"))


@pytest.mark.skipif(SHARED_DATA is None, reason="needs ../shared/data")
def test_the_shortcut_holds_for_some_but_not_all_real_multiplication_questions():
    arithmetic = pd.read_parquet(SHARED_DATA / "bigbench" / "arithmetic" / "default.parquet")
    multiplication = arithmetic[arithmetic["subtask"].str.endswith("_multiplication")]
    flags = metric_values(MetricSpec.parse({"function": "last_digit_shortcut"}), multiplication)
    shortcut = int(flags.sum())
    rate = f"base rate {shortcut}/{len(flags)} = {flags.mean():.3f} of multiplication questions"
    assert 0 < shortcut < len(flags), rate
    per_subtask = pd.Series(flags, index=multiplication["subtask"].to_numpy()).groupby(level=0).mean().round(3)
    print(rate, per_subtask.to_dict())


# --- ranking by a metric --------------------------------------------------------------------------------------


def test_a_planted_neuron_equal_to_the_metric_at_one_position_ranks_first_there():
    rng = np.random.default_rng(7)
    metric = rng.normal(size=40)
    layers = [rng.normal(size=(40, 3, 6)), rng.normal(size=(40, 3, 5))]
    layers[1][:, 2, 4] = metric
    table = rank_by_metric(enumerate(layer(p) for p in layers), metric)
    first = table.iloc[0]
    assert (first["layer"], first["neuron"], first["position"], first["rank"]) == (1, 4, 2, 1)
    assert first["corr"] == pytest.approx(1.0)
    assert len(table) == 11 and table["corr"].iloc[1] < 0.9  # noise on 40 examples stays well below 1


def hand_built_layers() -> list[LayerActivations]:
    """Metric m = 1, 2, 3, 4; |r| with m written beside each neuron (sums of products of centred values / 5)."""
    layer0 = np.zeros((4, 2, 3))
    layer0[:, 0, 0] = [2, 1, 4, 3]  # r = 0.6
    layer0[:, 1, 1] = [4, 3, 2, 1]  # r = -1, at position 1
    # neuron 2: constant everywhere, r = 0
    layer1 = np.zeros((4, 2, 2))
    layer1[:, 0, 0] = [1, 3, 2, 4]  # r = 0.8
    layer1[:, 1, 0] = [2, 1, 4, 3]  # r = 0.6: position 0 wins
    # neuron 1: constant, r = 0, ties with layer 0 neuron 2 and comes after it
    return [layer(layer0), layer(layer1)]


def test_neurons_are_ordered_by_their_best_absolute_correlation_and_ties_by_layer_then_neuron():
    table = rank_by_metric(enumerate(hand_built_layers()), np.array([1.0, 2.0, 3.0, 4.0]))
    assert list(zip(table["layer"], table["neuron"])) == [(0, 1), (1, 0), (0, 0), (0, 2), (1, 1)]
    np.testing.assert_allclose(table["corr"], [1.0, 0.8, 0.6, 0.0, 0.0], atol=1e-12)
    assert table["position"].tolist()[:3] == [1, 0, 0]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]


def test_the_threshold_is_the_kth_neuron_correlation():
    table = rank_by_metric(enumerate(hand_built_layers()), np.array([1.0, 2.0, 3.0, 4.0]))
    top, threshold = top_neurons(table, k=3)
    assert threshold == pytest.approx(0.6)
    assert top["rank"].tolist() == [1, 2, 3]
    assert top_neurons(table, k=2)[1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="top 6 asked of 5 neurons"):
        top_neurons(table, k=6)


def test_layers_with_other_examples_are_refused():
    first, second = hand_built_layers()
    second.examples = np.array([0, 1, 2, 5])
    with pytest.raises(ValueError, match="layer 1 holds other examples"):
        rank_by_metric(enumerate([first, second]), np.array([1.0, 2.0, 3.0, 4.0]))


# --- reading the top neurons ----------------------------------------------------------------------------------


def test_extreme_examples_read_back_highest_first_and_lowest_first_with_their_columns():
    ids = np.array([10, 11, 12, 13, 14])
    layer0 = np.zeros((5, 2, 2))
    layer0[:, 1, 0] = [0.5, -1.0, 2.0, 0.5, 3.0]  # the rank-1 neuron; 10 and 13 tie at 0.5
    layer2 = np.zeros((5, 1, 3))
    layer2[:, 0, 2] = [5.0, 4.0, 3.0, 2.0, 1.0]  # the rank-2 neuron
    top = pd.DataFrame({"layer": [0, 2], "neuron": [0, 2], "corr": [0.9, 0.8], "position": [1, 0], "rank": [1, 2]})
    unused = layer(np.ones((5, 1, 1)), ids)  # a layer without top neurons is passed over
    activations = activations_at_best_position(top, [(0, layer(layer0, ids)), (1, unused), (2, layer(layer2, ids))])
    examples = pd.DataFrame({"example": ids[::-1], "premise": [f"text {i}" for i in ids[::-1]], "m": [4, 3, 2, 1, 0]})
    rows = extreme_examples(top, activations, examples, n=2)

    first = rows[rows["rank"] == 1]
    assert first["side"].tolist() == ["highest", "highest", "lowest", "lowest"]
    assert first["order"].tolist() == [1, 2, 1, 2]
    assert first["example"].tolist() == [14, 12, 11, 10]  # the tie at 0.5 goes to the lower id
    assert first["activation"].tolist() == [3.0, 2.0, -1.0, 0.5]
    assert first["premise"].tolist() == ["text 14", "text 12", "text 11", "text 10"]
    assert first["m"].tolist() == [4, 2, 1, 0]
    assert (first["layer"].unique().tolist(), first["position"].unique().tolist()) == ([0], [1])
    second = rows[rows["rank"] == 2]
    assert second["example"].tolist() == [10, 11, 14, 13]
    assert second["neuron"].unique().tolist() == [2]


def test_a_top_neuron_whose_layer_is_missing_is_refused():
    top = pd.DataFrame({"layer": [3], "neuron": [0], "corr": [0.9], "position": [0], "rank": [1]})
    with pytest.raises(ValueError, match="ranked \\[1\\]"):
        activations_at_best_position(top, [(0, layer(np.zeros((2, 1, 1))))])


# --- shortcut statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("observed, by_hand", [(2, 1 / comb(5, 2)), (1, 1 - comb(3, 2) / comb(5, 2)), (0, 1.0)])
def test_permutation_and_hypergeometric_p_values_match_a_hand_computation(observed, by_hand):
    # 5 examples, 2 flagged, 2 drawn: P(both flagged) = 1/10, P(at least one) = 1 - C(3,2)/C(5,2) = 0.7
    flags = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert hypergeometric_p_value(5, 2, 2, observed) == pytest.approx(by_hand)
    draws = 10_000
    p = permutation_p_value(flags, 2, observed, draws=draws, seed=0)
    error = np.sqrt(by_hand * (1 - by_hand) / draws) + 1 / draws  # the +1 in numerator and denominator
    assert abs(p - by_hand) <= 4 * error, (p, by_hand)


def test_permutation_p_value_agrees_with_the_hypergeometric_one_on_a_split_sized_case():
    rng = np.random.default_rng(1)
    flags = rng.random(1000) < 0.2
    exact = hypergeometric_p_value(len(flags), int(flags.sum()), 10, 5)
    p = permutation_p_value(flags, 10, 5, draws=10_000, seed=3)
    assert 0.01 < exact < 0.1  # the case is in the tail, where a miscounted draw would show
    assert abs(p - exact) <= 4 * np.sqrt(exact * (1 - exact) / 10_000) + 1 / 10_000, (p, exact)


def test_shortcut_statistics_count_the_flags_among_the_lowest_and_highest():
    activation = np.arange(10.0)
    flags = np.zeros(10, dtype=bool)
    flags[[0, 1, 2, 9]] = True  # the three lowest all flagged, one of the three highest
    table = shortcut_statistics(activation, flags, k=3, draws=2000, seed=0).set_index("side")
    assert table.loc["lowest", "count"] == 3 and table.loc["highest", "count"] == 1
    assert table.loc["lowest", "base_rate"] == pytest.approx(0.4)
    assert table.loc["lowest", "expected"] == pytest.approx(1.2)
    # P(3 of 3 flagged) = C(4,3) / C(10,3) = 4/120; P(at least 1) = 1 - C(6,3)/C(10,3) = 1 - 20/120
    assert table.loc["lowest", "p_hypergeometric"] == pytest.approx(4 / 120)
    assert table.loc["highest", "p_hypergeometric"] == pytest.approx(100 / 120)
    for side in ("lowest", "highest"):  # one null of 2000 draws serves both sides
        exact = table.loc[side, "p_hypergeometric"]
        assert abs(table.loc[side, "p_permutation"] - exact) <= 4 * np.sqrt(exact * (1 - exact) / 2000) + 1 / 2000
    assert table.index.tolist() == ["lowest", "highest"]


# --- causal-test summary --------------------------------------------------------------------------------------


def test_causal_summary_gives_mean_sd_and_top_minus_random_per_group():
    rows = pd.DataFrame(
        [
            (0, 0, "multiplication", "top", 1.0),
            (1, 0, "multiplication", "top", 3.0),
            (0, 0, "multiplication", "random", 0.5),
            (0, 1, "multiplication", "random", 1.5),
            (1, 0, "multiplication", "random", 1.0),
            (0, 0, "addition", "top", 0.25),
            (0, 0, "addition", "random", 0.75),
        ],
        columns=["seed", "draw", "group", "perturbed", "value"],
    )
    summary = causal_summary(rows).set_index("group")
    mult = summary.loc["multiplication"]
    assert (mult["top_mean"], mult["top_sd"], mult["top_n"]) == (2.0, pytest.approx(np.sqrt(2)), 2)
    assert (mult["random_mean"], mult["random_sd"], mult["random_n"]) == (1.0, pytest.approx(0.5), 3)
    assert mult["difference"] == 1.0
    assert summary.loc["addition", "difference"] == -0.5
    assert np.isnan(summary.loc["addition", "top_sd"])  # one value has no sample sd


def test_causal_summary_refuses_a_group_without_its_random_control():
    rows = pd.DataFrame(
        {"seed": 0, "draw": 0, "group": ["a", "a", "b"], "perturbed": ["top", "random", "top"], "value": 1.0}
    )
    with pytest.raises(ValueError, match="groups \\['b'\\] have no 'random' rows"):
        causal_summary(rows)
