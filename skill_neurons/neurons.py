"""The one hook point for every architecture: the input of each layer's FFN output projection."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

NeuronFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def on_neurons(projections: Sequence[nn.Module], fn: NeuronFn) -> Iterator[None]:
    """Call `fn(layer, activation)` before each projection; a returned tensor replaces the activation."""

    def hook_for(layer: int):
        def pre_hook(_module: nn.Module, args: tuple) -> tuple | None:
            replaced = fn(layer, args[0])
            return None if replaced is None else (replaced, *args[1:])

        return pre_hook

    handles = [p.register_forward_pre_hook(hook_for(i)) for i, p in enumerate(projections)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
