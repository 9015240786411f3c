"""Tiny randomly initialised models built from a config, a word-level tokenizer, and a toy data mirror."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

# Tests never reach the hub: set before transformers reads it, so a miss fails at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

GOOD = ["good", "great", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "poor", "dull", "boring"]
NEUTRAL = ["movie", "film", "plot", "actor", "scene", "was", "the", "a", "it", "and"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
WORDS = SPECIALS + GOOD + BAD + NEUTRAL + ["Review", ":", "Sentiment", "negative", "positive", "neutral", "\n"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(dict.fromkeys(WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


def tiny_model(architecture: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=5,
            eos_token_id=6,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
    elif architecture == "gemma3":  # its embedding multiplies by sqrt(hidden) in its forward
        config = Gemma3TextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=128,
            sliding_window=8,
            pad_token_id=0,
            bos_token_id=5,
            eos_token_id=6,
        )
        model = Gemma3ForCausalLM(config)
    elif architecture == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            pad_token_id=0,
            bos_token_id=5,
            eos_token_id=6,
        )
        model = GPT2LMHeadModel(config)
    elif architecture == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=40,
            max_position_embeddings=128,
            pad_token_id=0,
            initializer_range=0.2,
        )
        model = BertForMaskedLM(config)
    elif architecture == "roberta":
        config = RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=40,
            max_position_embeddings=130,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            initializer_range=0.2,
        )
        model = RobertaForMaskedLM(config)
    else:
        raise ValueError(architecture)
    return model.eval()


def save_tiny_model(folder: Path, architecture: str, seed: int = 0) -> Path:
    tokenizer = word_tokenizer()
    model = tiny_model(architecture, len(tokenizer), seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toy_reviews(n: int, seed: int, n_classes: int = 2) -> pd.DataFrame:
    """Sentences whose label is set by their sentiment words (class 1 = neutral when 3 classes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(n_classes))
        polar = {0: BAD, n_classes - 1: GOOD}.get(label, NEUTRAL)
        words = list(rng.choice(NEUTRAL, rng.integers(1, 6))) + list(rng.choice(polar, 2))
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def write_mirror(root: Path) -> Path:
    """A data mirror in the hub's layout: toy/{train,validation}.parquet and toy3 with three labels."""
    for name, classes in (("toy", 2), ("toy3", 3)):
        (root / name).mkdir(parents=True, exist_ok=True)
        toy_reviews(120, 1, classes).to_parquet(root / name / "train.parquet")
        toy_reviews(40, 2, classes).to_parquet(root / name / "validation.parquet")
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with more slow tests (whole workflow runs, the real model) first, each kept whole: `make test` runs
    them with `pytest -n 2 --dist loadfile --no-loadscope-reorder`, so the longest starts at once, not last."""
    slow = Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


# A stage's task params as Task.params gives a rule (tests/test_controls.py, tests/test_word_selectivity.py).
TOY_TASK_PARAMS = {
    "name": "toy",
    "dataset": "toy",
    "subset": None,
    "train_split": "train",
    "test_split": "validation",
    "fallback_train_split": None,
    "label_column": "label",
    "text_fields": ["sentence"],
    "template": "Review : {sentence}",
    "labels": [0, 1],
    "label_words": [" negative", " positive"],
    "subtask_name": [],
    "subtask_positive": [],
    "subtask_negative": [],
}


class Named(list):
    """A list whose named items are also attributes and keys, as Snakemake's input, output and params."""

    def __init__(self, *items, **named) -> None:
        super().__init__([*items, *named.values()])
        self._named = named
        self.__dict__.update(named)

    def __getitem__(self, key):
        return self._named[key] if isinstance(key, str) else super().__getitem__(key)

    def keys(self):
        return self._named.keys()

    def items(self):
        return self._named.items()


def fake_job(input=(), output=(), params=None, wildcards=None, log=(), threads=1):
    """What a stage reads of a Snakemake job, for calling a stage without Snakemake."""
    from types import SimpleNamespace

    def named(value):
        return Named(**value) if isinstance(value, dict) else Named(*value)

    return SimpleNamespace(
        input=named(input),
        output=named(output),
        params=named(params or {}),
        wildcards=SimpleNamespace(**(wildcards or {})),
        log=named(log),
        threads=threads,
    )


def write_activation_run(run: Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """A one-layer activation folder in the dump's layout, from split -> (prompt (N, l, D), labels, predictions).

    Baselines are 0 everywhere and the input Avg/Max rows zeros; loss and confidence are random.
    """
    from skill_neurons.activations import layer_table

    examples = []
    for split, (prompt, labels, predictions) in splits.items():
        n, n_prompt, width = prompt.shape
        zeros = torch.zeros(n, width)
        table = layer_table(torch.tensor(prompt, dtype=torch.float32), zeros, zeros, np.arange(n), np.float32)
        (run / split / "layer=00").mkdir(parents=True)
        pq.write_table(table, run / split / "layer=00" / "part-0.parquet")
        rng = np.random.default_rng(len(split))
        examples.append(
            pd.DataFrame(
                {
                    "split": split,
                    "example": np.arange(n),
                    "label": labels,
                    "prediction": predictions,
                    "loss": rng.random(n),
                    "confidence": 0.5 + rng.random(n) / 2,
                }
            )
        )
    pd.concat(examples, ignore_index=True).to_parquet(run / "examples.parquet")
    kinds = [("prompt", position) for position in range(n_prompt)] + [("input_avg", -1), ("input_max", -1)]
    baseline = pd.DataFrame(
        [
            {"layer": 0, "kind": kind, "position": position, "activation": np.zeros(width, np.float32)}
            for kind, position in kinds
        ]
    )
    baseline.to_parquet(run / "baseline.parquet")
    (run / "meta.json").write_text(json.dumps({"n_prompt": n_prompt, "widths": [width], "dtype": "float32"}))
    return run
