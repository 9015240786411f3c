"""Which vocabulary tokens a skill neuron responds to (Wang et al. 2022, Table 2), read two ways.

Cosine (Dai et al. 2022): the neuron's input weight vector w_i (the row of the FFN's first matrix that makes
neuron i) against every token's input embedding e_t,
    cos(t) = e_t . w_i / (|e_t| |w_i|).
A gated FFN, a_i = f(g_i . h) * (u_i . h) (LLaMA, Qwen, Gemma), has two such vectors, the gate g_i and the
up projection u_i: each is read on its own and labelled ("cosine, gate", "cosine, up").
Mean activation (Suau et al. 2020): the model runs over the task's text, and for each token t that occurs,
    mean(t) = mean of a_i over the positions whose input token is t,
kept only for tokens seen at least `min_count` times. Either way the `TOP_TOKENS` highest and lowest text
tokens are reported; special and placeholder tokens are left out (vocabulary.is_text_token).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from .architecture import ffn_input_projections, input_weight_vector
from .neurons import on_neurons
from .prompting import PromptedLM
from .vocabulary import is_text_token

TOP_TOKENS = 10  # Wang et al. Table 2
COSINE = "cosine"
MEAN_ACTIVATION = "mean activation"
SIDES = ("highest", "lowest")
COLUMNS = ["layer", "neuron", "rank", "method", "side", "order", "token", "token id", "value", "count"]


@dataclass(frozen=True)
class Neuron:
    """One neuron of a ranking: its layer, its index in that layer's FFN, and its rank (1 = top)."""

    layer: int
    index: int
    rank: int


def top_neurons(ranking: pd.DataFrame, count: int) -> list[Neuron]:
    """The `count` best-ranked neurons of a ranking table (rank 1 first)."""
    best = ranking.sort_values("rank").head(count)
    return [Neuron(int(r.layer), int(r.neuron), int(r.rank)) for r in best.itertuples(index=False)]


def input_weight_vectors(model: torch.nn.Module, neuron: Neuron) -> dict[str, torch.Tensor]:
    """The neuron's input weight vectors by method label: "cosine" (plain FFN), or "cosine, gate" and "cosine, up"."""
    projections = ffn_input_projections(model)[neuron.layer]
    return {
        f"{COSINE}, {label}" if label else COSINE: input_weight_vector(projection, neuron.index).float().cpu()
        for label, projection in projections.items()
    }


def vocabulary_size(lm: PromptedLM) -> int:
    """Token ids that both the tokenizer and the embedding know (embeddings are often padded past the tokenizer)."""
    return min(len(lm.tokenizer), lm.model.get_input_embeddings().weight.shape[0])


def embedding_cosines(lm: PromptedLM, vectors: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(vocabulary, k): cosine of every token's input embedding (the embedding's own forward) with k vectors."""
    directions = torch.nn.functional.normalize(vectors.float(), dim=1)
    parts = []
    for start in range(0, vocabulary_size(lm), chunk):
        ids = torch.arange(start, min(start + chunk, vocabulary_size(lm)))
        embeddings = torch.nn.functional.normalize(lm.embed(ids).float(), dim=1)
        parts.append(embeddings @ directions.T)
    return torch.cat(parts)


def text_token_filter(tokenizer: PreTrainedTokenizerBase) -> Callable[[int], bool]:
    """is_text_token for one tokenizer, remembered: the same tokens are asked about for every neuron."""
    special = set(tokenizer.all_special_ids)
    return functools.lru_cache(maxsize=None)(lambda token: is_text_token(tokenizer, token, special))


def extreme_tokens(
    values: np.ndarray, keep: Callable[[int], bool], side: str, limit: int = TOP_TOKENS
) -> list[tuple[int, float]]:
    """The `limit` (token id, value) with the highest or lowest value among the ids that `keep` admits.

    NaN values (tokens never seen) are skipped; ties keep the lower id first.
    """
    order = np.argsort(-values if side == "highest" else values, kind="stable")
    found: list[tuple[int, float]] = []
    for token in order:
        if np.isnan(values[token]) or not keep(int(token)):
            continue
        found.append((int(token), float(values[token])))
        if len(found) == limit:
            break
    return found


def max_text_tokens(lm: PromptedLM) -> int | None:
    """Most tokens (special tokens included) a text may hold; a masked LM's positions are capped at 512, and
    RoBERTa's first two are taken by padding."""
    limit = getattr(lm.model.config, "max_position_embeddings", None)
    if not limit:
        return None
    return min(limit, 512) - 2 if lm.kind == "mlm" else limit


def tokenize_texts(lm: PromptedLM, texts: Sequence[str]) -> list[list[int]]:
    """The texts as the model reads them alone, with its special tokens ([CLS] .. [SEP], or BOS), cut to fit."""
    limit = max_text_tokens(lm)
    return [lm.tokenizer(text, truncation=limit is not None, max_length=limit).input_ids for text in texts]


