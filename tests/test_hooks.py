"""The hook point is the FFN neuron activation a = f(x K^T + b1), on every supported architecture."""

import pytest
import torch

from skill_neurons.architecture import ffn_output_projections, ffn_width, model_kind
from skill_neurons.neurons import on_neurons

from .conftest import tiny_model, word_tokenizer


def manual_ffn_activation(architecture: str, layer: torch.nn.Module, ffn_input: torch.Tensor) -> torch.Tensor:
    """The FFN's hidden activation recomputed from its own weights."""
    if architecture == "llama":
        mlp = layer.mlp
        return torch.nn.functional.silu(mlp.gate_proj(ffn_input)) * mlp.up_proj(ffn_input)
    if architecture == "gpt2":
        return layer.mlp.act(layer.mlp.c_fc(ffn_input))
    return layer.intermediate.intermediate_act_fn(layer.intermediate.dense(ffn_input))


def ffn_input_module(architecture: str, layer: torch.nn.Module) -> torch.nn.Module:
    return {"llama": lambda: layer.mlp, "gpt2": lambda: layer.mlp}.get(architecture, lambda: layer.intermediate)()


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "bert", "roberta"])
def test_hook_captures_exactly_the_ffn_activation(architecture):
    tokenizer = word_tokenizer()
    model = tiny_model(architecture, len(tokenizer))
    projections = ffn_output_projections(model)
    layers = [p for p in model.modules() if isinstance(p, torch.nn.ModuleList)][0]
    assert len(projections) == len(layers)
    inputs, captured = {}, {}
    handles = [
        ffn_input_module(architecture, layer).register_forward_pre_hook(
            lambda _m, args, i=i: inputs.__setitem__(i, args[0])
        )
        for i, layer in enumerate(layers)
    ]
    ids = torch.randint(7, len(tokenizer), (2, 9))
    with on_neurons(projections, lambda layer, a: captured.__setitem__(layer, a.clone())), torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    for i, layer in enumerate(layers):
        expected = manual_ffn_activation(architecture, layer, inputs[i])
        assert captured[i].shape[-1] == ffn_width(projections[i])
        torch.testing.assert_close(captured[i], expected)


@pytest.mark.parametrize(
    "architecture,kind",
    [("llama", "causal"), ("gpt2", "causal"), ("gemma3", "causal"), ("bert", "mlm"), ("roberta", "mlm")],
)
def test_model_kind(architecture, kind):
    assert model_kind(tiny_model(architecture, 40).config) == kind


def test_returned_tensor_replaces_the_activation_of_that_layer_only():
    model = tiny_model("llama", 40)
    projections = ffn_output_projections(model)
    ids = torch.randint(7, 40, (1, 6))
    with torch.no_grad():
        clean = model(input_ids=ids).logits

        def zero_layer_1(layer, activation):
            return torch.zeros_like(activation) if layer == 1 else None

        with on_neurons(projections, zero_layer_1):
            zeroed = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.allclose(clean, zeroed)
    torch.testing.assert_close(clean, after)  # hooks are gone after the block
