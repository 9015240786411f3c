"""What the workflow plans its jobs by: which controls run, which task pairs a prompt transfers between, and how
large an activation dump is (checked against its budget before any job starts).

Kept apart from the modules that compute them, and free of torch: the Snakefile imports this on every
invocation (a dry run, the scheduler of a run, each cluster submission), and torch with transformers would
add about 3 s to each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Wang et al.'s Table 3 controls, in the order of its columns (see `controls`).
CONTROLS = ("hard_prompt", "random_model", "random_prompt")


def transfer_pairs(label_words: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """Ordered (source, target) pairs of different tasks with the same label words, in name order (see `transfer`)."""
    names = sorted(label_words)
    return [(a, b) for a in names for b in names if a != b and tuple(label_words[a]) == tuple(label_words[b])]


STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


def expected_bytes(n_examples: int, n_prompt: int, widths: Sequence[int], dtype: str = "float16") -> int:
    """Uncompressed activation bytes: every example, prompt position (+ Avg and Max) and neuron."""
    return n_examples * (n_prompt + 2) * sum(widths) * np.dtype(STORAGE_DTYPES[dtype]).itemsize
