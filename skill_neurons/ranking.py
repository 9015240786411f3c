"""Rank neurons: predictivity (Wang et al. 2022) and |Pearson| with auxiliary metrics (Zhao et al. 2025).

For neuron i at prompt position p, with baseline bsl(p) = mean over train of a(p, x):
    Acc(p)  = mean over dev of 1[(a(p, x) > bsl(p)) == y]
    Pred(p) = max(Acc(p), 1 - Acc(p))
    Pred    = max over p of Pred(p), then the mean over seeds.
Test accuracy (Wang et al. Tables 1 and 3): the position p* and the direction come from dev, and the
test accuracy is read with them, never maximised again on test:
    TestAcc = Acc_test(p*)       if Acc_dev(p*) >= 0.5
              1 - Acc_test(p*)   otherwise
(max(Acc_test, 1 - Acc_test) would give a neuron without signal about 52.8% on 200 test examples).
Correlation: Corr = max over p of |pearson(a(p, .), m)| over dev, for a metric m per example.
Selectivity (Morcos et al. 2018), from the class means mu_c of a(p, .) over dev:
    SI(p) = (mu_max - mu_other) / (|mu_max| + |mu_other|),   SI = max over p of SI(p)
(the absolute values keep it in [0, 1] for activations that go negative, as gated FFNs' do).
Task similarity (Wang et al. Fig. 5): the Spearman correlation of two tasks' predictivity orders within
each layer, averaged over layers (`specificity_summary`); the correlation over all neurons pooled is ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def position_accuracy(activations: np.ndarray, baseline: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Acc of thresholding at the baseline: activations (N, ..., D), baseline (..., D), targets (N,) in {0, 1}."""
    fires = activations > baseline
    agree = fires == targets.reshape((-1,) + (1,) * (activations.ndim - 1)).astype(bool)
    return agree.mean(0)


def predictivity(accuracy: np.ndarray) -> np.ndarray:
    """max(Acc, 1 - Acc): a neuron that fires for the negative class predicts as well."""
    return np.maximum(accuracy, 1.0 - accuracy)


def directed_accuracy(test_accuracy: np.ndarray, dev_accuracy: np.ndarray) -> np.ndarray:
    """Test accuracy in the direction chosen on dev: TestAcc = Acc_test if Acc_dev >= 0.5 else 1 - Acc_test."""
    test_accuracy = np.asarray(test_accuracy)
    return np.where(np.asarray(dev_accuracy) >= 0.5, test_accuracy, 1.0 - test_accuracy)


