"""Generation tasks on a causal LM through a soft prompt: completion loss, multiple choice, prompt activations.

Zhao, Wang et al. (2025): each example is `[instruction] p_1..p_l [completion]`; the prompt follows the
instruction so that it attends to it, and the loss is the mean negative log-likelihood of the completion
tokens under teacher forcing. A batch pads the instruction on the left and the completion on the right,
so that the prompt takes the same columns in every row: it is put in by slicing, and its activations are
read at fixed columns. Position ids count real tokens only, so padding changes no row's numbers.

The functions take a causal `PromptedLM` for its model, tokenizer, prompt length and precision; its
template and label words are not used here (a generation task may give none: `label_words=()`).
A generation task's prompt is tuned with AdamW on the mean completion NLL, early-stopped on the dev loss
(`tune_generation_prompt`), and its neurons are dumped on the validation split (`dump_generation`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .activations import SplitWriter
from .generation import GenerationTask, in_example_order
from .io import atomic_path, write_json, write_parquet
from .neurons import on_neurons
from .plan import STORAGE_DTYPES
from .prompting import PromptedLM, at_least_fp32, text_mean_and_max
from .settings import GenerationTuning
from .tuning import init_prompt

log = logging.getLogger(__name__)


@dataclass
class CompletionBatch:
    """Rows `[pad.. instruction] [p_1..p_l] [completion ..pad]`, the prompt at columns `prompt_start` on."""

    input_ids: torch.Tensor  # (B, T) instruction and completion tokens; the prompt's columns hold the pad id
    attention_mask: torch.Tensor  # (B, T) 1 on instruction, prompt and completion, 0 on padding
    position_ids: torch.Tensor  # (B, T) 0 at each row's first real token, counting real tokens only
    instruction_mask: torch.Tensor  # (B, T) True on the instruction's tokens (the input Avg/Max)
    completion_ids: torch.Tensor  # (B, C) the completion's tokens, right-padded with the pad id
    completion_mask: torch.Tensor  # (B, C) True on real completion tokens
    prompt_start: int  # the column of p_1 in every row
    examples: torch.Tensor  # (B,) the example each row belongs to

    @property
    def n_completion_tokens(self) -> torch.Tensor:
        """(B,) the number of completion tokens of each row."""
        return self.completion_mask.sum(1)


@dataclass
class CompletionCapture:
    """One batch scored through a prompt: its completion loss and the neurons at the prompt positions."""

    loss: torch.Tensor  # (B,) mean NLL of the completion tokens
    n_tokens: torch.Tensor  # (B,) completion tokens per row
    prompt: list[torch.Tensor]  # per layer (B, l, D): activation at each prompt position
    input_avg: list[torch.Tensor]  # per layer (B, D): mean over the instruction's tokens
    input_max: list[torch.Tensor]  # per layer (B, D): max over the instruction's tokens

    @property
    def confidence(self) -> torch.Tensor:
        """(B,) the probability of the whole gold completion, exp(-n * loss)."""
        return completion_probability(self.loss, self.n_tokens)


def _require_causal(lm: PromptedLM) -> None:
    if lm.kind != "causal":
        raise ValueError(f"completions need a causal LM; {type(lm.model).__name__} is a masked LM")


def tokenize_instructions(lm: PromptedLM, instructions: Sequence[str]) -> list[list[int]]:
    """Token ids of each instruction with the tokenizer's special tokens (a BOS where it adds one)."""
    return [lm.tokenizer(text).input_ids for text in instructions]


def tokenize_completions(lm: PromptedLM, completions: Sequence[str]) -> list[list[int]]:
    """Token ids of each completion, without special tokens; write its leading space into the text."""
    token_ids = [lm.tokenizer(text, add_special_tokens=False).input_ids for text in completions]
    empty = [text for text, ids in zip(completions, token_ids) if not ids]
    if empty:
        raise ValueError(f"completion {empty[0]!r} has no tokens: its loss would be a mean over nothing")
    return token_ids


def _check_fits(
    lm: PromptedLM, instruction_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
) -> None:
    budget = lm.text_budget()
    if budget is None:
        return
    lengths = [len(i) + len(c) for i, c in zip(instruction_ids, completion_ids)]
    if max(lengths) > budget:
        longest = int(np.argmax(lengths))
        raise ValueError(
            f"{sum(n > budget for n in lengths)} of {len(lengths)} examples do not fit the model's positions"
            f" beside the {lm.n_prompt}-token prompt (row {longest}: {lengths[longest]} tokens, at most {budget})"
        )


