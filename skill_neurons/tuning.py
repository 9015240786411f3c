"""Prompt tuning: the initial prompt, evaluation, and Adam on the prompt alone with resumable checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .batches import Batch
from .data import Task
from .io import atomic_path
from .prompting import PromptedLM
from .text_cache import SplitText
from .vocabulary import COMMON_TOKENS, common_tokens

log = logging.getLogger(__name__)


def init_prompt(
    lm: PromptedLM, init: str, std: float, seed: int, text_tokens: Sequence[Sequence[int]] | None = None
) -> torch.Tensor:
    """A soft prompt from a generator seeded by `seed` alone.

    'normal': N(0, std^2) entries (Wang et al.). 'vocab': the input vectors of tokens drawn from the
    `COMMON_TOKENS` most common tokens (`vocabulary.common_tokens`: a BPE's merge rank, else the most frequent
    of `text_tokens`, the task's training text; Lester et al. 2021). It keeps a small decoder on its input
    distribution and converges sooner.
    """
    generator = torch.Generator().manual_seed(seed)
    if init == "normal":
        return torch.randn(lm.n_prompt, lm.hidden_size, generator=generator) * std
    if init == "vocab":
        if text_tokens is None:
            raise ValueError("prompt init 'vocab' draws from the task's training text: pass its token ids")
        candidates = torch.tensor(common_tokens(lm.tokenizer, text_tokens, COMMON_TOKENS))
        if len(candidates) == 0:
            raise ValueError("prompt init 'vocab': the training text has no text tokens to draw from")
        return lm.embed(candidates[torch.randint(0, len(candidates), (lm.n_prompt,), generator=generator)])
    raise ValueError(f"unknown prompt init {init!r}; use 'normal' or 'vocab'")


@torch.no_grad()
def evaluate(lm: PromptedLM, prompt: torch.Tensor, batches: Iterable[Batch], one_forward: bool = False) -> float:
    """Accuracy of the label-word scores; `one_forward` as in `PromptedLM.label_logits`."""
    correct = total = 0
    for batch in batches:
        predicted = lm.label_logits(prompt, batch, one_forward).argmax(-1)
        correct += int((predicted == batch.labels).sum())
        total += len(batch.labels)
    return correct / total


@dataclass
class TuningResult:
    prompt: torch.Tensor  # the best prompt on dev
    last_prompt: torch.Tensor  # the prompt after the last step
    curve: pd.DataFrame
    dev_accuracy: float
    best_step: int
    steps: int
    resumed_from: int = 0  # the step a checkpoint restored, 0 for a fresh start


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write the tuning state atomically: a kill during the write keeps the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path | None, settings: dict) -> dict | None:
    """The saved tuning state if it exists and was made with the same settings, else None (the log says why)."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, weights_only=True)
    saved = state.get("settings") or {}
    if saved != settings:
        changed = sorted(key for key in settings.keys() | saved.keys() if saved.get(key) != settings.get(key))
        log.warning("checkpoint %s was made with another %s; starting afresh", path, ", ".join(changed))
        return None
    return state


def file_digest(paths: Sequence[str | Path]) -> str:
    """sha256 over the contents of `paths` (folders: every file in them, by relative name), in the given order."""
    digest = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            with open(file, "rb") as stream:
                digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def run_fingerprint(model_dir: str | Path, task: Task, split_files: Sequence[str | Path]) -> dict[str, str]:
    """What defines a tuning run besides its settings: the model (config, tokenizer and weights), the task's
    definition (template, fields, labels, label words, subtasks) and its data (the split files)."""
    definition = json.dumps(dataclasses.asdict(task), sort_keys=True, default=list)
    return {
        "model": file_digest([model_dir]),
        "task": hashlib.sha256(definition.encode()).hexdigest(),
        "data": file_digest(split_files),
    }


def tune_prompt(
    lm: PromptedLM,
    train: pd.DataFrame,
    dev_batches: Sequence[Batch],
    text_fields: Sequence[str],
    seed: int,
    lr: float,
    batch_size: int,
    max_steps: int,
    eval_every: int,
    patience: int,
    init_std: float,
    init: str = "normal",
    weight_decay: float = 0.0,
    checkpoint: str | Path | None = None,
    start_prompt: torch.Tensor | None = None,
    train_text: SplitText | None = None,
    fingerprint: dict[str, str] | None = None,
) -> TuningResult:
    """Adam on the prompt only; keep the best-dev prompt; stop after `patience` evaluations without gain.

    With `checkpoint`, the whole state (prompt, Adam moments, data order and sampler, best prompt,
    curve) is saved after every dev evaluation, and a rerun continues from it to the same prompt.
    `start_prompt` replaces the initialisation: re-tuning a prompt on a pruned model starts from the dense one.
    `train_text` holds the train split's stored text (causal LMs): each step then runs only the prompt.
    """
    settings = {
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "max_steps": max_steps,
        "eval_every": eval_every,
        "patience": patience,
        "init": init,
        "init_std": init_std,
        "weight_decay": weight_decay,
        "n_train": len(train),
        "n_prompt": lm.n_prompt,
        "start_prompt": start_prompt is not None,
        **(fingerprint or {}),  # run_fingerprint: a checkpoint of another model, task or data is not resumed
    }
    rng = np.random.default_rng(seed)
    token_ids = lm.tokenize(train, text_fields)
    if start_prompt is None:
        prompt = init_prompt(lm, init, init_std, seed, text_tokens=token_ids)
    else:
        prompt = start_prompt.detach().cpu().clone()
    prompt = prompt.to(lm.device).requires_grad_(True)
    optimizer = torch.optim.Adam([prompt], lr=lr, weight_decay=weight_decay)
    labels, examples = train["label"].to_numpy(), train["example"].to_numpy()
    state = load_checkpoint(checkpoint, settings)
    if state is None:
        best = (evaluate(lm, prompt, dev_batches), 0, prompt.detach().clone())
        rows = [{"step": 0, "train_loss": float("nan"), "dev_accuracy": best[0], "seconds": 0.0}]
        log.info("step 0: dev accuracy %.4f", best[0])
        stale, step, order, elapsed = 0, 0, np.empty(0, dtype=int), 0.0
    else:
        with torch.no_grad():
            prompt.copy_(state["prompt"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = json.loads(state["rng"])
        best = (state["best_accuracy"], state["best_step"], state["best_prompt"].to(lm.device))
        rows, stale, step, elapsed = state["curve"], state["stale"], state["step"], state["seconds"]
        order = state["order"].numpy()
        log.info("resuming from checkpoint %s at step %d", checkpoint, step)
    resumed_from = step
    start, losses = time.perf_counter() - elapsed, []
    with lm.frozen():
        while step < max_steps and stale < patience:
            if len(order) < batch_size:
                order = np.concatenate([order, rng.permutation(len(train))])
            chunk, order = order[:batch_size], order[batch_size:]
            batch = lm.collate([token_ids[i] for i in chunk], labels[chunk], examples[chunk])
            if train_text is not None:
                train_text.attach(batch)
            loss = F.cross_entropy(lm.label_logits(prompt, batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % eval_every == 0 or step == max_steps:
                accuracy = evaluate(lm, prompt, dev_batches)
                rows.append(
                    {
                        "step": step,
                        "train_loss": float(np.mean(losses)),
                        "dev_accuracy": accuracy,
                        "seconds": time.perf_counter() - start,
                    }
                )
                log.info("step %d: train loss %.4f, dev accuracy %.4f", step, np.mean(losses), accuracy)
                losses = []
                if accuracy > best[0]:
                    best, stale = (accuracy, step, prompt.detach().clone()), 0
                else:
                    stale += 1
                if checkpoint is not None:
                    save_checkpoint(
                        checkpoint,
                        {
                            "settings": settings,
                            "step": step,
                            "prompt": prompt.detach().cpu(),
                            "optimizer": optimizer.state_dict(),
                            "rng": json.dumps(rng.bit_generator.state),
                            "order": torch.from_numpy(order.copy()),
                            "best_accuracy": best[0],
                            "best_step": best[1],
                            "best_prompt": best[2].cpu(),
                            "curve": rows,
                            "stale": stale,
                            "seconds": time.perf_counter() - start,
                        },
                    )
    return TuningResult(best[2].cpu(), prompt.detach().cpu(), pd.DataFrame(rows), best[0], best[1], step, resumed_from)
