"""Perturbation sweeps (Wang et al. §4.2, Fig. 4): disturb the top-r% neurons of an order, measure accuracy.

Where: a perturbation acts at the neuron hook point (the input of the FFN output projection), on the
soft-prompt positions (positions 'prompt': where predictivity is measured; for a causal LM the text's
keys/values then stay those of the clean model and are computed once for the whole sweep) or on every
token (positions 'all').
What (modes): 'noise' adds N(0, sigma^2); 'zero' sets 0; 'baseline' sets the neuron's baseline, the
mean over prompt positions of its train-set mean activation (the constant that pruning freezes a neuron
at); 'position_baseline' sets each prompt position to the neuron's train-set mean at that position (mean
ablation: the threshold predictivity compares against, so only what varies between examples is removed).
Noise is drawn per token (shape (B, T, k), ours) or, with `noise_shared_across_tokens`, one vector per
example shared by all its tokens (shape (B, 1, k) broadcast over T, the authors' code).
Which neurons (scopes): 'global' takes the first round(r * N) neurons of the order over all N neurons
(ours); 'per_layer' takes in each layer the layer's own first round(r * width) neurons of the order
restricted to that layer (the authors' code). The random control is a random order under the same
scope, so 'per_layer' draws the same number of neurons per layer at random.
The paper's setting: mode 'noise', sigma 0.1, positions 'all', noise shared across tokens, scope
'per_layer'. Zeroing, mean ablation, prompt-only positions, per-token noise and the global scope are ours.
(A mode with noise scaled to each neuron's spread would need per-neuron standard deviations, which the
activation dump's baseline table does not hold.)
With positions 'all' and shared noise, every token of an example must pass the hook in one call: a
causal LM's cached two-pass forward (text, then prompt) would draw a second vector for the prompt;
`evaluate(..., one_forward=True)` (tuning.py) runs text and prompt in one forward.
Neuronal importance of a source order for an evaluation task is the area between the random-order
and the source-order accuracy curves (`sweep_tables.neuronal_importance`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .neurons import on_neurons

MODES = ("noise", "zero", "baseline", "position_baseline")
SCOPES = ("global", "per_layer")
# Mean ablation needs a baseline per position, which only the prompt positions have.
PROMPT_ONLY_MODES = ("position_baseline",)


def mode_positions(mode: str, positions: str) -> str:
    """Where `mode` perturbs: the configured positions, or the prompt positions for a prompt-only mode."""
    return "prompt" if mode in PROMPT_ONLY_MODES else positions


def is_paper_setting(mode: str, positions: str, scope: str, noise_shared_across_tokens: bool) -> bool:
    """Wang et al.'s Fig. 4 experiment (the authors' code): noise at every token, shared, per layer."""
    return (mode, positions, scope, noise_shared_across_tokens) == ("noise", "all", "per_layer", True)


@dataclass
class Perturbation:
    mode: str
    neurons: Mapping[int, torch.Tensor]  # layer -> indices of the perturbed neurons
    sigma: float = 0.1
    baseline: Sequence[torch.Tensor] | None = None  # per layer (D,) for 'baseline', (P, D) for 'position_baseline'
    generator: torch.Generator | None = None  # noise source, for mode 'noise'
    positions: Callable[[], slice | None] | None = None  # token positions to perturb now; None: every token
    noise_shared_across_tokens: bool = False  # mode 'noise': one vector per example for all its tokens

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown perturbation mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.mode in ("baseline", "position_baseline") and self.baseline is None:
            raise ValueError(f"perturbation mode {self.mode!r} needs the neurons' baseline activations")

    def apply(self, layer: int, activation: torch.Tensor) -> torch.Tensor | None:
        chosen = self.neurons.get(layer)
        if chosen is None or len(chosen) == 0:
            return None
        where = slice(None) if self.positions is None else self.positions()
        if where is None:
            return None
        neurons = chosen.to(activation.device)
        index = (slice(None), where, neurons)
        changed = activation.clone()
        if self.mode == "noise":
            if not isinstance(where, slice):  # an index tensor would make `at` a copy, and the noise would be lost
                raise TypeError(f"noise positions must be a slice, not {type(where).__name__}")
            at = changed[:, where]  # a view: the noise is added in place, to the chosen columns alone
            batch, tokens, k = len(at), at.shape[1], len(neurons)
            shape = (batch, 1, k) if self.noise_shared_across_tokens else (batch, tokens, k)  # (B, 1, k): broadcast
            noise = torch.randn(shape, generator=self.generator, device=activation.device, dtype=torch.float32)
            # index_add_ rather than `changed[index] += noise`, which gathers, adds and scatters (2.6x the time
            # in bf16); the same sums, the neurons being distinct
            at.index_add_(-1, neurons, (self.sigma * noise).to(activation.dtype).expand(batch, tokens, k))
        elif self.mode == "zero":
            changed[index] = 0
        elif self.mode == "baseline":
            changed[index] = self.baseline[layer].to(activation.device, activation.dtype)[chosen]
        else:
            per_position = self.baseline[layer].to(activation.device, activation.dtype)[:, chosen]
            if changed[index].shape[1] != per_position.shape[0]:
                raise ValueError(
                    f"mode 'position_baseline' has baselines for {per_position.shape[0]} prompt "
                    f"positions but the hook sees {changed[index].shape[1]}; use positions: prompt"
                )
            changed[index] = per_position
        return changed


@contextlib.contextmanager
def perturbed(projections: Sequence[torch.nn.Module], perturbation: Perturbation) -> Iterator[None]:
    with on_neurons(projections, perturbation.apply):
        yield


def _prompt_means(baseline: pd.DataFrame) -> list[np.ndarray]:
    """Per layer (P, D), in the file's precision: the train-set mean activation at each prompt position."""
    prompt = baseline[baseline["kind"] == "prompt"]
    return [
        np.stack(part["activation"].to_numpy())
        for _, part in prompt.sort_values(["layer", "position"]).groupby("layer", sort=True)
    ]


