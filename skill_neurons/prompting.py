"""Soft prompts on a frozen LM: inputs, label scores, and the activations at prompt and input tokens.

Masked LM (Wang et al.): ``[CLS] p_1..p_l [MASK] text [SEP]``, label words scored at ``[MASK]``.
Causal LM (Zhao et al.): ``text p_1..p_l``, label words scored as the next token after ``p_l``.
The causal input never depends on the prompt, so its keys/values are computed once without
gradient and the prompt runs on top of that cache: the same logits, a third of the work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .architecture import ffn_output_projections, model_kind
from .batches import Batch
from .data import Task
from .devices import autocast_dtype, pick_device
from .models import load_model, next_token_scores, set_threads
from .neurons import on_neurons
from .settings import Prompting

log = logging.getLogger(__name__)


# How a label word of several tokens is scored: refused ("single"), or by its first token ("first", opt-in).
LABEL_WORD_TOKENS = ("single", "first")


class LabelWordError(ValueError):
    """A verbalizer that cannot score its labels as configured."""


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


def text_mean_and_max(activation: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's mean and max over the text tokens, in fp32: activation (B, T, D), text (B, T) a bool mask.

    One fp32 copy, its sums by a batched matmul, and its max after adding -inf outside the text in place: on a
    bf16 activation (SmolLM2, batch 32 x 62 tokens) 0.65 ms against 3.67 for elementwise reductions, whose bf16
    kernels are slow; the broadcast add took a ninth of a masked_fill_ with the same broadcast mask. Values
    outside the text must be finite (a model's are): an inf or NaN there would spoil the sums and the max.
    A row without text has mean 0 and max -inf.
    """
    values = activation.to(torch.float32, copy=True)
    with torch.autocast(values.device.type, enabled=False):  # a hook runs inside the forward's autocast
        sums = torch.bmm(text.unsqueeze(1).to(values.dtype), values).squeeze(1)
    mean = sums / text.sum(1, keepdim=True).clamp(min=1)
    outside = torch.zeros(*text.shape, 1, dtype=values.dtype, device=values.device)
    outside.masked_fill_(~text.unsqueeze(-1), float("-inf"))
    return mean, values.add_(outside).amax(1)


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
        label_word_tokens: str = "single",
    ) -> None:
        if label_word_tokens not in LABEL_WORD_TOKENS:
            raise ValueError(f"label_word_tokens {label_word_tokens!r}: use one of {', '.join(LABEL_WORD_TOKENS)}")
        self.label_word_tokens = label_word_tokens
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
        self._phase = "input"  # which forward the neuron hooks see: the text ("input"), the prompt, or a completion's
        self._prompt_start = 0  # a completion batch's first prompt column
        self.label_ids = torch.tensor([self._label_token(w) for w in label_words], device=self.device)
        if len(set(self.label_ids.tolist())) != len(label_words):
            raise LabelWordError(f"label words {list(label_words)} share their first token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.kind == "mlm" and tokenizer.mask_token_id is None:
            raise ValueError("masked-LM prompting needs a tokenizer with a mask token")

    def with_model(self, model: PreTrainedModel) -> PromptedLM:
        """The same prompting (template, verbalizer, prompt length, precision) on another model, e.g. a pruned one."""
        return self._copy(model=model)

    def with_prompt_length(self, n_prompt: int) -> PromptedLM:
        """The same model and prompting read through a prompt of `n_prompt` vectors (a hard prompt's tokens)."""
        return self if n_prompt == self.n_prompt else self._copy(n_prompt=n_prompt)

    def _copy(self, model: PreTrainedModel | None = None, n_prompt: int | None = None) -> PromptedLM:
        return PromptedLM(
            self.model if model is None else model,
            self.tokenizer,
            self.template,
            self.label_words,
            self.n_prompt if n_prompt is None else n_prompt,
            self.max_field_tokens,
            self.precision,
            self.label_word_tokens,
        )

    @torch.no_grad()
    def embed(self, token_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(n, hidden): the model's input vectors of tokens, through its embedding's own forward.

        Not rows of the embedding matrix: Gemma-family embeddings multiply by sqrt(hidden) in their forward,
        and a prompt fed as `inputs_embeds` must be on the scale of the text's vectors.
        """
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device)
        return self.model.get_input_embeddings()(ids).detach().cpu().clone()

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    def _label_token(self, word: str) -> int:
        if (
            self.kind == "mlm"
            and not getattr(self.tokenizer, "add_prefix_space", False)
            and "Ġ"
            not in "".join(
                self.tokenizer.convert_ids_to_tokens(self.tokenizer(" a", add_special_tokens=False).input_ids)
            )
        ):
            word = word.strip()  # WordPiece vocabularies have no leading-space tokens
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise LabelWordError(f"label word {word!r} has no tokens")
        if len(ids) > 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            if self.label_word_tokens == "single":
                raise LabelWordError(
                    f"label word {word!r} is {len(ids)} tokens {pieces} and a verbalizer scores one: choose a"
                    " one-token word, or set the task's label_word_tokens: first to score its first token"
                )
            log.warning(
                "label word %r is %d tokens %s; scoring its first (label_word_tokens: first)", word, len(ids), pieces
            )
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
            token_ids = [self.tokenizer(t).input_ids for t in texts]
        else:
            token_ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        self._check_lengths(token_ids, frame)
        return token_ids

    def text_budget(self) -> int | None:
        """Most text tokens an input may hold beside the prompt; None where the model sets no limit."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not limit:
            return None
        if self.kind == "causal":
            return limit - self.n_prompt
        return min(limit, 512) - self.n_prompt - 5  # [CLS], [MASK], [SEP], and RoBERTa's two padding positions

    def _check_lengths(self, token_ids: Sequence[Sequence[int]], frame: pd.DataFrame) -> None:
        """A causal input longer than the model's positions is refused; a masked LM's text is cut to fit (logged)."""
        budget = self.text_budget()
        too_long = [i for i, ids in enumerate(token_ids) if budget is not None and len(ids) > budget]
        if not too_long:
            return
        longest = max(too_long, key=lambda i: len(token_ids[i]))
        example = frame["example"].iloc[longest] if "example" in frame else longest
        what = (
            f"{len(too_long)} of {len(token_ids)} examples do not fit the model's positions beside the"
            f" {self.n_prompt}-token prompt (example {example}: {len(token_ids[longest])} tokens, at most {budget})"
        )
        if self.kind == "causal":
            raise ValueError(f"{what}; cut each text field with data.max_field_tokens")
        log.warning("%s: their text is cut to fit (data.max_field_tokens cuts each field before)", what)

    def collate(self, token_ids: Sequence[Sequence[int]], labels: np.ndarray, examples: np.ndarray) -> Batch:
        """Pad a batch: left for causal LMs (the last position is the prompt's end), right for MLMs."""
        if self.kind == "mlm":
            tok = self.tokenizer
            cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
            sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
            budget = self.text_budget() or 512 - self.n_prompt - 5
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

    def precision_context(self) -> contextlib.AbstractContextManager:
        """The configured precision (prompt.precision) for a forward: bf16 autocast, or nothing for fp32."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def label_logits(self, prompt: torch.Tensor, batch: Batch, one_forward: bool = False) -> torch.Tensor:
        """Scores (B, C) of the label words at the verbalizer position.

        `one_forward`: a causal LM runs text and prompt in one forward, no stored keys/values, so that every
        token of an example passes the neuron hooks in one call (a masked LM always does).
        """
        with self.precision_context():
            if self.kind == "mlm":
                return self._mlm_logits(prompt, batch)
            if one_forward:
                return self.full_causal_logits(prompt, batch)
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
        ).cache

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
            scores = next_token_scores(
                self.model,
                self.label_ids,
                inputs_embeds=prompt.expand(size, -1, -1),
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
            )
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
        return at_least_fp32(
            next_token_scores(
                self.model, self.label_ids, inputs_embeds=embeds, attention_mask=mask, position_ids=positions
            )
        )

    @torch.no_grad()
    def encode_text(self, batch: Batch) -> tuple[object, list[torch.Tensor], list[torch.Tensor]]:
        """Causal LMs: the text's keys/values and every neuron's mean and max over the text tokens."""
        n_layers = len(self.projections)
        input_avg: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
        input_max: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]

        def record(layer: int, activation: torch.Tensor) -> None:
            input_avg[layer], input_max[layer] = text_mean_and_max(activation, batch.text_mask)

        with self.precision_context(), on_neurons(self.projections, record):
            cache = self._text_cache(batch)
        return cache, input_avg, input_max

    @torch.no_grad()
    def capture(self, prompt: torch.Tensor, batch: Batch) -> Captured:
        """Label logits plus every neuron's activation at the prompt positions and over the input."""
        n_layers = len(self.projections)
        captured = Captured(None, [None] * n_layers, [None] * n_layers, [None] * n_layers)  # type: ignore[arg-type]
        one_forward = self.kind == "mlm" or batch.input_avg is None
        if not one_forward:  # a causal LM with its text stored: the prompt's pass alone
            captured.input_avg, captured.input_max = list(batch.input_avg), list(batch.input_max)

            def record(layer: int, activation: torch.Tensor) -> None:
                captured.prompt[layer] = activation.float()
        else:
            # Text and prompt in one forward ([CLS] prompt text for a masked LM, text prompt for a causal one):
            # without stored text, one pass instead of the text's then the prompt's (benchmarks/throughput.py,
            # bf16: a dump at 0.75 of a bare forward's examples/s, was 0.70-0.71).
            prompt_columns = slice(1, 1 + self.n_prompt) if self.kind == "mlm" else slice(-self.n_prompt, None)
            text = batch.text_mask
            if self.kind == "causal":
                text = torch.cat([text, text.new_zeros(len(text), self.n_prompt)], 1)

            def record(layer: int, activation: torch.Tensor) -> None:
                captured.prompt[layer] = activation[:, prompt_columns].float()
                captured.input_avg[layer], captured.input_max[layer] = text_mean_and_max(activation, text)

        with on_neurons(self.projections, record):
            captured.logits = self.label_logits(prompt, batch, one_forward=one_forward)
        return captured

    def prompt_positions(self) -> slice | None:
        """Where the soft prompt sits in the activations a neuron hook sees now; None: not in this forward."""
        if self.kind == "mlm":
            return slice(1, 1 + self.n_prompt)
        if self._phase == "completion":
            return slice(self._prompt_start, self._prompt_start + self.n_prompt)
        return slice(None) if self._phase == "prompt" else None

    def completion_forward(self, prompt_start: int) -> None:
        """The next forward is a completion batch's (instruction, prompt, completion in one), its prompt at
        column `prompt_start` on: `prompt_positions` says so to a perturbation hook."""
        self._phase, self._prompt_start = "completion", prompt_start

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Guard: training touches no model parameter."""
        if any(p.requires_grad for p in self.model.parameters()):
            raise RuntimeError("model parameters must be frozen before prompt tuning")
        yield


def load_prompted(
    model_dir: str, task: Task, prompting: Prompting, threads: int, precision: str | None = None
) -> PromptedLM:
    """The model of `model_dir` on its device, read through the task's template and label words."""
    set_threads(threads)
    model, tokenizer = load_model(model_dir, pick_device(prompting.device))
    try:
        lm = PromptedLM(
            model,
            tokenizer,
            task.template,
            task.label_words,
            prompting.n_tokens,
            prompting.max_field_tokens,
            precision or prompting.precision,
            task.label_word_tokens,
        )
    except LabelWordError as error:
        raise LabelWordError(f"config key tasks.{task.name}.label_words: {error} ({model_dir})") from None
    log.info("model %s (%s) on %s, autocast %s", model_dir, lm.kind, lm.device, lm.autocast)
    return lm
