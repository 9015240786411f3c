"""Prompt transferability and its indicator (Wang et al. §6.2, after Su et al. 2021).

A prompt tuned on task A is evaluated zero-shot on task B where both use the same label words. The
indicator is the overlapping rate of activated neurons of the two prompts (Su et al.'s ON): each prompt is
fed alone into the frozen model, and its activation state is the binary vector s over (layer, prompt
position, neuron) with s = 1 where the neuron's activation is > 0. Then

    ON(A, B) = |s_A ∧ s_B| / sqrt(|s_A| |s_B|)       (the cosine similarity of the two binary vectors)

over all neurons, or over the top 20% skill neurons of the target task B (Wang et al.: the Spearman
correlation of ON with the transfer accuracy over task pairs rises from 0.53 to 0.71). "> 0" is the
ReLU's sense of "activated"; for a gated FFN (SiLU) it is the sign of the neuron's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

if TYPE_CHECKING:
    import torch

    from .prompting import PromptedLM


def activation_states(lm: PromptedLM, prompt: torch.Tensor) -> np.ndarray:
    """(layers, prompt positions, neurons) bool: the prompt fed alone, each neuron's activation > 0."""
    import torch  # here, not at the top: the transferability table reads overlaps without loading torch

    from .neurons import on_neurons

    states: dict[int, np.ndarray] = {}

    def record(layer: int, activation: torch.Tensor) -> None:
        states[layer] = (activation[0].float() > 0).cpu().numpy()

    embeds = prompt.to(lm.device, dtype=next(lm.model.parameters()).dtype).unsqueeze(0)
    with torch.no_grad(), on_neurons(lm.projections, record), lm.precision_context():
        lm.model(inputs_embeds=embeds, use_cache=False)
    return np.stack([states[layer] for layer in range(len(lm.projections))])


def overlap_rate(first: np.ndarray, second: np.ndarray, neurons: np.ndarray | None = None) -> float:
    """ON = |a ∧ b| / sqrt(|a| |b|) of two activation states (layers, positions, D), over every neuron or only
    those where the (layers, D) bool mask `neurons` holds (all positions of a chosen neuron count)."""
    if first.shape != second.shape:
        raise ValueError(f"activation states of shapes {first.shape} and {second.shape} do not compare")
    if neurons is not None:
        chosen = np.broadcast_to(neurons[:, None, :], first.shape)
        first, second = first[chosen], second[chosen]
    both, sizes = np.sum(first & second), np.sqrt(float(np.sum(first)) * float(np.sum(second)))
    return float(both / sizes) if sizes else 0.0


def top_share_mask(ranking: pd.DataFrame, widths: Sequence[int], share: float) -> np.ndarray:
    """(layers, D) bool: the first round(share * all neurons) of a ranking (columns layer, neuron, rank)."""
    mask = np.zeros((len(widths), max(widths)), dtype=bool)
    top = ranking.nsmallest(int(round(share * sum(widths))), "rank")
    mask[top["layer"].to_numpy(), top["neuron"].to_numpy()] = True
    return mask


def indicator_correlations(pairs: pd.DataFrame, at_chance: Sequence[str] = ()) -> pd.DataFrame:
    """Spearman correlation over task pairs of the transfer accuracy with each overlap rate (means over seeds).

    `pairs` has columns source, target, seed, transfer_accuracy, overlap_all, overlap_skill. One row per
    indicator over all pairs (tasks "all") and, where `at_chance` names tasks, one over the pairs without them
    (tasks "above chance"): a prompt at chance has learnt no skill to transfer. With fewer than 3 pairs a rank
    correlation says nothing: spearman is NaN and `pairs` tells how many there were.
    """
    means = pairs.groupby(["source", "target"])[["transfer_accuracy", "overlap_all", "overlap_skill"]].mean()
    kept = ~means.index.get_level_values("source").isin(at_chance) & ~means.index.get_level_values("target").isin(
        at_chance
    )
    subsets = {"all": means} | ({"above chance": means[kept]} if len(at_chance) else {})
    rows = []
    for tasks, subset in subsets.items():
        for indicator in ("overlap_all", "overlap_skill"):
            enough = len(subset) >= 3
            rho = spearmanr(subset[indicator], subset["transfer_accuracy"]).statistic if enough else float("nan")
            rows.append({"indicator": indicator, "tasks": tasks, "spearman": float(rho), "pairs": len(subset)})
    return pd.DataFrame(rows)
