"""The common tokens and words of a task's own text: what the `vocab` prompt init and the random label words
draw from, whatever the tokenizer numbers its vocabulary by.

Low token ids are common words only in some BPE vocabularies; elsewhere they are special, unused
(`<unused12>`, `[unused3]`) or byte (`<0xAA>`) tokens. Counting the training text is the same on every
tokenizer (Lester et al. 2021 sample the 5,000 most common tokens).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from transformers import PreTrainedTokenizerBase

COMMON_TOKENS = 5000
COMMON_WORDS = 1000
# A vocabulary entry written in angle or square brackets is a placeholder (special, unused or byte), not text.
PLACEHOLDER = re.compile(r"^(<[^<>]*>|\[[^\[\]]*\])$")
WORD = re.compile(r"[A-Za-z]{3,}")


def is_text_token(tokenizer: PreTrainedTokenizerBase, token: int, special: set[int]) -> bool:
    """A token that stands for text: not special, not a placeholder, not whitespace alone."""
    if token in special or PLACEHOLDER.match(tokenizer.convert_ids_to_tokens(token) or ""):
        return False
    return tokenizer.decode([token]).strip() != ""


def frequent_tokens(
    tokenizer: PreTrainedTokenizerBase, token_ids: Iterable[Sequence[int]], limit: int = COMMON_TOKENS
) -> list[int]:
    """The `limit` text tokens most frequent in `token_ids`, most frequent first (ties: lower id first)."""
    counts = Counter(token for ids in token_ids for token in ids)
    special = set(tokenizer.all_special_ids)
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    return [token for token in ranked if is_text_token(tokenizer, token, special)][:limit]


def frequent_words(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], limit: int = COMMON_WORDS) -> list[str]:
    """The `limit` words (3+ letters, lower case) most frequent in `texts` that the tokenizer reads as one whole
    token, written as a verbalizer scores them: with the leading space where word-initial tokens carry one."""
    counts = Counter(word.lower() for text in texts for word in WORD.findall(text))
    words: list[str] = []
    for word in sorted(counts, key=lambda w: (-counts[w], w)):
        form = next((f for f in (f" {word}", word) if _one_whole_token(tokenizer, f, word)), None)
        if form is not None:
            words.append(form)
            if len(words) == limit:
                break
    return words


def _one_whole_token(tokenizer: PreTrainedTokenizerBase, form: str, word: str) -> bool:
    ids = tokenizer(form, add_special_tokens=False).input_ids
    return len(ids) == 1 and tokenizer.decode(ids).strip() == word
