"""Random label words (Wang et al.'s label-word independence): common whole words of the task's text, by seed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from .vocabulary import frequent_words


def draw_label_words(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], n_words: int, seed: int, original: Sequence[str] = ()
) -> tuple[str, ...]:
    """`n_words` distinct label words drawn with `seed` from the most frequent one-token whole words of `texts`
    (`vocabulary.frequent_words`), the task's own label words left out."""
    taken = {word.strip().lower() for word in original}
    candidates = [word for word in frequent_words(tokenizer, texts) if word.strip() not in taken]
    if len(candidates) < n_words:
        raise ValueError(f"only {len(candidates)} one-token whole words in the text to draw {n_words} label words from")
    chosen = np.random.default_rng(seed).choice(len(candidates), n_words, replace=False)
    return tuple(candidates[i] for i in chosen)