def collate_completions(
    lm: PromptedLM,
    instruction_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    examples: Sequence[int] | None = None,
) -> CompletionBatch:
    """Pad a batch: instructions on the left up to the prompt, completions on the right after it."""
    _require_causal(lm)
    if len(instruction_ids) != len(completion_ids):
        raise ValueError(f"{len(instruction_ids)} instructions but {len(completion_ids)} completions")
    _check_fits(lm, instruction_ids, completion_ids)
    size, n_prompt = len(instruction_ids), lm.n_prompt
    prompt_start = max(len(ids) for ids in instruction_ids)
    completion_start = prompt_start + n_prompt
    width = max(len(ids) for ids in completion_ids)
    ids = torch.full((size, completion_start + width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    instruction = torch.zeros_like(ids, dtype=torch.bool)
    completion = torch.full((size, width), lm.pad_id, dtype=torch.long)
    completion_mask = torch.zeros_like(completion, dtype=torch.bool)
    for row, (before, after) in enumerate(zip(instruction_ids, completion_ids)):
        first = prompt_start - len(before)
        ids[row, first:prompt_start] = torch.tensor(before, dtype=torch.long)
        ids[row, completion_start : completion_start + len(after)] = torch.tensor(after, dtype=torch.long)
        mask[row, first : completion_start + len(after)] = 1
        instruction[row, first:prompt_start] = True
        completion[row, : len(after)] = torch.tensor(after, dtype=torch.long)
        completion_mask[row, : len(after)] = True
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    rows = torch.arange(size) if examples is None else torch.as_tensor(examples, dtype=torch.long)
    return CompletionBatch(
        *(t.to(lm.device) for t in (ids, mask, positions, instruction, completion, completion_mask)),
        prompt_start=prompt_start,
        examples=rows.to(lm.device),
    )


def completion_batches(
    lm: PromptedLM,
    instructions: Sequence[str],
    completions: Sequence[str],
    examples: Sequence[int],
    batch_size: int,
) -> list[CompletionBatch]:
    """Pre-tokenised batches of a whole split in a fixed order, grouped by instruction and completion length."""
    instruction_ids = tokenize_instructions(lm, instructions)
    completion_ids = tokenize_completions(lm, completions)
    order = sorted(range(len(instructions)), key=lambda i: (len(instruction_ids[i]), len(completion_ids[i])))
    examples = np.asarray(examples)
    return [
        collate_completions(
            lm, [instruction_ids[i] for i in chunk], [completion_ids[i] for i in chunk], examples[chunk]
        )
        for chunk in np.array_split(np.asarray(order), max(1, -(-len(order) // batch_size)))
    ]


def _completion_logits(lm: PromptedLM, prompt: torch.Tensor, batch: CompletionBatch) -> torch.Tensor:
    """(B, C, V): logits at the column before each completion token, the one that predicts it."""
    # The embedding's own forward, not its weight rows: Gemma scales its input vectors by sqrt(hidden).
    embeds = lm.model.get_input_embeddings()(batch.input_ids)
    start, stop = batch.prompt_start, batch.prompt_start + lm.n_prompt
    vectors = prompt.to(device=embeds.device, dtype=embeds.dtype).expand(len(embeds), -1, -1)
    embeds = torch.cat([embeds[:, :start], vectors, embeds[:, stop:]], 1)
    width = batch.completion_ids.shape[1]
    lm.completion_forward(start)
    # The head runs on the last C + 1 columns only (p_l and the completion); the last one predicts nothing.
    logits = lm.model(
        inputs_embeds=embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=width + 1,
        use_cache=False,
    ).logits
    return logits[:, :-1]


def completion_token_nll(lm: PromptedLM, prompt: torch.Tensor, batch: CompletionBatch) -> torch.Tensor:
    """(B, C): -log p(c_j | instruction, prompt, c_<j) of each completion token (teacher forcing); 0 on padding."""
    with lm.precision_context():
        logits = _completion_logits(lm, prompt, batch)
    logits = at_least_fp32(logits)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.completion_ids.reshape(-1), reduction="none")
    return nll.view_as(batch.completion_ids).masked_fill(~batch.completion_mask, 0.0)


def mean_over_tokens(token_nll: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) the mean over each row's real tokens: L = (1/n) sum_{j<n} nll_j."""
    return token_nll.sum(1) / completion_mask.sum(1)


def completion_loss(lm: PromptedLM, prompt: torch.Tensor, batch: CompletionBatch) -> torch.Tensor:
    """(B,) mean NLL of each row's completion, L = -(1/n) sum_j log p(c_j | instruction, prompt, c_<j).

    Differentiable w.r.t. `prompt`: prompt tuning minimises its batch mean.
    """
    return mean_over_tokens(completion_token_nll(lm, prompt, batch), batch.completion_mask)


def completion_probability(loss: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """(B,) the probability of the whole gold completion, exp(-sum NLL) = exp(-n * loss), in fp64."""
    return torch.exp(-n_tokens.double() * loss.double())


@torch.no_grad()
def choice_scores(
    lm: PromptedLM,
    prompt: torch.Tensor,
    instructions: Sequence[str],
    choices: Sequence[Sequence[str]],
    batch_size: int,
) -> list[np.ndarray]:
    """Per example, the length-normalised log-likelihood of each choice as the completion of its instruction.

    s_k = (1/n_k) sum_j log p(c_kj | instruction, prompt, c_k<j) = -completion loss of choice k. The
    choices of `batch_size` examples go through one forward; the caller lists them in the instruction.
    """
    instruction_ids = tokenize_instructions(lm, instructions)
    choice_ids = [tokenize_completions(lm, options) for options in choices]
    scores: list[np.ndarray] = []
    for first in range(0, len(instructions), batch_size):
        chunk = range(first, min(first + batch_size, len(instructions)))
        owners = [i for i in chunk for _ in choice_ids[i]]
        options = [ids for i in chunk for ids in choice_ids[i]]
        batch = collate_completions(lm, [instruction_ids[i] for i in owners], options, owners)
        row_scores = (-completion_loss(lm, prompt, batch)).cpu().numpy()
        scores.extend(np.split(row_scores, np.cumsum([len(choice_ids[i]) for i in chunk])[:-1]))
    return scores


def predicted_choices(scores: Sequence[np.ndarray]) -> np.ndarray:
    """(N,) the index of each example's highest-scoring choice (the first one on a tie)."""
    return np.array([int(np.argmax(s)) for s in scores], dtype=np.int64)


def choice_correct(scores: Sequence[np.ndarray], gold_scores: Sequence[Sequence[int]]) -> np.ndarray:
    """(N,) 1.0 where the example's predicted choice has gold score 1 (BIG-bench `multiple_choice_scores`), else 0."""
    if len(scores) != len(gold_scores):
        raise ValueError(f"{len(scores)} examples scored but {len(gold_scores)} gold score lists")
    return np.array([gold[k] == 1 for gold, k in zip(gold_scores, predicted_choices(scores))], dtype=np.float64)


def multiple_choice_accuracy(scores: Sequence[np.ndarray], gold_scores: Sequence[Sequence[int]]) -> float:
    """Share of examples whose predicted choice has gold score 1."""
    return float(choice_correct(scores, gold_scores).mean())


@torch.no_grad()
def capture_completions(lm: PromptedLM, prompt: torch.Tensor, batch: CompletionBatch) -> CompletionCapture:
    """The completion loss plus every neuron's activation at the prompt positions and over the instruction."""
    n_layers = len(lm.projections)
    at_prompt: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
    input_avg: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
    input_max: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
    start, stop = batch.prompt_start, batch.prompt_start + lm.n_prompt

    def record(layer: int, activation: torch.Tensor) -> None:
        at_prompt[layer] = activation[:, start:stop].float()
        input_avg[layer], input_max[layer] = text_mean_and_max(activation, batch.instruction_mask)

    with on_neurons(lm.projections, record):
        loss = completion_loss(lm, prompt, batch)
    return CompletionCapture(loss, batch.n_completion_tokens, at_prompt, input_avg, input_max)


def task_batches(lm: PromptedLM, task: GenerationTask, frame: pd.DataFrame, batch_size: int) -> list[CompletionBatch]:
    """A split's examples as completion batches: each instruction with its gold completion."""
    return completion_batches(lm, task.instructions(frame), task.completions(frame), frame["example"], batch_size)


@torch.no_grad()
def mean_loss(lm: PromptedLM, prompt: torch.Tensor, batches: Sequence) -> float:
    """The mean over examples of each example's mean completion NLL."""
    total = sum(float(completion_loss(lm, prompt, b).sum()) for b in batches)
    return total / sum(len(b.examples) for b in batches)


def choice_accuracy(
    lm: PromptedLM, prompt: torch.Tensor, task: GenerationTask, frame: pd.DataFrame, batch_size: int
) -> np.ndarray:
    """(N,) each example's 0/1 multiple-choice correctness: its highest-scoring choice is a gold one."""
    scores = choice_scores(lm, prompt, task.instructions(frame), task.choice_completions(frame), batch_size)
    return choice_correct(scores, task.gold_scores(frame))


def tune_generation_prompt(
    lm: PromptedLM, task: GenerationTask, train: pd.DataFrame, dev: pd.DataFrame, seed: int, settings: GenerationTuning
) -> tuple[torch.Tensor, pd.DataFrame]:
    """The prompt with the lowest dev loss, and the curve (step, train_loss, dev_loss, seconds)."""
    dev_batches = task_batches(lm, task, dev, settings.eval_batch_size)
    instruction_ids = tokenize_instructions(lm, task.instructions(train))
    completion_ids = tokenize_completions(lm, task.completions(train))
    examples = train["example"].to_numpy()
    prompt = init_prompt(lm, settings.init, settings.init_std, seed, text_tokens=instruction_ids).to(lm.device)
    prompt.requires_grad_(True)
    optimizer = torch.optim.AdamW([prompt], lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    best_loss = mean_loss(lm, prompt, dev_batches)
    best, stale, losses = prompt.detach().clone(), 0, []
    rows = [{"step": 0, "train_loss": float("nan"), "dev_loss": best_loss, "seconds": 0.0}]
    log.info("step 0: dev loss %.4f", best_loss)
    order = np.empty(0, dtype=int)
    with lm.frozen():
        for step in range(1, settings.max_steps + 1):
            if len(order) < settings.batch_size:
                order = np.concatenate([order, rng.permutation(len(train))])
            chunk, order = order[: settings.batch_size], order[settings.batch_size :]
            batch = collate_completions(
                lm, [instruction_ids[i] for i in chunk], [completion_ids[i] for i in chunk], examples[chunk]
            )
            loss = completion_loss(lm, prompt, batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if step % settings.eval_every == 0 or step == settings.max_steps:
                dev_loss = mean_loss(lm, prompt, dev_batches)
                rows.append(
                    {
                        "step": step,
                        "train_loss": float(np.mean(losses)),
                        "dev_loss": dev_loss,
                        "seconds": time.perf_counter() - started,
                    }
                )
                log.info("step %d: train loss %.4f, dev loss %.4f", step, np.mean(losses), dev_loss)
                losses = []
                if dev_loss < best_loss:
                    best_loss, best, stale = dev_loss, prompt.detach().clone(), 0
                else:
                    stale += 1
                    if stale >= settings.patience:
                        break
    return best.cpu(), pd.DataFrame(rows)


@torch.no_grad()
def dump_generation(
    lm: PromptedLM,
    prompt: torch.Tensor,
    task: GenerationTask,
    frame: pd.DataFrame,
    out_dir: str | Path,
    batch_size: int,
    dtype: str = "float16",
    split: str = "validation",
) -> pd.DataFrame:
    """Every neuron at every prompt position of `split` (the layout `activation_store.read_layer` reads), and
    examples.parquet: per example its completion loss, confidence and (with choices) choice correctness."""
    storage = STORAGE_DTYPES[dtype]
    prompt = prompt.to(lm.device)
    with atomic_path(out_dir, directory=True) as tmp:
        rows = []
        with SplitWriter(tmp / split, len(lm.projections), storage) as writer:
            for batch in task_batches(lm, task, frame, batch_size):
                captured = capture_completions(lm, prompt, batch)
                writer.write(captured.prompt, captured.input_avg, captured.input_max, batch.examples.cpu().numpy())
                rows.append(
                    pd.DataFrame(
                        {
                            "example": batch.examples.cpu().numpy(),
                            "loss": captured.loss.double().cpu().numpy(),
                            "confidence": captured.confidence.cpu().numpy(),
                            "n_tokens": captured.n_tokens.cpu().numpy(),
                        }
                    )
                )
        metrics = pd.concat(rows).sort_values("example").reset_index(drop=True)
        if task.has_choices:
            ordered = in_example_order(frame, metrics["example"])
            metrics["correct"] = choice_accuracy(lm, prompt, task, ordered, batch_size)
        write_parquet(metrics, tmp / "examples.parquet")
        write_json({"n_prompt": lm.n_prompt, "dtype": dtype, "examples": {split: len(metrics)}}, tmp / "meta.json")
    return metrics
