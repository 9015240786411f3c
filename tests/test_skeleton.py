"""SKELETON: attribution against a finite difference, global selection, the keep-ratio binary search."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from skill_neurons.attention import layer_attentions
from skill_neurons.neurons import on_neurons
from skill_neurons.prompting import PromptedLM
from skill_neurons.pruning import prune_ffns
from skill_neurons.skeleton import (
    SCORES,
    activations_and_gradients,
    batch_scores,
    global_keep,
    neuron_scores,
    order_of,
    search_keep_ratio,
)
from skill_neurons.tuning import evaluate, tune_prompt

from .conftest import tiny_model, toy_reviews, word_tokenizer

TEMPLATE = "Review : {sentence} \n Sentiment :"


def tiny_lm(architecture: str = "llama", n_prompt: int = 2) -> PromptedLM:
    tokenizer = word_tokenizer()
    model = tiny_model(architecture, len(tokenizer))
    model.requires_grad_(False)
    return PromptedLM(model, tokenizer, TEMPLATE, [" negative", " positive"], n_prompt)


def gate_gradients(lm: PromptedLM, prompt, batch) -> list[torch.Tensor]:
    """dP(gold)/dg for a gate g = 1 multiplying each neuron at every token: sum_t h_t dP/dh_t by the chain rule."""
    gates = [torch.ones(p.in_features, dtype=torch.float64, requires_grad=True) for p in lm.projections]
    with on_neurons(lm.projections, lambda layer, activation: activation * gates[layer]):
        logits = lm.full_causal_logits(prompt, batch) if lm.kind == "causal" else lm.label_logits(prompt, batch)
    logits.softmax(-1).gather(1, batch.labels.unsqueeze(1)).sum().backward()
    return [gate.grad for gate in gates]


@pytest.mark.parametrize("architecture", ["llama", "bert"])
def test_attribution_matches_autograd_through_a_neuron_gate(architecture):
    """Our additive-zero hook gives h and dP/dh; a multiplicative gate gives their token sum directly."""
    torch.manual_seed(0)
    lm = tiny_lm(architecture)
    lm.model.double()
    prompt = torch.randn(lm.n_prompt, lm.hidden_size, dtype=torch.float64)
    batch = lm.batches(toy_reviews(1, seed=3).assign(example=0), ["sentence"], 1)[0]
    activations, gradients = activations_and_gradients(lm, prompt, batch)
    expected = gate_gradients(lm, prompt, batch)
    for layer, (h, grad) in enumerate(zip(activations, gradients)):
        torch.testing.assert_close((h * grad).sum(1)[0], expected[layer], rtol=1e-6, atol=1e-12)
        assert expected[layer].abs().max() > 0
    scores = neuron_scores(lm, prompt, [batch])
    np.testing.assert_allclose(
        scores["attribution_signed_sum"], torch.cat(expected).abs().numpy(), rtol=1e-6, atol=1e-12
    )


def hand_scores(lm: PromptedLM, prompt, frame, projections=None) -> dict[str, list[torch.Tensor]]:
    """SKELETON's Eq. 2-3 one example and one layer at a time: dP(y)/dh by autograd through a leaf put in h.

    h: the input of `projections` (default the FFN output projections)."""
    projections = lm.projections if projections is None else projections
    n_layers = len(projections)
    totals = {name: [0.0] * n_layers for name in SCORES}
    for j in range(len(frame)):
        batch = lm.batches(frame.iloc[[j]], ["sentence"], 1)[0]
        length = batch.input_ids.shape[1]
        # causal: the text is the whole input, the prompt follows it; MLM: [CLS] prompt [MASK] text [SEP]
        text = list(range(length)) if lm.kind == "causal" else list(range(lm.n_prompt + 2, length - 1))
        for layer, projection in enumerate(projections):
            leaf = {}

            def put_leaf(_module, args, leaf=leaf):
                leaf["h"] = args[0].detach().requires_grad_(True)
                return (leaf["h"],)

            handle = projection.register_forward_pre_hook(put_leaf)
            try:
                logits = lm.full_causal_logits(prompt, batch) if lm.kind == "causal" else lm.label_logits(prompt, batch)
                probability = logits.softmax(-1)[0, int(batch.labels[0])]
                (grad,) = torch.autograd.grad(probability, leaf["h"])
            finally:
                handle.remove()
            h, grad = leaf["h"].detach()[0, text], grad[0, text]  # (K_j, D)
            totals["attribution"][layer] = totals["attribution"][layer] + (h * grad).abs().mean(0)
            totals["activation"][layer] = totals["activation"][layer] + h.abs().mean(0)
            totals["gradient"][layer] = totals["gradient"][layer] + grad.abs().mean(0)
    return totals


@pytest.mark.parametrize("architecture", ["llama", "bert"])
def test_paper_attribution_is_the_sum_over_examples_of_the_text_token_mean_of_abs_h_dp_dh(architecture):
    torch.manual_seed(1)
    lm = tiny_lm(architecture, n_prompt=3)
    lm.model.double()
    prompt = torch.randn(lm.n_prompt, lm.hidden_size, dtype=torch.float64)
    frame = pd.DataFrame(
        {
            "sentence": [
                "good movie",
                "the plot was dull and the actor was boring",
                "fine",
                "a lovely scene and a superb actor",
            ],
            "label": [1, 0, 1, 1],
        }
    )
    frame["example"] = range(4)
    expected = hand_scores(lm, prompt, frame)
    scores = neuron_scores(lm, prompt, lm.batches(frame, ["sentence"], 3))  # batches of 3 and 1, padded
    for name in SCORES:
        np.testing.assert_allclose(scores[name], torch.cat(expected[name]).numpy(), rtol=1e-6, atol=1e-14)
    assert scores["attribution"].min() >= 0 and scores["attribution"].max() > 0


def test_attention_attribution_is_eq_2_3_over_the_inputs_of_the_attention_output_projection():
    torch.manual_seed(2)
    lm = tiny_lm("llama", n_prompt=2)
    lm.model.double()
    prompt = torch.randn(lm.n_prompt, lm.hidden_size, dtype=torch.float64)
    frame = pd.DataFrame({"sentence": ["good movie", "the plot was dull", "a superb actor"], "label": [1, 0, 1]})
    frame["example"] = range(3)
    outputs = [attention.output for attention in layer_attentions(lm.model)]
    expected = hand_scores(lm, prompt, frame, outputs)
    scores = neuron_scores(lm, prompt, lm.batches(frame, ["sentence"], 2), outputs)
    assert len(scores) == 3 * 32  # 4 query heads of 8 dimensions in each of 3 layers
    for name in SCORES:
        np.testing.assert_allclose(scores[name], torch.cat(expected[name]).numpy(), rtol=1e-6, atol=1e-14)


def test_contributions_of_opposite_sign_add_up_in_the_paper_attribution_and_cancel_in_the_signed_sum():
    # two examples, four positions, two neurons; example 0: text at 0-1, prompt at 2, padding at 3;
    # example 1: text at 0-2, prompt at 3
    text = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    real = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    h = torch.tensor(
        [[[2.0, 1.0], [2.0, 1.0], [0.0, 1.0], [5.0, 5.0]], [[3.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]],
        dtype=torch.float64,
    )
    grad = torch.tensor(
        [[[0.25, 0.1], [-0.25, 0.1], [0.0, 0.3], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]],
        dtype=torch.float64,
    )
    alone = batch_scores(h[:1], grad[:1], text[:1], real[:1])
    # neuron 0 in example 0: h g = +0.5 and -0.5 on its two text tokens
    assert alone["attribution"][0] == pytest.approx((0.5 + 0.5) / 2)
    assert alone["attribution_signed_sum"][0] == 0
    scores = batch_scores(h, grad, text, real)
    # neuron 0: example 0 as above; example 1: (|3 * 1| + 0 + 0) / 3
    # neuron 1: example 0: (0.1 + 0.1) / 2 on the text, the prompt's 0.3 only in the signed sum; example 1: 0
    expected = {
        "attribution": [0.5 + 1.0, 0.1],
        "attribution_signed_sum": [0.0 + 3.0, 0.1 + 0.1 + 0.3],
        "activation": [2.0 + 1.0, 1.0],
        "gradient": [0.25 + 1 / 3, 0.1],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(scores[name].numpy(), values, rtol=1e-12, err_msg=name)


def test_scores_sum_over_examples_and_ignore_padding():
    """Scores of a batch of two (one padded) are the sum (the signed sum: the mean) of each example's alone."""
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    prompt = torch.randn(lm.n_prompt, lm.hidden_size)
    frame = pd.DataFrame({"sentence": ["good movie", "the plot was dull and the actor was boring"], "label": [1, 0]})
    frame["example"] = range(2)
    together = neuron_scores(lm, prompt, lm.batches(frame, ["sentence"], 2))
    assert (
        lm.batches(frame, ["sentence"], 2)[0].attention_mask.sum()
        < 2 * lm.batches(frame, ["sentence"], 2)[0].attention_mask.shape[1]
    )  # the short example is padded
    alone = [neuron_scores(lm, prompt, lm.batches(frame.iloc[[i]], ["sentence"], 1)) for i in range(2)]
    for column in ("attribution", "activation", "gradient"):
        np.testing.assert_allclose(together[column], alone[0][column] + alone[1][column], rtol=1e-4, atol=1e-7)
    column = "attribution_signed_sum"
    np.testing.assert_allclose(together[column], (alone[0][column] + alone[1][column]) / 2, rtol=1e-4, atol=1e-7)
    assert list(together.columns) == [
        "layer",
        "neuron",
        "attribution",
        "activation",
        "gradient",
        "attribution_signed_sum",
    ]
    assert len(together) == sum(p.in_features for p in lm.projections)


