"""SKELETON (Yang et al. 2024): which FFN neurons a prompt-tuned model needs, and how few it can keep.

Attribution of neuron i (its Eq. 2-3), with h_i(t) its activation at token t, P(y_j) the probability of
example j's gold label (softmax over the label words) and t_1..t_Kj the K_j text tokens of example j
(the templated input: not the soft-prompt positions, not [CLS]/[MASK]/[SEP], not padding):
    A_i = sum_j (1/K_j) sum_k | h_i(t_k) * dP(y_j)/dh_i(t_k) |
the absolute value per token, the mean over the example's text tokens, the sum over the examples (about
20); SKELETON ranks neurons globally by it. The other selection scores of its Fig. 5 are computed
here with the same tokens and aggregation and one factor dropped (our reading): activation
sum_j (1/K_j) sum_k |h_i(t_k)|, gradient sum_j (1/K_j) sum_k |dP(y_j)/dh_i(t_k)|.
Ours, kept as the column attribution_signed_sum:
    mean over j of | sum_t h_i(t) * dP(y_j)/dh_i(t) |   over every real position t, prompt included,
the first-order change of P(y) when the neuron is removed at every token, as physical pruning does
(per-token contributions of opposite sign cancel in it, not in A_i).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .batches import Batch
from .neurons import on_neurons
from .prompting import PromptedLM

SCORES = ("attribution", "activation", "gradient")  # the paper's (module docstring)
OUR_SCORES = ("attribution_signed_sum",)


def _token_mask(lm: PromptedLM, batch: Batch) -> torch.Tensor:
    """(B, T) 1 on every real token of the forward the hooks see (text and prompt), 0 on padding."""
    mask = batch.attention_mask
    if lm.kind == "causal":
        mask = torch.cat([mask, mask.new_ones(len(mask), lm.n_prompt)], 1)
    return mask.float()


def _text_mask(lm: PromptedLM, batch: Batch) -> torch.Tensor:
    """(B, T) 1 on the input-text tokens of the forward the hooks see, 0 on prompt, special tokens and padding.

    A causal model's hooks see the text then the n_prompt prompt positions; a masked LM's see one
    sequence in which `batch.text_mask` already marks the text alone.
    """
    text = batch.text_mask & batch.attention_mask.bool()
    if lm.kind == "causal":
        text = torch.cat([text, text.new_zeros(len(text), lm.n_prompt)], 1)
    return text.double()


def batch_scores(
    h: torch.Tensor,
    grad: torch.Tensor,
    text: torch.Tensor,
    real: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One layer's scores (D,) summed over a batch's examples, from h and dP(y)/dh (B, T, D).

    `text` (B, T) marks each example's text tokens, `real` (B, T) every non-padding position. The
    paper's scores are per-example means over text tokens; attribution_signed_sum is |sum_t h g| over
    the real positions (summed here over examples; `neuron_scores` divides it by their number).
    """
    h, grad = h.double(), grad.double()
    text, real = text.double().unsqueeze(-1), real.double().unsqueeze(-1)
    n_text = text.sum(1).clamp(min=1)

    def text_mean(per_token: torch.Tensor) -> torch.Tensor:
        return ((per_token * text).sum(1) / n_text).sum(0)

    return {
        "attribution": text_mean((h * grad).abs()),
        "activation": text_mean(h.abs()),
        "gradient": text_mean(grad.abs()),
        "attribution_signed_sum": (h * grad * real).sum(1).abs().sum(0),
    }


def activations_and_gradients(
    lm: PromptedLM,
    prompt: torch.Tensor,
    batch: Batch,
    projections: Sequence[nn.Module] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer (B, T, D): every neuron's activation h and dP(y)/dh, P(y) the gold label's probability.

    The neurons are the inputs of `projections`, one per layer: the FFN output projections unless given.
    """
    activations: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []

    def keep(_layer: int, activation: torch.Tensor) -> torch.Tensor:
        # A zero with a gradient, added to h: its gradient is dP/dh with every later path kept intact.
        delta = torch.zeros_like(activation, requires_grad=True)
        activations.append(activation.detach())
        deltas.append(delta)
        return activation + delta

    with on_neurons(lm.projections if projections is None else projections, keep):
        logits = lm.label_logits(prompt, batch, one_forward=True)
    logits.softmax(-1).gather(1, batch.labels.unsqueeze(1)).sum().backward()
    return activations, [delta.grad for delta in deltas]


def neuron_scores(
    lm: PromptedLM, prompt: torch.Tensor, batches: Sequence[Batch], projections: Sequence[nn.Module] | None = None
) -> pd.DataFrame:
    """Per neuron (layer, neuron): the scores of the module docstring over every example of `batches`.

    attribution, activation, gradient: sums over examples (SKELETON's Eq. 3); attribution_signed_sum: mean.
    The neurons are the inputs of `projections` (default: the FFN output projections).
    """
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in (*SCORES, *OUR_SCORES)}
    count = 0
    for batch in batches:
        activations, gradients = activations_and_gradients(lm, prompt, batch, projections)
        text, real = _text_mask(lm, batch), _token_mask(lm, batch)
        for layer, (h, grad) in enumerate(zip(activations, gradients)):
            for name, value in batch_scores(h, grad, text, real).items():
                if len(sums[name]) <= layer:
                    sums[name].append(torch.zeros_like(value))
                sums[name][layer] += value
        count += len(batch.labels)
    widths = [len(s) for s in sums["attribution"]]
    frame = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(len(widths)), widths),
            "neuron": np.concatenate([np.arange(w) for w in widths]),
        }
    )
    for name in SCORES:
        frame[name] = torch.cat(sums[name]).cpu().numpy()
    for name in OUR_SCORES:
        frame[name] = torch.cat(sums[name]).div(count).cpu().numpy()
    return frame


def global_keep(
    layers: np.ndarray,
    neurons: np.ndarray,
    widths: Sequence[int],
    keep_ratio: float,
    width_multiple: int = 1,
) -> dict[int, torch.Tensor]:
    """The first round(keep_ratio * total) neurons of a global order (given as parallel layer/neuron arrays).

    Every layer keeps at least its first-ranked neuron, so that no FFN is left without width. With
    `width_multiple` m, a layer l of which k_l are among the first neurons keeps its first
    min(width_l, m * ceil(max(k_l, 1) / m)) neurons in the order.
    """
    count = int(round(keep_ratio * sum(widths)))
    among_first = np.bincount(layers[:count].astype(np.int64), minlength=len(widths))
    keep = {}
    for layer, width in enumerate(widths):
        ranked = neurons[layers == layer]
        if not len(ranked):
            raise ValueError(f"layer {layer} has no neuron in the attribution order")
        kept = min(width, width_multiple * math.ceil(max(int(among_first[layer]), 1) / width_multiple))
        keep[layer] = torch.tensor(sorted(ranked[:kept].tolist()), dtype=torch.long)
    return keep


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
