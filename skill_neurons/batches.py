"""A split as padded batches of token ids, with the slots where a causal LM's stored text attaches."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) the text tokens; prompt slots hold the pad id (MLM)
    attention_mask: torch.Tensor  # (B, T)
    text_mask: torch.Tensor  # (B, T) True on the input-text tokens (Avg/Max baselines)
    labels: torch.Tensor  # (B,) class indices
    examples: torch.Tensor  # (B,) example ids of the split
    prefix_cache: object | None = None  # causal LMs: keys/values of the text, kept for repeated evaluation
    input_avg: list[torch.Tensor] | None = None  # causal LMs: the text's Avg/Max per layer, kept with the cache
    input_max: list[torch.Tensor] | None = None