def test_global_keep_takes_the_top_of_the_order_and_one_neuron_per_layer_at_least():
    layers = np.array([0, 0, 1, 0, 2, 1, 2, 2, 0])
    neurons = np.array([2, 0, 1, 1, 0, 0, 1, 2, 3])
    keep = global_keep(layers, neurons, [4, 2, 3], keep_ratio=4 / 9)  # the first four: (0,2) (0,0) (1,1) (0,1)
    assert {k: v.tolist() for k, v in keep.items()} == {0: [0, 1, 2], 1: [1], 2: [0]}  # layer 2 keeps its best


def test_a_width_multiple_rounds_each_layer_up_with_its_next_ranked_neurons():
    layers = np.array([0, 0, 1, 0, 2, 1, 2, 2, 0])
    neurons = np.array([2, 0, 1, 1, 2, 0, 0, 1, 3])  # layer 2 ranks its neurons 2, 0, 1
    keep = global_keep(layers, neurons, [4, 2, 3], keep_ratio=4 / 9, width_multiple=2)
    # layer 0: 3 -> 4 (its fourth is neuron 3); layer 1: 1 -> 2; layer 2: 1 -> 2 (its best two: 2, then 0)
    assert {k: v.tolist() for k, v in keep.items()} == {0: [0, 1, 2, 3], 1: [0, 1], 2: [0, 2]}
    capped = global_keep(layers, neurons, [4, 2, 3], keep_ratio=4 / 9, width_multiple=64)  # never past the width
    assert [len(v) for v in capped.values()] == [4, 2, 3]
    with pytest.raises(ValueError, match="layer 2 has no neuron in the attribution order"):
        global_keep(layers[layers < 2], neurons[layers < 2], [4, 2, 3], keep_ratio=0.5)


