"""Perturbation sweeps: exactly the chosen neurons change, rate 0 is the plain accuracy, areas by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from skill_neurons.architecture import ffn_output_projections, ffn_width
from skill_neurons.perturbation import (
    Perturbation,
    input_mean_baseline,
    is_paper_setting,
    mode_positions,
    neuron_baseline,
    noise_generator,
    perturbed,
    position_baseline,
    random_order,
    sweep,
    top_share,
)
from skill_neurons.sweep_tables import importance_matrix, neuronal_importance, setting_label, sweep_summary

from .conftest import tiny_model


def projection_inputs(model, projections, ids, perturbation=None):
    """What each FFN output projection really receives (after any perturbation), per layer."""
    seen = {}
    handles = [
        p.register_forward_hook(lambda _m, args, _o, i=i: seen.__setitem__(i, args[0].clone()))
        for i, p in enumerate(projections)
    ]
    with torch.no_grad():
        if perturbation is None:
            model(input_ids=ids)
        else:
            with perturbed(projections, perturbation):
                model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["noise", "zero", "baseline"])
def test_a_perturbation_changes_exactly_the_chosen_neurons(architecture, mode):
    model = tiny_model(architecture, 40)
    projections = ffn_output_projections(model)
    last = len(projections) - 1
    ids = torch.randint(7, 40, (2, 6))
    chosen = torch.tensor([1, 4, 7])
    baseline = [torch.linspace(-1, 1, ffn_width(p)) for p in projections]
    clean = projection_inputs(model, projections, ids)
    perturbation = Perturbation(
        mode, {last: chosen}, sigma=0.1, baseline=baseline, generator=noise_generator(torch.device("cpu"), 7)
    )
    changed = projection_inputs(model, projections, ids, perturbation)
    for layer in range(last):  # lower layers are untouched
        torch.testing.assert_close(changed[layer], clean[layer], rtol=0, atol=0)
    others = torch.ones(clean[last].shape[-1], dtype=torch.bool)
    others[chosen] = False
    torch.testing.assert_close(changed[last][..., others], clean[last][..., others], rtol=0, atol=0)
    if mode == "zero":
        assert torch.all(changed[last][..., chosen] == 0)
    elif mode == "baseline":
        assert torch.all(changed[last][..., chosen] == baseline[last][chosen])
    else:
        expected_noise = 0.1 * torch.randn((2, 6, 3), generator=noise_generator(torch.device("cpu"), 7))
        torch.testing.assert_close(changed[last][..., chosen] - clean[last][..., chosen], expected_noise)


def test_unknown_mode_and_missing_baseline_are_refused():
    with pytest.raises(ValueError, match="unknown perturbation mode 'scale'"):
        Perturbation("scale", {})
    with pytest.raises(ValueError, match="'baseline' needs the neurons' baseline"):
        Perturbation("baseline", {0: torch.tensor([0])})
    with pytest.raises(ValueError, match="'position_baseline' needs the neurons' baseline"):
        Perturbation("position_baseline", {0: torch.tensor([0])})


def test_noise_at_positions_that_are_not_a_slice_is_refused_rather_than_lost():
    # an index tensor would make the perturbed columns a copy: the noise added to it would never reach the model
    noise = Perturbation("noise", {0: torch.tensor([1])}, sigma=0.1, positions=lambda: torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="noise positions must be a slice, not Tensor"):
        noise.apply(0, torch.zeros(1, 3, 4))


def test_top_share_takes_the_first_neurons_by_rank_and_random_order_is_seeded():
    order = pd.DataFrame({"layer": [0, 1, 0, 1], "neuron": [3, 0, 1, 2], "rank": [4, 1, 2, 3]})
    top = top_share(order, 0.5)
    assert {k: v.tolist() for k, v in top.items()} == {0: [1], 1: [0]}
    assert top_share(order, 0.0) == {}
    first, again, other = random_order([3, 5], 1), random_order([3, 5], 1), random_order([3, 5], 2)
    assert first.equals(again) and not first.equals(other)
    assert sorted(zip(first["layer"], first["neuron"])) == [(0, i) for i in range(3)] + [(1, i) for i in range(5)]


def test_rate_zero_is_evaluated_once_and_is_the_unperturbed_accuracy():
    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (4, 5))
    with torch.no_grad():
        reference = model(input_ids=ids).logits[:, -1].argmax(-1)
    calls = []

    def agreement():  # accuracy against the unperturbed predictions
        calls.append(1)
        with torch.no_grad():
            return float((model(input_ids=ids).logits[:, -1].argmax(-1) == reference).float().mean())

    orders = {"source": random_order([48] * 3, 0), "random": random_order([48] * 3, 1)}
    result = sweep(
        agreement,
        projections,
        torch.device("cpu"),
        orders,
        [0, 0.5, 1.0],
        ["noise", "zero"],
        sigma=5.0,
        baselines={},
        seed=0,
    )
    assert len(calls) == 1 + 2 * 2 * 2  # rate 0 once; then modes x rates x orders
    assert (result.loc[result["rate"] == 0, "accuracy"] == 1.0).all()
    assert result.loc[result["rate"] == 1.0, "n_neurons"].eq(144).all()
    assert len(result) == 2 * 3 * 2


def test_neuronal_importance_is_the_area_between_the_curves():
    rates = [0.0, 0.1, 0.2]
    rows = []
    curves = {
        "random": [0.9, 0.85, 0.8],
        "sst2": [0.9, 0.7, 0.5],
        "qnli": [0.9, 0.85, 0.7],
        "selectivity": [0.9, 0.9, 0.9],
    }
    for order, curve in curves.items():
        rows += [
            {"task": "sst2", "seed": 0, "mode": "noise", "order": order, "rate": r, "accuracy": a}
            for r, a in zip(rates, curve)
        ]
    importance = neuronal_importance(pd.DataFrame(rows)).set_index("source")["importance"]
    # gaps 0, 0.15, 0.30 -> 0.1 * (0 + 0.15) / 2 + 0.1 * (0.15 + 0.30) / 2
    assert importance["sst2"] == pytest.approx(0.03)
    assert importance["qnli"] == pytest.approx(0.1 * 0.1 / 2)
    assert importance["selectivity"] == pytest.approx(0.1 * (-0.05 - 0.1) / 2 + 0.1 * (-0.05 + 0) / 2)
    matrix = importance_matrix(neuronal_importance(pd.DataFrame(rows)), "noise")
    # two source tasks (the selectivity order is no source task): z-scores are +1 and -1 around their mean
    assert list(matrix.index) == ["qnli", "sst2"]
    assert matrix.loc["sst2", "sst2"] == pytest.approx(1.0) and matrix.loc["qnli", "sst2"] == pytest.approx(-1.0)


def test_sweep_summary_drops_from_rate_zero_next_to_the_random_order():
    curves_per_seed = [{"random": [0.8, 0.78], "sst2": [0.8, 0.6]}, {"random": [0.7, 0.7], "sst2": [0.7, 0.6]}]
    rows = [
        {"task": "sst2", "seed": seed, "mode": "zero", "order": order, "rate": rate, "accuracy": accuracy}
        for seed, curves in enumerate(curves_per_seed)
        for order, curve in curves.items()
        for rate, accuracy in zip([0.0, 0.1], curve)
    ]
    table = sweep_summary(pd.DataFrame(rows)).set_index("order")
    assert list(table["rate"]) == [0.1, 0.1] and (table["seeds"] == 2).all()
    assert table.loc["sst2", "accuracy"] == pytest.approx(0.6) and table.loc["sst2", "accuracy_sd"] == 0
    assert table.loc["sst2", "drop (points)"] == pytest.approx((20 + 10) / 2)
    assert table.loc["random", "drop (points)"] == pytest.approx((2 + 0) / 2)
    assert table["random drop (points)"].tolist() == pytest.approx([1.0, 1.0])


def test_mean_ablation_acts_at_the_prompt_positions_and_the_other_modes_where_configured():
    assert mode_positions("position_baseline", "all") == "prompt"
    assert [mode_positions(m, "all") for m in ("noise", "zero", "baseline")] == ["all"] * 3
    assert mode_positions("noise", "prompt") == "prompt"
    assert is_paper_setting("noise", "all", "per_layer", True)
    assert not is_paper_setting("noise", "all", "per_layer", False) and not is_paper_setting(
        "zero", "all", "per_layer", True
    )
    assert setting_label("position_baseline", "prompt", "per_layer") == "position_baseline, prompt positions, per layer"


def test_two_settings_of_one_mode_name_are_summarised_apart():
    rows = [
        {
            "task": "t",
            "seed": 0,
            "mode": "noise",
            "positions": positions,
            "scope": "per_layer",
            "order": order,
            "rate": rate,
            "accuracy": accuracy,
        }
        for positions, drop in (("all", 0.3), ("prompt", 0.1))
        for order in ("t", "random")
        for rate, accuracy in ((0.0, 0.9), (0.1, 0.9 - (drop if order == "t" else 0.0)))
    ]
    table = sweep_summary(pd.DataFrame(rows)).set_index(["positions", "order"])
    assert table.loc[("all", "t"), "drop (points)"] == pytest.approx(30.0)
    assert table.loc[("prompt", "t"), "drop (points)"] == pytest.approx(10.0)
    assert table.loc[("prompt", "t"), "random drop (points)"] == pytest.approx(0.0)
    importance = neuronal_importance(pd.DataFrame(rows)).set_index("positions")["importance"]
    assert importance["all"] == pytest.approx(0.1 * 0.3 / 2) and importance["prompt"] == pytest.approx(0.1 * 0.1 / 2)


# Train-set means as stored in a run's baseline.parquet: two layers, two prompt positions (layer 0's out of
# order), and an input Avg row that neither baseline may read.
BASELINE_TABLE = pd.DataFrame(
    {
        "layer": [0, 0, 0, 1, 1],
        "kind": ["prompt", "prompt", "input_avg", "prompt", "prompt"],
        "position": [1, 0, -1, 0, 1],
        "activation": [
            np.array([3.0, 6.0]),
            np.array([1.0, 2.0]),
            np.array([9.0, 9.0]),
            np.array([0.0, 1.0]),
            np.array([2.0, 1.0]),
        ],
    }
)


def test_neuron_baseline_averages_the_prompt_positions():
    per_layer = neuron_baseline(BASELINE_TABLE)
    assert [t.tolist() for t in per_layer] == [[2.0, 4.0], [1.0, 1.0]]


def test_the_input_mean_constant_is_the_train_mean_over_text_tokens():
    table = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "kind": ["prompt", "input_avg", "input_avg", "prompt"],
            "position": [0, -1, -1, 0],
            "activation": [[9.0, 9.0], [0.5, -1.0], [2.0, 3.0], [9.0, 9.0]],
        }
    )
    assert [t.tolist() for t in input_mean_baseline(table)] == [[0.5, -1.0], [2.0, 3.0]]


def test_position_baseline_sets_each_prompt_position_to_its_own_mean():
    per_layer = position_baseline(BASELINE_TABLE)
    assert [t.tolist() for t in per_layer] == [[[1.0, 2.0], [3.0, 6.0]], [[0.0, 1.0], [2.0, 1.0]]]

    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (3, 6))
    chosen = torch.tensor([2, 9])
    means = torch.arange(2 * ffn_width(projections[0]), dtype=torch.float32).reshape(2, -1)  # 2 prompt positions
    clean = projection_inputs(model, projections, ids)
    perturbation = Perturbation("position_baseline", {0: chosen}, baseline=[means], positions=lambda: slice(3, 5))
    changed = projection_inputs(model, projections, ids, perturbation)[0]
    expected = clean[0].clone()
    expected[:, 3, chosen] = means[0, chosen]
    expected[:, 4, chosen] = means[1, chosen]
    torch.testing.assert_close(changed, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="baselines for 2 prompt positions but the hook sees 6; use positions"):
        projection_inputs(model, projections, ids, Perturbation("position_baseline", {0: chosen}, baseline=[means]))


def test_prompt_only_perturbation_leaves_the_other_positions_alone():
    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (2, 6))
    chosen = torch.tensor([0, 5])
    clean = projection_inputs(model, projections, ids)
    perturbation = Perturbation("zero", {0: chosen}, positions=lambda: slice(1, 3))
    changed = projection_inputs(model, projections, ids, perturbation)
    assert torch.all(changed[0][:, 1:3, chosen] == 0)
    torch.testing.assert_close(changed[0][:, [0, 3, 4, 5]], clean[0][:, [0, 3, 4, 5]], rtol=0, atol=0)
    skipped = Perturbation("zero", {0: chosen}, positions=lambda: None)  # a forward without the prompt
    torch.testing.assert_close(projection_inputs(model, projections, ids, skipped)[0], clean[0], rtol=0, atol=0)


def test_a_causal_prompt_perturbation_needs_no_perturbed_text_cache(llama_dir):
    from .test_prompting import frame, prompted

    lm = prompted(llama_dir)
    prompt = torch.randn(lm.n_prompt, lm.hidden_size) * 0.5
    fresh = lm.batches(frame(10, 0), ["sentence"], 5)
    kept = lm.keep_text_cache(lm.batches(frame(10, 0), ["sentence"], 5))  # computed before any perturbation
    perturbation = Perturbation("zero", {1: torch.arange(20), 2: torch.arange(30)}, positions=lm.prompt_positions)
    with torch.no_grad(), perturbed(lm.projections, perturbation):
        for plain, cached in zip(fresh, kept):
            torch.testing.assert_close(lm.label_logits(prompt, cached), lm.label_logits(prompt, plain))
            with perturbed(lm.projections, Perturbation("zero", {1: torch.arange(20)})):  # text too: differs
                assert not torch.allclose(lm.label_logits(prompt, plain), lm.label_logits(prompt, cached))


def test_per_layer_scope_takes_round_r_width_of_each_layers_own_order():
    # layer 0 has 4 neurons, layer 1 has 6; the global order interleaves them
    order = pd.DataFrame(
        {"layer": [1, 1, 1, 0, 1, 0, 1, 0, 1, 0], "neuron": [5, 0, 3, 2, 1, 0, 4, 3, 2, 1], "rank": np.arange(1, 11)}
    )
    as_lists = lambda top: {k: sorted(v.tolist()) for k, v in top.items()}  # noqa: E731
    # r = 0.25: layer 0 keeps round(1.0) = 1 (its best: neuron 2), layer 1 round(1.5) = 2 (5 and 0)
    assert as_lists(top_share(order, 0.25, scope="per_layer")) == {0: [2], 1: [0, 5]}
    # globally the first round(2.5) = 2 neurons are both of layer 1
    assert as_lists(top_share(order, 0.25)) == {1: [0, 5]}
    # r = 0.5: layer 0 keeps 2 (2, 0), layer 1 keeps 3 (5, 0, 3)
    assert as_lists(top_share(order, 0.5, scope="per_layer")) == {0: [0, 2], 1: [0, 3, 5]}
    # r = 0.1: layer 0 keeps round(0.4) = 0 neurons (left out), layer 1 round(0.6) = 1
    assert as_lists(top_share(order, 0.1, scope="per_layer")) == {1: [5]}
    with pytest.raises(ValueError, match="unknown perturbation scope 'layer'"):
        top_share(order, 0.5, scope="layer")


def test_per_layer_random_control_draws_as_many_neurons_per_layer_as_the_source():
    widths = [10, 30, 20]
    source, random = random_order(widths, 0), random_order(widths, 1)
    chosen = {name: top_share(order, 0.2, scope="per_layer") for name, order in (("s", source), ("r", random))}
    assert (
        {k: len(v) for k, v in chosen["s"].items()} == {k: len(v) for k, v in chosen["r"].items()} == {0: 2, 1: 6, 2: 4}
    )
    assert chosen["s"][1].tolist() != chosen["r"][1].tolist()


def test_shared_noise_is_one_vector_per_example_over_all_its_tokens():
    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (3, 6))
    chosen = torch.tensor([1, 4, 7, 20])
    clean = projection_inputs(model, projections, ids)[0]
    perturbation = Perturbation(
        "noise",
        {0: chosen},
        sigma=0.1,
        generator=noise_generator(torch.device("cpu"), 3),
        noise_shared_across_tokens=True,
    )
    changed = projection_inputs(model, projections, ids, perturbation)[0]
    moved = changed[..., chosen] - clean[..., chosen]  # (3 examples, 6 tokens, 4 neurons)
    expected = 0.1 * torch.randn((3, 1, 4), generator=noise_generator(torch.device("cpu"), 3))
    torch.testing.assert_close(moved, expected.expand(3, 6, 4))
    for token in range(6):  # the same at every token of an example ...
        torch.testing.assert_close(moved[:, token], moved[:, 0])
    for a, b in ((0, 1), (0, 2), (1, 2)):  # ... and different between examples
        assert (moved[a, 0] - moved[b, 0]).abs().min() > 0
    per_token = Perturbation("noise", {0: chosen}, generator=noise_generator(torch.device("cpu"), 3))
    moved = projection_inputs(model, projections, ids, per_token)[0][..., chosen] - clean[..., chosen]
    assert (moved[:, 1] - moved[:, 0]).abs().min() > 0  # the default draws one value per token


@pytest.mark.parametrize("shared", [False, True])
def test_noise_at_every_token_moves_every_token_of_the_chosen_neurons_only(shared):
    model = tiny_model("gpt2", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (2, 5))
    chosen = {0: torch.tensor([3, 11]), 1: torch.tensor([0])}
    clean = projection_inputs(model, projections, ids)
    perturbation = Perturbation(
        "noise", chosen, sigma=0.1, generator=noise_generator(torch.device("cpu"), 5), noise_shared_across_tokens=shared
    )
    changed = projection_inputs(model, projections, ids, perturbation)
    for layer, neurons in chosen.items():
        assert (changed[layer][..., neurons] - clean[layer][..., neurons]).abs().min() > 0  # every token moved
    others = torch.ones(clean[0].shape[-1], dtype=torch.bool)
    others[chosen[0]] = False
    torch.testing.assert_close(changed[0][..., others], clean[0][..., others], rtol=0, atol=0)


def test_bf16_noise_at_the_prompt_positions_is_the_bf16_sum_there_and_nothing_elsewhere():
    activation = torch.randn(2, 7, 10, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    chosen = torch.tensor([2, 5, 9])
    perturbation = Perturbation(
        "noise",
        {0: chosen},
        sigma=0.1,
        generator=noise_generator(torch.device("cpu"), 4),
        positions=lambda: slice(4, 7),
    )
    before = activation.clone()
    changed = perturbation.apply(0, activation)
    noise = (0.1 * torch.randn((2, 3, 3), generator=noise_generator(torch.device("cpu"), 4))).to(torch.bfloat16)
    expected = activation.clone()
    for i, neuron in enumerate(chosen.tolist()):  # by hand: each chosen neuron's bf16 sum at positions 4..6
        expected[:, 4:, neuron] = activation[:, 4:, neuron] + noise[..., i]
    assert changed.dtype == torch.bfloat16 and torch.equal(changed, expected)
    assert torch.equal(activation, before)  # the hook's input itself is left as it was


def test_sweep_threads_the_scope_and_the_shared_noise():
    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (2, 6))
    clean = projection_inputs(model, projections, ids)
    seen = []

    def evaluate():  # records how the first layer's neurons moved (later layers also see its changes)
        seen.append(projection_inputs(model, projections, ids)[0] - clean[0])
        return 1.0

    orders = {"source": random_order([48] * 3, 0)}
    result = sweep(
        evaluate,
        projections,
        torch.device("cpu"),
        orders,
        [0.1],
        ["noise"],
        sigma=0.1,
        baselines={},
        seed=0,
        scope="per_layer",
        noise_shared_across_tokens=True,
    )
    assert result["n_neurons"].tolist() == [3 * 5]  # round(0.1 * 48) = 5 per layer; globally round(14.4) = 14
    touched = seen[0].abs().sum((0, 1)) > 0
    assert int(touched.sum()) == 5
    torch.testing.assert_close(seen[0][:, 1:, touched], seen[0][:, :1, touched].expand(-1, 5, -1))
    assert sweep(evaluate, projections, torch.device("cpu"), orders, [0.1], ["zero"], 0.1, {}, 0)[
        "n_neurons"
    ].tolist() == [14]
    with pytest.raises(ValueError, match="unknown perturbation scope"):
        sweep(evaluate, projections, torch.device("cpu"), orders, [0.1], ["zero"], 0.1, {}, 0, scope="all")


def test_a_one_forward_evaluation_sees_every_token_of_a_causal_example_in_one_hook_call(llama_dir):
    from skill_neurons.neurons import on_neurons
    from skill_neurons.tuning import evaluate

    from .test_prompting import frame, prompted

    lm = prompted(llama_dir)
    prompt = torch.randn(lm.n_prompt, lm.hidden_size) * 0.5
    batches = lm.batches(frame(10, 0), ["sentence"], 5)
    calls = []
    with on_neurons(lm.projections, lambda layer, activation: calls.append((layer, activation.shape[1]))):
        accuracy = evaluate(lm, prompt, batches, one_forward=True)
    lengths = [b.input_ids.shape[1] + lm.n_prompt for b in batches]
    assert calls == [(layer, length) for length in lengths for layer in range(len(lm.projections))]
    assert accuracy == evaluate(lm, prompt, batches)
