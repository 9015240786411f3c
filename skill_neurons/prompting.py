"""Soft prompts on a frozen LM: inputs, label scores, and the activations at prompt and input tokens.

Masked LM (Wang et al.): ``[CLS] p_1..p_l [MASK] text [SEP]``, label words scored at ``[MASK]``.
Causal LM (Zhao et al.): ``text p_1..p_l``, label words scored as the next token after ``p_l``.
The causal input never depends on the prompt, so its keys/values are computed once without
gradient and the prompt runs on top of that cache: the same logits, a third of the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .io import atomic_path
from .models import ffn_output_projections, model_kind, next_token_scores
from .neurons import on_neurons

if TYPE_CHECKING:
    from .text_cache import SplitText

log = logging.getLogger(__name__)


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


@dataclass
class Captured:
    """One batch seen through a prompt: label logits and per-layer neuron activations."""

    logits: torch.Tensor  # (B, C)
    prompt: list[torch.Tensor]  # per layer (B, l, D): activation at each prompt position
    input_avg: list[torch.Tensor]  # per layer (B, D): mean over input tokens
    input_max: list[torch.Tensor]  # per layer (B, D): max over input tokens


def at_least_fp32(scores: torch.Tensor) -> torch.Tensor:
    """Label scores in fp32, or in the model's own precision when that is higher (fp64 in gradient checks)."""
    return scores if scores.dtype == torch.float64 else scores.float()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware does it fast (CUDA, CPUs with AMX), else fp32 ('auto')."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    has_amx = "amx_bf16" in _cpu_flags()
    return torch.bfloat16 if has_amx else None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return ""


