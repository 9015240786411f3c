"""Random label words (Wang et al.'s label-word independence): common whole-word tokens, drawn by seed."""

from __future__ import annotations

import numpy as np
from transformers import PreTrainedTokenizerBase

COMMON_TOKENS = 5000


def draw_label_words(tokenizer: PreTrainedTokenizerBase, n_words: int, seed: int) -> tuple[str, ...]:
    """`n_words` distinct random label words: common word tokens (alphabetic, word-initial, among the
    `COMMON_TOKENS` lowest ids) that tokenise back to themselves, drawn with `seed`."""
    special = set(tokenizer.all_special_ids)
    candidates = []
    for token in range(min(COMMON_TOKENS, len(tokenizer))):
        text = tokenizer.decode([token])
        if token in special or len(text.strip()) < 3 or not text.strip().isalpha():
            continue
        if tokenizer(text, add_special_tokens=False).input_ids == [token]:
            candidates.append(text)
    if any(text.startswith(" ") for text in candidates):  # byte-level BPE: word-initial tokens carry the space
        candidates = [text for text in candidates if text.startswith(" ")]
    if len(candidates) < n_words:
        raise ValueError(f"only {len(candidates)} whole-word tokens to draw {n_words} label words from")
    chosen = np.random.default_rng(seed).choice(len(candidates), n_words, replace=False)
    return tuple(candidates[i] for i in chosen)
