"""Physically smaller FFNs: freeze neurons at a constant, fold it into the output bias, drop them.

A frozen neuron j with constant activation c_j adds W_out[:, j] * c_j to every output, so
    b_out += W_out[:, frozen] @ c[frozen]
(the frozen neurons only: Wang et al.'s released code also added the kept ones), after which the
frozen rows of the FFN's input projections and the frozen columns of W_out can be removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .architecture import (
    ffn_input_projections,
    ffn_output_projections,
    ffn_width,
    is_conv1d,
    transformer_layers,
)
from .io import atomic_path


@dataclass
class FFN:
    """One layer's FFN: the modules whose output rows are neurons, and the projection reading them."""

    inputs: list[nn.Module]
    output: nn.Module
    parents: dict[int, tuple[nn.Module, str]]  # id(module) -> (parent, attribute), to swap modules


def layer_ffns(model: nn.Module) -> list[FFN]:
    """Every layer's FFN, bottom to top, its projections as `architecture` finds them."""
    ffns = []
    layers = transformer_layers(model)
    for layer, inputs, output in zip(layers, ffn_input_projections(model), ffn_output_projections(model), strict=True):
        names = {id(module): name for name, module in layer.named_modules()}
        parents = {}
        for module in (output, *inputs.values()):
            parent_name, _, attribute = names[id(module)].rpartition(".")
            parents[id(module)] = (layer.get_submodule(parent_name), attribute)
        ffns.append(FFN(list(inputs.values()), output, parents))
    return ffns


def _out_weight_columns(module: nn.Module) -> torch.Tensor:
    """W_out as (hidden, neurons) whatever the module's storage."""
    return module.weight.T if is_conv1d(module) else module.weight


@torch.no_grad()
def fold_frozen_into_bias(ffn: FFN, frozen: torch.Tensor, constant: torch.Tensor) -> None:
    """b_out += W_out[:, frozen] @ constant[frozen]; a bias is added where the projection has none."""
    output = ffn.output
    shift = _out_weight_columns(output)[:, frozen] @ constant[frozen].to(output.weight.dtype)
    if output.bias is None:
        output.bias = nn.Parameter(torch.zeros_like(shift), requires_grad=False)
    output.bias += shift


@torch.no_grad()
def sliced_projection(module: nn.Module, keep: torch.Tensor, dim_neurons: str) -> nn.Module:
    """A copy of `module` with only the `keep` neurons: its output rows ('out') or input columns ('in')."""
    if is_conv1d(module):
        weight = module.weight[:, keep] if dim_neurons == "out" else module.weight[keep, :]
        bias = module.bias[keep] if dim_neurons == "out" else module.bias
        sliced = type(module)(weight.shape[1], weight.shape[0])
    else:
        weight = module.weight[keep, :] if dim_neurons == "out" else module.weight[:, keep]
        bias = None if module.bias is None else (module.bias[keep] if dim_neurons == "out" else module.bias)
        sliced = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    sliced = sliced.to(device=module.weight.device, dtype=module.weight.dtype)
    sliced.weight.copy_(weight)
    if bias is not None:
        sliced.bias.copy_(bias)
    return sliced.requires_grad_(False)


def _replace(ffn: FFN, old: nn.Module, new: nn.Module) -> None:
    parent, attribute = ffn.parents.pop(id(old))
    setattr(parent, attribute, new)
    ffn.parents[id(new)] = (parent, attribute)


def remove_neurons(ffn: FFN, keep: torch.Tensor) -> None:
    """Keep only the `keep` neurons of this FFN (their rows in, their columns out)."""
    keep = torch.as_tensor(keep, dtype=torch.long, device=ffn.output.weight.device).sort().values
    new_inputs = []
    for module in ffn.inputs:
        sliced = sliced_projection(module, keep, "out")
        _replace(ffn, module, sliced)
        new_inputs.append(sliced)
    ffn.inputs = new_inputs
    sliced = sliced_projection(ffn.output, keep, "in")
    _replace(ffn, ffn.output, sliced)
    ffn.output = sliced


def prune_ffns(
    model: nn.Module, keep: Mapping[int, torch.Tensor], constants: Sequence[torch.Tensor] | None = None
) -> list[int]:
    """Freeze every neuron of the layers in `keep` except the kept ones at `constants[layer]`, fold, remove.

    Without `constants` the others are removed outright (frozen at 0, SKELETON). Layers missing from
    `keep` stay whole. Returns the FFN width of every layer afterwards.
    """
    ffns = layer_ffns(model)
    for layer, kept in keep.items():
        width = ffn_width(ffns[layer].output)
        kept = torch.as_tensor(kept, dtype=torch.long).unique()
        frozen = torch.ones(width, dtype=torch.bool)
        frozen[kept] = False
        if constants is not None:
            device = ffns[layer].output.weight.device
            fold_frozen_into_bias(ffns[layer], frozen.nonzero().squeeze(1).to(device), constants[layer].to(device))
        remove_neurons(ffns[layer], kept)
    return [ffn_width(f.output) for f in ffns]


def top_layers(n_layers: int, share: float) -> list[int]:
    """The highest `share` of the layers (Wang et al. prune the top ones, where skill neurons sit)."""
    count = max(1, round(share * n_layers))
    return list(range(n_layers - count, n_layers))


def skill_keep(
    ranking_layers: Sequence[int],
    ranking_neurons: Sequence[int],
    widths: Sequence[int],
    layers: Sequence[int],
    keep_share: float,
) -> dict[int, torch.Tensor]:
    """Per pruned layer, its round(keep_share * width) neurons that come first in the ranking."""
    keep = {}
    for layer in layers:
        count = max(1, round(keep_share * widths[layer]))
        in_layer = [n for l_, n in zip(ranking_layers, ranking_neurons) if l_ == layer]
        keep[layer] = torch.tensor(in_layer[:count], dtype=torch.long)
    return keep


WIDTHS_KEY = "skill_neurons_ffn_widths"  # recorded in config.json of a pruned model
BIAS_KEY = "skill_neurons_ffn_output_bias"  # layers whose FFN output projection gained a folded bias


def save_pruned(model: nn.Module, tokenizer, folder, widths: Sequence[int]) -> None:
    """save_pretrained, with the per-layer FFN widths and added biases in the config for `load_pruned`."""
    biased = [i for i, ffn in enumerate(layer_ffns(model)) if ffn.output.bias is not None]
    setattr(model.config, WIDTHS_KEY, list(widths))
    setattr(model.config, BIAS_KEY, biased)
    with atomic_path(folder, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def shape_like_pruned(model: nn.Module, config) -> None:
    """Resize a freshly built model's FFNs to the widths a pruned checkpoint records."""
    for layer, (ffn, width) in enumerate(zip(layer_ffns(model), getattr(config, WIDTHS_KEY))):
        if layer in getattr(config, BIAS_KEY, []) and ffn.output.bias is None:
            ffn.output.bias = nn.Parameter(torch.zeros(_out_weight_columns(ffn.output).shape[0]), requires_grad=False)
        if width != ffn_width(ffn.output):
            remove_neurons(ffn, torch.arange(width))