class PromptedLM:
    """A frozen LM read through a soft prompt of `n_prompt` vectors and a verbalizer."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: str,
        label_words: Sequence[str],
        n_prompt: int,
        max_field_tokens: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.n_prompt = n_prompt
        self.max_field_tokens = max_field_tokens
        self.label_words = tuple(label_words)
        self.precision = precision
        self.kind = model_kind(model.config)
        self.device = next(model.parameters()).device
        self.autocast = autocast_dtype(precision, self.device)
        self.projections = ffn_output_projections(model)
        self._phase = "input"  # which forward the neuron hooks see: the text ("input") or the prompt
        self.label_ids = torch.tensor([self._label_token(w) for w in label_words], device=self.device)
        if len(set(self.label_ids.tolist())) != len(label_words):
            raise ValueError(f"label words {list(label_words)} share their first token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.kind == "mlm" and tokenizer.mask_token_id is None:
            raise ValueError("masked-LM prompting needs a tokenizer with a mask token")

    def with_model(self, model: PreTrainedModel) -> PromptedLM:
        """The same prompting (template, verbalizer, prompt length, precision) on another model, e.g. a pruned one."""
        return PromptedLM(model, self.tokenizer, self.template, self.label_words, self.n_prompt,
                          self.max_field_tokens, self.precision)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    def _label_token(self, word: str) -> int:
        if self.kind == "mlm" and not getattr(self.tokenizer, "add_prefix_space", False) and "Ġ" not in "".join(
            self.tokenizer.convert_ids_to_tokens(self.tokenizer(" a", add_special_tokens=False).input_ids)
        ):
            word = word.strip()  # WordPiece vocabularies have no leading-space tokens
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"label word {word!r} has no tokens")
        if len(ids) > 1:
            log.warning("label word %r is %d tokens; scoring its first", word, len(ids))
        return ids[0]

    # ----- inputs -------------------------------------------------------------------------

    def render(self, frame: pd.DataFrame, text_fields: Sequence[str]) -> list[str]:
        """Fill the template, each text field cut to `max_field_tokens` tokens."""
        columns = {f: [self._truncate(str(t)) for t in frame[f]] for f in text_fields}
        return [self.template.format(**{f: columns[f][i] for f in text_fields}) for i in range(len(frame))]

    def _truncate(self, text: str) -> str:
        if self.max_field_tokens is None:
            return text
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return text if len(ids) <= self.max_field_tokens else self.tokenizer.decode(ids[: self.max_field_tokens])

    def tokenize(self, frame: pd.DataFrame, text_fields: Sequence[str]) -> list[list[int]]:
        texts = self.render(frame, text_fields)
        if self.kind == "causal":
            return [self.tokenizer(t).input_ids for t in texts]
        return [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]

    def collate(self, token_ids: Sequence[Sequence[int]], labels: np.ndarray, examples: np.ndarray) -> Batch:
        """Pad a batch: left for causal LMs (the last position is the prompt's end), right for MLMs."""
        if self.kind == "mlm":
            tok = self.tokenizer
            cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
            sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
            # [CLS], [MASK], [SEP], and RoBERTa's two position ids reserved for padding
            budget = min(getattr(self.model.config, "max_position_embeddings", 512) or 512, 512) - self.n_prompt - 5
            rows = [[cls, *[self.pad_id] * self.n_prompt, tok.mask_token_id, *ids[:budget], sep] for ids in token_ids]
            first_text = self.n_prompt + 2
            text_spans = [(first_text, len(r) - 1) for r in rows]
        else:
            rows = [list(ids) for ids in token_ids]
            text_spans = [(0, len(r)) for r in rows]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        text = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, (row, (start, stop)) in enumerate(zip(rows, text_spans)):
            offset = length - len(row) if self.kind == "causal" else 0
            ids[i, offset : offset + len(row)] = torch.tensor(row)
            mask[i, offset : offset + len(row)] = 1
            text[i, offset + start : offset + stop] = True
        return Batch(
            ids.to(self.device),
            mask.to(self.device),
            text.to(self.device),
            torch.as_tensor(labels, dtype=torch.long, device=self.device),
            torch.as_tensor(examples, dtype=torch.long, device=self.device),
        )

    def batches(self, frame: pd.DataFrame, text_fields: Sequence[str], batch_size: int) -> list[Batch]:
        """Pre-tokenised batches of a whole split in a fixed order, grouped by length to save padding."""
        token_ids = self.tokenize(frame, text_fields)
        order = np.argsort([len(t) for t in token_ids], kind="stable")
        labels, examples = frame["label"].to_numpy(), frame["example"].to_numpy()
        return [
            self.collate([token_ids[i] for i in chunk], labels[chunk], examples[chunk])
            for chunk in np.array_split(order, max(1, -(-len(order) // batch_size)))
        ]

    # ----- forward ------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def label_logits(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scores (B, C) of the label words at the verbalizer position."""
        with self._autocast():
            if self.kind == "mlm":
                return self._mlm_logits(prompt, batch)
            return self._causal_logits(prompt, batch)

    def _mlm_logits(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        embeds = self.model.get_input_embeddings()(batch.input_ids)
        n = self.n_prompt
        embeds = torch.cat([embeds[:, :1], prompt.to(embeds.dtype).expand(len(embeds), -1, -1), embeds[:, 1 + n :]], 1)
        hidden = self.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
        return at_least_fp32(hidden[:, n + 1, self.label_ids])

    @torch.no_grad()
    def _text_cache(self, batch: Batch) -> object:
        self._phase = "input"
        positions = (batch.attention_mask.cumsum(1) - 1).clamp(min=0)
        return self.model.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions, use_cache=True
        ).past_key_values

    def keep_text_cache(self, batches: Sequence[Batch]) -> Sequence[Batch]:
        """Compute the text keys/values of batches evaluated again and again (dev during tuning) once."""
        if self.kind == "causal":
            for batch in batches:
                batch.prefix_cache, batch.input_avg, batch.input_max = self.encode_text(batch)
        return batches

    def _causal_logits(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        cache = batch.prefix_cache if batch.prefix_cache is not None else self._text_cache(batch)
        self._phase = "prompt"
        size = len(batch.input_ids)
        mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(size, self.n_prompt)], 1)
        positions = batch.attention_mask.sum(1, keepdim=True) + torch.arange(self.n_prompt, device=self.device)
        try:
            scores = next_token_scores(self.model, self.label_ids, inputs_embeds=prompt.expand(size, -1, -1),
                                       attention_mask=mask, position_ids=positions, past_key_values=cache)
        finally:
            if batch.prefix_cache is not None:
                batch.prefix_cache.crop(-self.n_prompt)  # the kept cache holds the text only
        return at_least_fp32(scores)

    def full_causal_logits(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The causal scores from one forward over text and prompt: the reference for the cached path."""
        size = len(batch.input_ids)
        embeds = torch.cat([self.model.get_input_embeddings()(batch.input_ids), prompt.expand(size, -1, -1)], 1)
        mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(size, self.n_prompt)], 1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return at_least_fp32(next_token_scores(self.model, self.label_ids, inputs_embeds=embeds, attention_mask=mask,
                                               position_ids=positions))

    @torch.no_grad()
    def encode_text(self, batch: Batch) -> tuple[object, list[torch.Tensor], list[torch.Tensor]]:
        """Causal LMs: the text's keys/values and every neuron's mean and max over the text tokens."""
        n_layers = len(self.projections)
        input_avg: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
        input_max: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
        text = batch.text_mask.unsqueeze(-1)
        n_text = text.sum(1).clamp(min=1)

        def record(layer: int, activation: torch.Tensor) -> None:
            activation = activation.float()
            input_avg[layer] = (activation * text).sum(1) / n_text
            input_max[layer] = activation.masked_fill(~text, float("-inf")).amax(1)

        with self._autocast(), on_neurons(self.projections, record):
            cache = self._text_cache(batch)
        return cache, input_avg, input_max

    @torch.no_grad()
    def capture(self, prompt: torch.Tensor, batch: Batch) -> Captured:
        """Label logits plus every neuron's activation at the prompt positions and over the input."""
        n_layers = len(self.projections)
        captured = Captured(None, [None] * n_layers, [None] * n_layers, [None] * n_layers)  # type: ignore[arg-type]
        if self.kind == "causal":
            if batch.input_avg is None:  # no stored text: run it here, for this batch only
                cache, input_avg, input_max = self.encode_text(batch)
                batch = dataclasses.replace(batch, prefix_cache=cache, input_avg=input_avg, input_max=input_max)
            captured.input_avg, captured.input_max = list(batch.input_avg), list(batch.input_max)

            def record(layer: int, activation: torch.Tensor) -> None:
                captured.prompt[layer] = activation.float()
        else:
            text = batch.text_mask.unsqueeze(-1)
            n_text = text.sum(1).clamp(min=1)

            def record(layer: int, activation: torch.Tensor) -> None:
                activation = activation.float()
                captured.prompt[layer] = activation[:, 1 : 1 + self.n_prompt]
                captured.input_avg[layer] = (activation * text).sum(1) / n_text
                captured.input_max[layer] = activation.masked_fill(~text, float("-inf")).amax(1)

        with on_neurons(self.projections, record):
            captured.logits = self.label_logits(prompt, batch)
        return captured

    def prompt_positions(self) -> slice | None:
        """Where the soft prompt sits in the activations a neuron hook sees now; None: not in this forward."""
        if self.kind == "mlm":
            return slice(1, 1 + self.n_prompt)
        return slice(None) if self._phase == "prompt" else None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Guard: training touches no model parameter."""
        if any(p.requires_grad for p in self.model.parameters()):
            raise RuntimeError("model parameters must be frozen before prompt tuning")
        yield


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


def init_prompt(lm: PromptedLM, init: str, std: float, seed: int) -> torch.Tensor:
    """A soft prompt from a generator seeded by `seed` alone.

    'normal': N(0, std^2) entries (Wang et al.). 'vocab': embeddings of tokens drawn from the
    `COMMON_TOKENS` lowest ids, special tokens left out (Lester et al. 2021 sample the 5,000 most
    common tokens; BPE vocabularies number tokens in merge order, so low ids are common ones). It keeps
    a small decoder on its input distribution and converges sooner.
    """
    generator = torch.Generator().manual_seed(seed)
    if init == "normal":
        return torch.randn(lm.n_prompt, lm.hidden_size, generator=generator) * std
    if init == "vocab":
        embeddings = lm.model.get_input_embeddings().weight.detach().cpu()
        special = set(lm.tokenizer.all_special_ids)
        candidates = torch.tensor([i for i in range(min(COMMON_TOKENS, len(embeddings))) if i not in special])
        tokens = candidates[torch.randint(0, len(candidates), (lm.n_prompt,), generator=generator)]
        return embeddings[tokens].clone()
    raise ValueError(f"unknown prompt init {init!r}; use 'normal' or 'vocab'")


@torch.no_grad()
def evaluate(lm: PromptedLM, prompt: torch.Tensor, batches: Iterable[Batch]) -> float:
    correct = total = 0
    for batch in batches:
        predicted = lm.label_logits(prompt, batch).argmax(-1)
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
    """The saved tuning state if it exists and was made with the same settings, else None."""
    if path is None or not Path(path).exists():
        return None
    state = torch.load(path, weights_only=True)
    if state.get("settings") != settings:
        log.warning("checkpoint %s was made with other settings; starting afresh", path)
        return None
    return state


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
) -> TuningResult:
    """Adam on the prompt only; keep the best-dev prompt; stop after `patience` evaluations without gain.

    With `checkpoint`, the whole state (prompt, Adam moments, data order and sampler, best prompt,
    curve) is saved after every dev evaluation, and a rerun continues from it to the same prompt.
    `start_prompt` replaces the initialisation: re-tuning a prompt on a pruned model starts from the dense one.
    `train_text` holds the train split's stored text (causal LMs): each step then runs only the prompt.
    """
    settings = {"seed": seed, "lr": lr, "batch_size": batch_size, "max_steps": max_steps, "eval_every": eval_every,
                "patience": patience, "init": init, "init_std": init_std, "weight_decay": weight_decay,
                "n_train": len(train), "n_prompt": lm.n_prompt, "start_prompt": start_prompt is not None}
    rng = np.random.default_rng(seed)
    prompt = (init_prompt(lm, init, init_std, seed) if start_prompt is None else start_prompt.detach().cpu().clone())
    prompt = prompt.to(lm.device).requires_grad_(True)
    optimizer = torch.optim.Adam([prompt], lr=lr, weight_decay=weight_decay)
    token_ids = lm.tokenize(train, text_fields)
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
                rows.append({"step": step, "train_loss": float(np.mean(losses)), "dev_accuracy": accuracy,
                             "seconds": time.perf_counter() - start})
                log.info("step %d: train loss %.4f, dev accuracy %.4f", step, np.mean(losses), accuracy)
                losses = []
                if accuracy > best[0]:
                    best, stale = (accuracy, step, prompt.detach().clone()), 0
                else:
                    stale += 1
                if checkpoint is not None:
                    save_checkpoint(checkpoint, {
                        "settings": settings, "step": step, "prompt": prompt.detach().cpu(),
                        "optimizer": optimizer.state_dict(), "rng": json.dumps(rng.bit_generator.state),
                        "order": torch.from_numpy(order.copy()), "best_accuracy": best[0], "best_step": best[1],
                        "best_prompt": best[2].cpu(), "curve": rows, "stale": stale,
                        "seconds": time.perf_counter() - start})
    return TuningResult(best[2].cpu(), prompt.detach().cpu(), pd.DataFrame(rows), best[0], best[1], step,
                        resumed_from)