def best_position(prompt_accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, from (l, D) accuracies: the predictivity maximised over positions, and that position."""
    scores = predictivity(prompt_accuracy)
    position = scores.argmax(0)
    return scores[position, np.arange(scores.shape[1])], position


def pearson_abs(activations: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """|Pearson r| over examples (axis 0) of each column of activations with `metric`; 0 where undefined."""
    centred = activations - activations.mean(0)
    metric_centred = (metric - metric.mean()).reshape((-1,) + (1,) * (activations.ndim - 1))
    covariance = (centred * metric_centred).sum(0)
    scale = np.sqrt((centred**2).sum(0) * (metric_centred**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(covariance / scale)
    return np.nan_to_num(r, nan=0.0, posinf=0.0)


def best_correlation(activations: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron of activations (N, P, D): the max over positions of |pearson| with `metric`, and that position."""
    correlation = pearson_abs(activations, metric)
    position = correlation.argmax(0)
    return correlation[position, np.arange(correlation.shape[1])], position


def selectivity_index(activations: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """SI of each column of activations (N, ..., D) for binary targets (N,); 0 where both class means are 0."""
    means = [activations[targets == c].mean(0) for c in (0, 1)]
    high, low = np.maximum(*means), np.minimum(*means)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = (high - low) / (np.abs(high) + np.abs(low))
    return np.nan_to_num(index, nan=0.0)


def interleave(orders: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Merge per-subtask orders round-robin, each neuron kept at its first appearance: (neuron, subtask)."""
    seen: set[int] = set()
    merged = []
    for depth in range(max(len(o) for o in orders)):
        for subtask, order in enumerate(orders):
            if depth < len(order) and order[depth] not in seen:
                seen.add(order[depth])
                merged.append((order[depth], subtask))
    return merged


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; ties keep the lower index (lower layer, lower neuron) first."""
    return np.argsort(-scores, kind="stable")


def merge_seeds(scores: pd.DataFrame, value: str, subtasks: Sequence[str]) -> pd.DataFrame:
    """Rank table over seeds: per subtask the mean over seeds orders neurons; subtasks are interleaved.

    `scores` has columns subtask, seed, layer, neuron and `value`. The result has one row per neuron:
    rank, layer, neuron, subtask (the one whose order placed it), mean, std, and seed_<k> columns.
    """
    per_subtask = []
    for name in subtasks:
        wide = scores[scores["subtask"] == name].pivot_table(index=["layer", "neuron"], columns="seed", values=value)
        wide = wide.sort_index()
        wide.columns = [f"seed_{c}" for c in wide.columns]
        seeds = wide.to_numpy()
        wide["mean"] = seeds.mean(1)
        wide["std"] = seeds.std(1, ddof=1) if seeds.shape[1] > 1 else 0.0
        per_subtask.append(wide.reset_index())
    merged = np.array(interleave([order_by_score(t["mean"].to_numpy()) for t in per_subtask]))
    parts = []
    for s, name in enumerate(subtasks):
        ranks = np.flatnonzero(merged[:, 1] == s)
        part = per_subtask[s].iloc[merged[ranks, 0]].assign(subtask=name, rank=ranks + 1)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True).sort_values("rank", ignore_index=True)
    table = table[["rank", *[c for c in table.columns if c != "rank"]]]
    table["layer"] = table["layer"].astype(int)
    table["neuron"] = table["neuron"].astype(int)
    return table


def order_correlation(rankings: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Spearman correlation of the neuron orders of every pair of tasks, over all neurons and per layer.

    Each ranking holds layer, neuron, rank (one row per neuron). Rows: task_a, task_b, layer (-1 = all
    layers), spearman. The Spearman correlation of two orders is the Pearson correlation of their ranks.
    """
    from scipy.stats import spearmanr  # scipy.stats takes a second to import; most scoring jobs never call this

    ranks = pd.concat({task: r.set_index(["layer", "neuron"])["rank"] for task, r in rankings.items()}, axis=1)
    rows = []
    tasks = list(rankings)
    for i, task_a in enumerate(tasks):
        for task_b in tasks[i:]:
            pair = ranks[[task_a, task_b]].dropna()
            parts = [(-1, pair)] + [(int(layer), part) for layer, part in pair.groupby(level="layer")]
            for layer, part in parts:
                value = 1.0 if task_a == task_b else float(spearmanr(part[task_a], part[task_b]).statistic)
                rows.append({"task_a": task_a, "task_b": task_b, "layer": layer, "spearman": value})
    return pd.DataFrame(rows)


def specificity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Task similarity of Wang et al. Fig. 5 from `order_correlation`'s table, one row per task pair.

    spearman_layer_mean = mean over layers of the Spearman correlation within each layer (the paper's);
    spearman_pooled = the correlation over all neurons at once (layer -1 rows; ours, kept beside it).
    """
    keys = ["task_a", "task_b"]
    per_layer = table[table["layer"] >= 0].groupby(keys, sort=False)["spearman"].mean().rename("spearman_layer_mean")
    pooled = table[table["layer"] == -1].set_index(keys)["spearman"].rename("spearman_pooled")
    return pd.concat([per_layer, pooled], axis=1).reset_index()[[*keys, "spearman_layer_mean", "spearman_pooled"]]
