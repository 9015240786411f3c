"""Ours, beside SKELETON's FFN pruning: whole key/value groups of attention removed, ranked by its attribution.

A group is one key/value head with the query heads that read it (grouped-query attention; one head in
multi-head attention). Its score is SKELETON's attribution A_i (module skeleton) summed over the inputs i
of the attention output projection that its query heads write, head_dim per head:
    A_g = sum_{i in dims(g)} A_i,   dims(g) = the columns of W_o of query heads g*r .. g*r + r - 1,
r the query heads per key/value head (HF's repeat_kv gives query head h the key/value head h // r).
Removing g drops those heads' rows of W_q and columns of W_o and g's rows of W_k and W_v; the layer's
head_dim and r stay, so its forward runs unchanged on fewer heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .architecture import ModelError, transformer_layers
from .pruning import sliced_projection

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
KV_HEADS_KEY = "skill_neurons_kv_heads"  # recorded in config.json of a model pruned this way


@dataclass
class Attention:
    """One layer's attention module and its head layout."""

    module: nn.Module
    head_dim: int
    group_size: int  # query heads per key/value head

    @property
    def n_groups(self) -> int:
        return self.module.k_proj.weight.shape[0] // self.head_dim

    @property
    def output(self) -> nn.Module:
        return self.module.o_proj


def layer_attentions(model: nn.Module) -> list[Attention]:
    """Every layer's attention, bottom to top; a clear error for a layout other than q/k/v/o_proj with head_dim."""
    found = []
    for index, layer in enumerate(transformer_layers(model)):
        module = next((m for m in layer.children() if _removable(m)), None)
        if module is None:
            model_type = getattr(model.config, "model_type", type(model).__name__)
            raise ModelError(
                f"pruning.skeleton.attention: layer {index} of model type {model_type!r} has no attention module"
                f" with {', '.join(PROJECTIONS)}, head_dim and num_key_value_groups whose q/k norms, if any, act"
                " per head (LLaMA-style attention); key/value groups can be removed only there"
            )
        found.append(Attention(module, int(module.head_dim), int(module.num_key_value_groups)))
    return found


def _removable(module: nn.Module) -> bool:
    """LLaMA-style attention that runs unchanged on fewer heads: a q/k norm over all heads (OLMo2, Cohere's
    use_qk_norm) would need slicing too, one over head_dim (Qwen3, Gemma) does not."""
    if not all(isinstance(getattr(module, name, None), nn.Linear) for name in PROJECTIONS):
        return False
    if not (hasattr(module, "head_dim") and hasattr(module, "num_key_value_groups")):
        return False
    norms = [getattr(module, name, None) for name in ("q_norm", "k_norm")]
    weights = [getattr(norm, "weight", None) for norm in norms if norm is not None]
    return all(weight is None or tuple(weight.shape) == (int(module.head_dim),) for weight in weights)


def group_scores(dimension_scores: pd.DataFrame, attentions: Sequence[Attention]) -> pd.DataFrame:
    """Per (layer, group) the sum of every score column over the group's output dimensions (columns 'neuron')."""
    frame = dimension_scores.copy()
    head_dim = np.array([a.head_dim for a in attentions])[frame["layer"].to_numpy()]
    group_size = np.array([a.group_size for a in attentions])[frame["layer"].to_numpy()]
    frame["group"] = frame["neuron"].to_numpy() // head_dim // group_size
    summed = frame.drop(columns="neuron").groupby(["layer", "group"], as_index=False).sum()
    return summed.rename(columns={"group": "neuron"})  # the unit column every order reads


@torch.no_grad()
def remove_groups(attention: Attention, keep: torch.Tensor) -> None:
    """Keep only the `keep` key/value groups of this attention (and the query heads that read them)."""
    module, size = attention.module, attention.head_dim
    keep = torch.as_tensor(keep, dtype=torch.long).unique().sort().values
    offsets = torch.arange(size)
    kv_rows = (keep[:, None] * size + offsets).flatten()
    query_heads = (keep[:, None] * attention.group_size + torch.arange(attention.group_size)).flatten()
    query_rows = (query_heads[:, None] * size + offsets).flatten()
    for name, rows, side in (("q_proj", query_rows, "out"), ("k_proj", kv_rows, "out"), ("v_proj", kv_rows, "out")):
        setattr(module, name, sliced_projection(getattr(module, name), rows.to(module.q_proj.weight.device), side))
    module.o_proj = sliced_projection(module.o_proj, query_rows.to(module.o_proj.weight.device), "in")


def prune_attention(model: nn.Module, keep: Mapping[int, torch.Tensor]) -> list[int]:
    """Remove all but the `keep` groups of the listed layers; returns every layer's key/value heads after."""
    attentions = layer_attentions(model)
    for layer, kept in keep.items():
        remove_groups(attentions[layer], kept)
    return [a.n_groups for a in attentions]


def record_kv_heads(model: nn.Module, kv_heads: Sequence[int]) -> None:
    setattr(model.config, KV_HEADS_KEY, [int(n) for n in kv_heads])


def shape_attention_like_pruned(model: nn.Module, config) -> None:
    """Narrow a freshly built model's attention to the key/value heads a pruned checkpoint records."""
    attentions, recorded = layer_attentions(model), getattr(config, KV_HEADS_KEY)
    if len(recorded) != len(attentions):
        raise ModelError(f"{KV_HEADS_KEY} lists {len(recorded)} layers; the model has {len(attentions)}")
    for attention, groups in zip(attentions, recorded):
        if groups != attention.n_groups:
            remove_groups(attention, torch.arange(groups))
