"""Where the neurons are in any Transformer: its layer stack, each layer's FFN output projection, its kind.

A neuron is one input of the FFN output projection, a = f(x K^T + b1); the same hook point serves
activation capture, perturbation and pruning.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

# Relative names, inside one Transformer layer, of the FFN's output projection: its input is the
# neuron activation a = f(x K^T + b1) (LLaMA/Qwen/Gemma/Mistral, GPT-2, BERT/RoBERTa, OPT, GPT-NeoX).
FFN_OUTPUT_PROJECTIONS = ("mlp.down_proj", "mlp.c_proj", "output.dense", "fc2", "mlp.dense_4h_to_h", "mlp.fc2")
# Per output projection, the layouts of the FFN's first matrices, whose rows produce the neurons, first match wins:
# a gated FFN (LLaMA/Qwen/Gemma/Mistral) a_i = f(gate_i . h) * (up_i . h) has two, labelled; a plain FFN one ("").
FFN_INPUT_PROJECTIONS: dict[str, tuple[dict[str, str], ...]] = {
    "mlp.down_proj": ({"gate": "mlp.gate_proj", "up": "mlp.up_proj"}, {"": "mlp.up_proj"}),
    "mlp.c_proj": ({"": "mlp.c_fc"},),
    "output.dense": ({"": "intermediate.dense"},),
    "fc2": ({"": "fc1"},),
    "mlp.dense_4h_to_h": ({"": "mlp.dense_h_to_4h"},),
    "mlp.fc2": ({"": "mlp.fc1"},),
}


class ModelError(RuntimeError):
    """A model that cannot be found, loaded or hooked."""


def model_kind(config: PretrainedConfig) -> str:
    """'mlm' for masked LMs (verbalizer at [MASK]), 'causal' for decoders (label word as next token)."""
    architectures = " ".join(config.architectures or [])
    if "MaskedLM" in architectures:
        return "mlm"
    if "CausalLM" in architectures or "LMHeadModel" in architectures:
        return "causal"
    if getattr(config, "is_decoder", False):
        return "causal"
    # A model built from a config names no architecture: its type says it. BERT and RoBERTa also have causal
    # heads, so a type with a masked-LM head is read as a masked LM.
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return "mlm" if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "causal"


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of Transformer blocks: the longest ModuleList of repeated blocks."""
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ModelError(f"no ModuleList of {n_layers} layers in {type(model).__name__}")


def ffn_output_projection_name(model: nn.Module, index: int, layer: nn.Module) -> str:
    """The name, inside `layer`, of its FFN output projection."""
    names = dict(layer.named_modules())
    found = next((n for n in FFN_OUTPUT_PROJECTIONS if n in names), None)
    if found is None:
        raise ModelError(
            f"layer {index} of {type(model).__name__} has none of {FFN_OUTPUT_PROJECTIONS};"
            " add its FFN output projection to skill_neurons.architecture.FFN_OUTPUT_PROJECTIONS"
        )
    return found


def ffn_output_projections(model: nn.Module) -> list[nn.Module]:
    """The FFN output projection of every layer, bottom to top."""
    return [
        layer.get_submodule(ffn_output_projection_name(model, index, layer))
        for index, layer in enumerate(transformer_layers(model))
    ]


def ffn_input_projections(model: nn.Module) -> list[dict[str, nn.Module]]:
    """Per layer, bottom to top, the FFN's first projection(s) by label: "gate" and "up" if gated, "" if plain."""
    found = []
    for index, layer in enumerate(transformer_layers(model)):
        names = dict(layer.named_modules())
        output = ffn_output_projection_name(model, index, layer)
        layout = next((lay for lay in FFN_INPUT_PROJECTIONS[output] if set(lay.values()) <= names.keys()), None)
        if layout is None:
            model_type = getattr(model.config, "model_type", type(model).__name__)
            raise ModelError(
                f"model type {model_type!r}: layer {index} has its FFN output projection {output!r} but none of"
                f" the input layouts {FFN_INPUT_PROJECTIONS[output]}; add its layout to"
                " skill_neurons.architecture.FFN_INPUT_PROJECTIONS"
            )
        found.append({label: names[name] for label, name in layout.items()})
    return found


def input_weight_vector(projection: nn.Module, neuron: int) -> torch.Tensor:
    """(hidden,): the weights that make `neuron` from the FFN input, a row of nn.Linear, a column of Conv1D."""
    weight = projection.weight
    return (weight[:, neuron] if is_conv1d(projection) else weight[neuron]).detach()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D: y = x @ W + b with W stored as (in, out), the transpose of nn.Linear."""
    return type(module).__name__ == "Conv1D"


def ffn_width(projection: nn.Module) -> int:
    """Number of neurons feeding a projection."""
    weight = projection.weight
    return weight.shape[0] if is_conv1d(projection) else weight.shape[1]