def right_padded(lm: PromptedLM, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask (B, T), padded on the right: every real token keeps its own position."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), lm.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids.to(lm.device), mask.to(lm.device)


@torch.no_grad()
def neuron_activations(
    lm: PromptedLM, ids: torch.Tensor, mask: torch.Tensor, neurons: Sequence[Neuron]
) -> torch.Tensor:
    """(B, T, n_neurons) fp32: each neuron's activation at every position of one batch."""
    seen = torch.zeros(*ids.shape, len(neurons), device=lm.device)
    columns: dict[int, list[int]] = {}
    for column, neuron in enumerate(neurons):
        columns.setdefault(neuron.layer, []).append(column)
    indices = {
        layer: torch.tensor([neurons[c].index for c in cols], device=lm.device) for layer, cols in columns.items()
    }

    def record(layer: int, activation: torch.Tensor) -> None:
        if layer in indices:
            seen[..., columns[layer]] = activation[..., indices[layer]].float()

    with lm.precision_context(), on_neurons(lm.projections, record):
        lm.model.base_model(input_ids=ids, attention_mask=mask)
    return seen


def token_activation_sums(
    lm: PromptedLM, token_ids: Sequence[Sequence[int]], neurons: Sequence[Neuron], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vocabulary token, the sum of each neuron's activation where it is the input token, and its count.

    Returns sums (vocabulary, n_neurons) in float64 and counts (vocabulary,); padding positions are not counted.
    """
    size = max(len(lm.tokenizer), lm.model.get_input_embeddings().weight.shape[0])
    sums = torch.zeros(size, len(neurons), dtype=torch.float64, device=lm.device)
    counts = torch.zeros(size, dtype=torch.long, device=lm.device)
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        ids, mask = right_padded(lm, [token_ids[i] for i in order[start : start + batch_size]])
        seen = neuron_activations(lm, ids, mask, neurons)
        real = mask.bool()
        sums.index_add_(0, ids[real], seen[real].double())
        counts += torch.bincount(ids[real], minlength=size)
    return sums.cpu(), counts.cpu()


def selectivity_rows(
    neuron: Neuron,
    method: str,
    values: np.ndarray,
    keep: Callable[[int], bool],
    tokenizer: PreTrainedTokenizerBase,
    counts: np.ndarray | None = None,
) -> list[dict]:
    """The highest and lowest tokens of one neuron by one method, as table rows (values to 4 significant digits)."""
    rows = []
    for side in SIDES:
        for order, (token, value) in enumerate(extreme_tokens(values, keep, side), start=1):
            rows.append(
                {
                    "layer": neuron.layer,
                    "neuron": neuron.index,
                    "rank": neuron.rank,
                    "method": method,
                    "side": side,
                    "order": order,
                    "token": tokenizer.decode([token]),
                    "token id": token,
                    "value": float(f"{value:.4g}"),
                    "count": None if counts is None else int(counts[token]),
                }
            )
    return rows


def mean_activations(sums: torch.Tensor, counts: torch.Tensor, min_count: int) -> np.ndarray:
    """(vocabulary, n_neurons) mean activation per token; NaN for tokens seen fewer than `min_count` times."""
    means = np.full(tuple(sums.shape), np.nan)
    frequent = (counts >= max(min_count, 1)).numpy()
    means[frequent] = sums[frequent].numpy() / counts[frequent].numpy()[:, None]
    return means


def word_selectivity_table(
    lm: PromptedLM, neurons: Sequence[Neuron], texts: Sequence[str], min_count: int, batch_size: int
) -> pd.DataFrame:
    """Per neuron: the top and bottom tokens by embedding cosine (each input weight vector) and by mean
    activation over `texts` (tokens seen at least `min_count` times)."""
    keep = text_token_filter(lm.tokenizer)
    vectors = [input_weight_vectors(lm.model, neuron) for neuron in neurons]
    # One pass over the vocabulary's embeddings for every vector of every neuron.
    cosines = embedding_cosines(lm, torch.stack([v for per_neuron in vectors for v in per_neuron.values()])).numpy()
    sums, counts = token_activation_sums(lm, tokenize_texts(lm, texts), neurons, batch_size)
    means = mean_activations(sums, counts, min_count)
    rows: list[dict] = []
    column = 0
    for index, neuron in enumerate(neurons):
        for method in vectors[index]:
            rows += selectivity_rows(neuron, method, cosines[:, column], keep, lm.tokenizer)
            column += 1
        rows += selectivity_rows(neuron, MEAN_ACTIVATION, means[:, index], keep, lm.tokenizer, counts.numpy())
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["count"] = table["count"].astype("Int64")
    return table
