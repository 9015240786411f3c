"""Skill neurons under other tuning methods (Wang et al. §5, Fig. 7, 8): LoRA and BitFit in place of the prompt.

The model itself is tuned for the task (no soft prompt: the label word is read right after the template)
while its FFN weights stay frozen, so that the neurons the prompt found are still the same functions:
- 'lora': low-rank adapters (the PEFT library) on the attention projections only;
- 'bitfit': the bias terms only. Where a linear layer has no bias (LLaMA-style models have none), a
  zero-initialised bias is added and tuned, so that the tuned model starts as the pre-trained one; the
  count of added biases is reported beside the results ("bitfit (added biases)").
The perturbation sweep then runs on the tuned model in the orders the prompts found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .architecture import ffn_input_projections, ffn_output_projections, transformer_layers
from .prompting import PromptedLM
from .settings import MethodTuning
from .tuning import evaluate

log = logging.getLogger(__name__)

METHODS = ("lora", "bitfit")


def attention_projections(model: nn.Module) -> list[str]:
    """Full names of the linear maps inside each layer's attention (every linear of a layer but the FFN's)."""
    names = {id(module): name for name, module in model.named_modules()}
    ffn = {id(p) for p in ffn_output_projections(model)}
    ffn |= {id(p) for layer in ffn_input_projections(model) for p in layer.values()}
    found = []
    for layer in transformer_layers(model):
        for module in layer.modules():
            is_linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's
            if is_linear and id(module) not in ffn:
                found.append(names[id(module)])
    if not found:
        raise ValueError(f"{type(model).__name__}: no attention projection found for LoRA")
    return found


def add_lora(model: nn.Module, rank: int, alpha: float) -> int:
    """LoRA adapters (zero-initialised B: the model starts unchanged) on the attention projections, in place;
    only they train. Returns the number of trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=attention_projections(model))
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return trainable_count(model)


def add_bitfit(model: nn.Module) -> tuple[int, int]:
    """Only the bias terms train; a linear layer without one gets a zero bias first. Returns (trainable
    parameters, biases added)."""
    model.requires_grad_(False)
    added = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is None:
            weight = module.weight
            module.bias = nn.Parameter(torch.zeros(module.out_features, device=weight.device, dtype=weight.dtype))
            added += 1
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith("bias"))
    return trainable_count(model), added


def apply_method(model: nn.Module, method: str, lora_rank: int = 8, lora_alpha: float = 16) -> dict[str, int]:
    """Prepare `model` for `method` in place: {'trainable': parameters, 'added_biases': count}."""
    if method == "lora":
        return {"trainable": add_lora(model, lora_rank, lora_alpha), "added_biases": 0}
    if method == "bitfit":
        trainable, added = add_bitfit(model)
        return {"trainable": trainable, "added_biases": added}
    raise ValueError(f"unknown tuning method {method!r}; use one of {', '.join(METHODS)}")


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tuned tensors by name, to save and to load onto a model prepared the same way."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    missing = sorted(set(state) - set(parameters))
    if missing:
        raise ValueError(f"{len(missing)} tuned tensors have no place in the model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def tune_model(
    lm: PromptedLM,
    train: pd.DataFrame,
    dev_batches: Sequence,
    text_fields: Sequence[str],
    seed: int,
    settings: MethodTuning,
) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """The trainable tensors of the best dev accuracy, and the curve (step, train_loss, dev_accuracy, seconds).

    `lm` reads the label words right after the template (a prompt of 0 vectors, one forward per batch).
    """
    empty = torch.zeros(0, lm.hidden_size, device=lm.device)
    trainable = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings.lr)
    rng = torch.Generator().manual_seed(seed)
    token_ids = lm.tokenize(train, text_fields)
    labels, examples = train["label"].to_numpy(), train["example"].to_numpy()
    started = time.perf_counter()
    lm.model.eval()  # no dropout: the tuned parameters alone change
    best = (evaluate(lm, empty, dev_batches, one_forward=True), trainable_state(lm.model))
    rows = [{"step": 0, "train_loss": float("nan"), "dev_accuracy": best[0], "seconds": 0.0}]
    order: list[int] = []
    stale, losses = 0, []
    for step in range(1, settings.max_steps + 1):
        if len(order) < settings.batch_size:
            order += torch.randperm(len(train), generator=rng).tolist()
        chunk, order = np.array(order[: settings.batch_size]), order[settings.batch_size :]
        batch = lm.collate([token_ids[i] for i in chunk], labels[chunk], examples[chunk])
        loss = F.cross_entropy(lm.label_logits(empty, batch, one_forward=True), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % settings.eval_every == 0 or step == settings.max_steps:
            accuracy = evaluate(lm, empty, dev_batches, one_forward=True)
            rows.append(
                {
                    "step": step,
                    "train_loss": float(np.mean(losses)),
                    "dev_accuracy": accuracy,
                    "seconds": time.perf_counter() - started,
                }
            )
            log.info("step %d: train loss %.4f, dev accuracy %.4f", step, np.mean(losses), accuracy)
            losses = []
            if accuracy > best[0]:
                best, stale = (accuracy, trainable_state(lm.model)), 0
            else:
                stale += 1
                if stale >= settings.patience:
                    break
    return best[1], pd.DataFrame(rows)