def neuron_baseline(baseline: pd.DataFrame) -> list[torch.Tensor]:
    """Per layer (D,): the mean over prompt positions of each neuron's train-set mean activation."""
    return [torch.tensor(means.mean(0), dtype=torch.float32) for means in _prompt_means(baseline)]


def input_mean_baseline(baseline: pd.DataFrame) -> list[torch.Tensor]:
    """Per layer (D,): each neuron's train-set mean of its mean over an example's text tokens (input Avg)."""
    rows = baseline[baseline["kind"] == "input_avg"].sort_values("layer")
    return [torch.tensor(np.asarray(values, dtype=np.float32)) for values in rows["activation"]]


def position_baseline(baseline: pd.DataFrame) -> list[torch.Tensor]:
    """Per layer (P, D): each neuron's train-set mean activation at each prompt position."""
    return [torch.tensor(means, dtype=torch.float32) for means in _prompt_means(baseline)]


def random_order(widths: Sequence[int], seed: int) -> pd.DataFrame:
    """Every neuron in a random order fixed by `seed`: columns layer, neuron, rank."""
    layers = np.repeat(np.arange(len(widths)), widths)
    neurons = np.concatenate([np.arange(w) for w in widths])
    order = np.random.default_rng(seed).permutation(len(layers))
    return pd.DataFrame({"layer": layers[order], "neuron": neurons[order], "rank": np.arange(1, len(order) + 1)})


def top_share(order: pd.DataFrame, rate: float, scope: str = "global") -> dict[int, torch.Tensor]:
    """The top neurons of an order (by `rank`), grouped by layer.

    scope 'global': the first round(rate * n) of all n neurons. 'per_layer': in each layer, the first
    round(rate * width) of the order restricted to that layer (width = that layer's neurons in the order).
    """
    if scope == "global":
        top = order.nsmallest(int(round(rate * len(order))), "rank")
    elif scope == "per_layer":
        top = pd.concat(
            [part.nsmallest(int(round(rate * len(part))), "rank") for _, part in order.groupby("layer", sort=True)]
        )
    else:
        raise ValueError(f"unknown perturbation scope {scope!r}; use one of {', '.join(SCOPES)}")
    return {
        int(layer): torch.tensor(part["neuron"].to_numpy(), dtype=torch.long)
        for layer, part in top.groupby("layer")
        if len(part)
    }


def noise_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator seeded from several integers, so that each sweep point has its own reproducible noise."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


def sweep(
    evaluate_fn,
    projections: Sequence[torch.nn.Module],
    device: torch.device,
    orders: Mapping[str, pd.DataFrame],
    rates: Sequence[float],
    modes: Sequence[str],
    sigma: float,
    baselines: Mapping[str, Sequence[torch.Tensor]],
    seed: int,
    positions: Callable[[], slice | None] | None = None,
    *,
    scope: str = "global",
    noise_shared_across_tokens: bool = False,
) -> pd.DataFrame:
    """Accuracy for every (mode, order, rate): `evaluate_fn()` runs once per point, and once for rate 0.

    `baselines` maps the modes 'baseline' and 'position_baseline' to their per-layer baselines.
    `scope` selects the neurons of each order (`top_share`); `noise_shared_across_tokens` draws one
    noise vector per example (module docstring). The paper: scope 'per_layer', shared noise, positions all.

    Returns rows mode, order, rate, n_neurons, accuracy; rate 0 is the unperturbed accuracy, shared.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown perturbation scope {scope!r}; use one of {', '.join(SCOPES)}")
    unperturbed = evaluate_fn() if 0 in rates else None
    rows = []
    for mode_index, mode in enumerate(modes):
        for rate_index, rate in enumerate(rates):
            for order_index, (name, order) in enumerate(orders.items()):
                if rate == 0:
                    rows.append({"mode": mode, "order": name, "rate": 0.0, "n_neurons": 0, "accuracy": unperturbed})
                    continue
                chosen = top_share(order, rate, scope)
                generator = noise_generator(device, seed, mode_index, rate_index, order_index)
                perturbation = Perturbation(
                    mode, chosen, sigma, baselines.get(mode), generator, positions, noise_shared_across_tokens
                )
                with perturbed(projections, perturbation):
                    accuracy = evaluate_fn()
                rows.append(
                    {
                        "mode": mode,
                        "order": name,
                        "rate": float(rate),
                        "n_neurons": sum(len(v) for v in chosen.values()),
                        "accuracy": accuracy,
                    }
                )
    return pd.DataFrame(rows)
