"""Controls of Wang et al.'s Table 3: skill neurons found without a tuned prompt or without pre-training.

'random_prompt' reads the pre-trained model through the untuned initial prompt of the tuning seed;
'hard_prompt' through the embeddings of a human-written prompt (the task's `hard_prompt`);
'random_model' through a random prompt on a model of the same architecture with random weights.
The top-1 neuron of each is found and scored exactly as for the tuned prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from .io import atomic_path, folder_bytes, require_free_space
from .models import build_model
from .prompting import PromptedLM

RANDOM_MODEL_SALT = 7319


def save_random_model(model_dir: str | Path, out_dir: str | Path, seed: int) -> None:
    """The architecture (a pruned one's FFN widths too) and tokenizer of `model_dir`, new weights from `seed`."""
    require_free_space(out_dir, folder_bytes(model_dir), "a random-weight copy of the model")
    # Salted: a model built under a bare manual_seed(seed) (as test models are) must not come out again.
    torch.manual_seed(int(np.random.SeedSequence([seed, RANDOM_MODEL_SALT]).generate_state(1)[0]))
    model = build_model(AutoConfig.from_pretrained(model_dir))
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp)


def hard_prompt_embeddings(lm: PromptedLM, text: str) -> torch.Tensor:
    """(n, hidden): the input vectors of the tokens of a human-written prompt (as the model embeds them)."""
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"hard prompt {text!r} has no tokens")
    return lm.embed(ids)
