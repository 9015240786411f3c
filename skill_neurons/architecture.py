"""Where the neurons are in any Transformer: its layer stack, each layer's FFN output projection, its kind.

A neuron is one input of the FFN output projection, a = f(x K^T + b1); the same hook point serves
activation capture, perturbation and pruning.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

# Relative names, inside one Transformer layer, of the FFN's output projection: its input is the
# neuron activation a = f(x K^T + b1) (LLaMA/Qwen/Gemma/Mistral, GPT-2, BERT/RoBERTa, OPT, GPT-NeoX).
FFN_OUTPUT_PROJECTIONS = ("mlp.down_proj", "mlp.c_proj", "output.dense", "fc2", "mlp.dense_4h_to_h", "mlp.fc2")


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


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D: y = x @ W + b with W stored as (in, out), the transpose of nn.Linear."""
    return type(module).__name__ == "Conv1D"


def ffn_width(projection: nn.Module) -> int:
    """Number of neurons feeding a projection."""
    weight = projection.weight
    return weight.shape[0] if is_conv1d(projection) else weight.shape[1]
