"""SKELETON (Yang et al. 2024): which FFN neurons a prompt-tuned model needs, and how few it can keep.

Attribution of neuron i in one example, with h_t its activation at token t and P(y) the probability
of the gold label (softmax over the label words):
    A_i = | sum_t h_t * dP(y)/dh_t |
the first-order change of P(y) when the neuron is removed at every token, as physical pruning does;
SKELETON ranks neurons globally by its mean over n examples. The other selection scores of its
Fig. 5 come from the same pass: activation mean_t |h_t|, gradient |sum_t dP(y)/dh_t|.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .batches import Batch
from .neurons import on_neurons
from .prompting import PromptedLM

SCORES = ("attribution", "activation", "gradient")


def _token_mask(lm: PromptedLM, batch: Batch) -> torch.Tensor:
    """(B, T) 1 on every real token of the forward the hooks see (text and prompt), 0 on padding."""
    mask = batch.attention_mask
    if lm.kind == "causal":
        mask = torch.cat([mask, mask.new_ones(len(mask), lm.n_prompt)], 1)
    return mask.float()


def activations_and_gradients(lm: PromptedLM, prompt: torch.Tensor, batch: Batch,
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer (B, T, D): every neuron's activation h and dP(y)/dh, P(y) the gold label's probability."""
    activations: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []

    def keep(_layer: int, activation: torch.Tensor) -> torch.Tensor:
        # A zero with a gradient, added to h: its gradient is dP/dh with every later path kept intact.
        delta = torch.zeros_like(activation, requires_grad=True)
        activations.append(activation.detach())
        deltas.append(delta)
        return activation + delta

    with on_neurons(lm.projections, keep):
        logits = (lm.full_causal_logits if lm.kind == "causal" else lm.label_logits)(prompt, batch)
    logits.softmax(-1).gather(1, batch.labels.unsqueeze(1)).sum().backward()
    return activations, [delta.grad for delta in deltas]


def neuron_scores(lm: PromptedLM, prompt: torch.Tensor, batches: Sequence[Batch]) -> pd.DataFrame:
    """Per neuron (layer, neuron): mean over examples of attribution, activation and gradient (module doc)."""
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in SCORES}
    count = 0
    for batch in batches:
        activations, gradients = activations_and_gradients(lm, prompt, batch)
        mask = _token_mask(lm, batch).unsqueeze(-1)
        for layer, (h, grad) in enumerate(zip(activations, gradients)):
            h, grad = h.double() * mask, grad.double() * mask
            parts = {
                "attribution": (h * grad).sum(1).abs().sum(0),
                "activation": (h.abs().sum(1) / mask.sum(1)).sum(0),
                "gradient": grad.sum(1).abs().sum(0),
            }
            for name, value in parts.items():
                if len(sums[name]) <= layer:
                    sums[name].append(torch.zeros_like(value))
                sums[name][layer] += value
        count += len(batch.labels)
    widths = [len(s) for s in sums["attribution"]]
    frame = pd.DataFrame({
        "layer": np.repeat(np.arange(len(widths)), widths),
        "neuron": np.concatenate([np.arange(w) for w in widths]),
    })
    for name in SCORES:
        frame[name] = torch.cat(sums[name]).div(count).cpu().numpy()
    return frame


def global_keep(layers: np.ndarray, neurons: np.ndarray, widths: Sequence[int], keep_ratio: float,
                ) -> dict[int, torch.Tensor]:
    """The first round(keep_ratio * total) neurons of a global order (given as parallel layer/neuron arrays).

    Every layer keeps at least its first-ranked neuron, so that no FFN is left without width.
    """
    count = int(round(keep_ratio * sum(widths)))
    keep = {layer: [] for layer in range(len(widths))}
    for layer, neuron in zip(layers[:count], neurons[:count]):
        keep[int(layer)].append(int(neuron))
    for layer, kept in keep.items():
        if not kept:
            kept.append(int(neurons[np.flatnonzero(layers == layer)[0]]))
    return {layer: torch.tensor(sorted(kept), dtype=torch.long) for layer, kept in keep.items()}


def order_of(scores: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Layer and neuron arrays by decreasing `column`; ties keep the lower (layer, neuron) first."""
    ordered = scores.sort_values(["layer", "neuron"]).reset_index(drop=True)
    index = np.argsort(-ordered[column].to_numpy(), kind="stable")
    return ordered["layer"].to_numpy()[index], ordered["neuron"].to_numpy()[index]


@dataclass
class Probe:
    keep_ratio: float
    accepted: bool


def search_keep_ratio(accepts: Callable[[float], bool], step: float) -> tuple[float, list[Probe]]:
    """The smallest keep ratio k * step (k = 1 .. 1/step) that `accepts`, by binary search.

    Acceptance is assumed to grow with the ratio; the dense model (ratio 1) is taken as accepted and
    never probed. Returns the ratio and the probes in the order they were made.
    """
    n_steps = int(round(1 / step))
    if not np.isclose(n_steps * step, 1.0):
        raise ValueError(f"keep-ratio step {step} does not divide 1")
    low, high, probes = 0, n_steps, []  # ratio low * step is rejected (or 0), high * step accepted
    while high - low > 1:
        middle = (low + high) // 2
        ratio = round(middle * step, 10)
        accepted = bool(accepts(ratio))
        probes.append(Probe(ratio, accepted))
        if accepted:
            high = middle
        else:
            low = middle
    return round(high * step, 10), probes