def test_order_of_sorts_by_score_with_ties_in_layer_then_neuron_order():
    scores = pd.DataFrame({"layer": [1, 0, 0, 1], "neuron": [0, 1, 0, 1], "attribution": [0.5, 0.9, 0.5, 0.1]})
    layers, neurons = order_of(scores, "attribution")
    assert list(zip(layers, neurons)) == [(0, 1), (0, 0), (1, 0), (1, 1)]


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.35, 0.5, 0.55, 0.95, 1.0])
def test_binary_search_finds_the_smallest_accepted_ratio(threshold):
    probed = []

    def accepts(ratio):
        probed.append(ratio)
        return ratio >= threshold - 1e-9

    ratio, probes = search_keep_ratio(accepts, 0.05)
    assert ratio == pytest.approx(threshold)
    assert [p.keep_ratio for p in probes] == probed and len(probed) <= 5  # ceil(log2(20))
    assert 1.0 not in probed and all(round(r / 0.05, 6).is_integer() for r in probed)
    assert all(p.accepted == (p.keep_ratio >= threshold - 1e-9) for p in probes)


def test_binary_search_rejects_a_step_that_does_not_divide_one():
    with pytest.raises(ValueError, match="step 0.3 does not divide 1"):
        search_keep_ratio(lambda ratio: True, 0.3)


def test_retuning_starts_from_the_given_prompt_on_a_pruned_model():
    torch.manual_seed(0)
    lm = tiny_lm("llama", n_prompt=3)
    train, dev = toy_reviews(32, seed=1), toy_reviews(16, seed=2)
    train["example"], dev["example"] = range(32), range(16)
    start = torch.randn(3, lm.hidden_size)
    model = copy.deepcopy(lm.model)
    prune_ffns(model, {1: torch.tensor([0, 5, 9])})
    pruned = lm.with_model(model)
    assert pruned.template == lm.template and pruned.n_prompt == 3
    assert pruned.label_ids.tolist() == lm.label_ids.tolist()
    dev_batches = pruned.batches(dev, ["sentence"], 8)
    result = tune_prompt(
        pruned,
        train,
        dev_batches,
        ["sentence"],
        seed=0,
        lr=0.01,
        batch_size=8,
        max_steps=2,
        eval_every=2,
        patience=1,
        init_std=0.0,
        start_prompt=start,
    )
    assert result.curve["dev_accuracy"].iloc[0] == evaluate(pruned, start, dev_batches)  # step 0 is the start
    assert not torch.equal(result.last_prompt, start) and torch.equal(start, start.clone())
