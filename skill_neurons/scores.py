"""Per-run neuron scores and per-task summaries, read from activation folders one layer at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from .activation_store import read_baseline, read_examples, read_layer, read_meta
from .data import Subtask, Task, subtask_targets
from .ranking import (
    best_correlation,
    best_position,
    directed_accuracy,
    position_accuracy,
    predictivity,
    selectivity_index,
)

METRICS = ("label", "loss", "confidence")


def score_run(run_dir: str | Path, task: Task) -> pd.DataFrame:
    """One row per (subtask, layer, neuron) of one seed's activations.

    Columns: position (best prompt position on dev), predictivity (dev), test_predictivity (test, at
    that position and in the direction dev chose: `directed_accuracy`), avg_predictivity and
    max_predictivity (dev, input Avg/Max baselines), and corr_<metric> (dev, max over positions of
    |pearson|) for each auxiliary metric, and selectivity (dev, max over positions of Morcos et al.'s
    selectivity index).
    """
    meta = read_meta(run_dir)
    baseline = read_baseline(run_dir)
    examples = read_examples(run_dir)
    frames = []
    for layer in range(len(meta["widths"])):
        dev, test = read_layer(run_dir, "dev", layer), read_layer(run_dir, "test", layer)
        dev_metrics = examples[examples["split"] == "dev"].set_index("example").loc[dev.examples]
        test_labels = examples[examples["split"] == "test"].set_index("example").loc[test.examples, "label"]
        for subtask in task.binary_subtasks():
            rows, targets = subtask_targets(dev_metrics["label"].to_numpy(), task, subtask)
            test_rows, test_targets = subtask_targets(test_labels.to_numpy(), task, subtask)
            accuracy = position_accuracy(dev.prompt[rows], baseline["prompt"][layer], targets)
            score, position = best_position(accuracy)
            neurons = np.arange(len(score))
            test_accuracy = position_accuracy(
                test.prompt[test_rows][:, position, neurons], baseline["prompt"][layer][position, neurons], test_targets
            )
            frame = pd.DataFrame(
                {
                    "subtask": subtask.name,
                    "layer": layer,
                    "neuron": neurons,
                    "position": position,
                    "predictivity": score,
                    "test_predictivity": directed_accuracy(test_accuracy, accuracy[position, neurons]),
                    "avg_predictivity": predictivity(
                        position_accuracy(dev.input_avg[rows], baseline["input_avg"][layer][0], targets)
                    ),
                    "max_predictivity": predictivity(
                        position_accuracy(dev.input_max[rows], baseline["input_max"][layer][0], targets)
                    ),
                }
            )
            metric_values = {
                "label": targets.astype(np.float64),
                "loss": dev_metrics["loss"].to_numpy()[rows],
                "confidence": dev_metrics["confidence"].to_numpy()[rows],
            }
            for name in METRICS:
                frame[f"corr_{name}"] = best_correlation(dev.prompt[rows], metric_values[name])[0]
            frame["selectivity"] = selectivity_index(dev.prompt[rows], targets).max(0)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def top_neuron_activations(run_dir: str | Path, split: str, layer: int, neuron: int, position: int) -> pd.DataFrame:
    """Activations of one neuron at one prompt position with each example's label, and its baseline."""
    acts = read_layer(run_dir, split, layer)
    examples = read_examples(run_dir)
    labels = examples[examples["split"] == split].set_index("example").loc[acts.examples, "label"].to_numpy()
    bsl = read_baseline(run_dir)["prompt"][layer][position, neuron]
    return pd.DataFrame(
        {"example": acts.examples, "label": labels, "activation": acts.prompt[:, position, neuron], "baseline": bsl}
    )


def logistic_regression_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, n_classes: int, l2: float = 1e-3
) -> float:
    """Test accuracy of a multinomial logistic regression fitted (L-BFGS, L2) on standardised features."""
    import torch  # here, not at the top: only a multi-class task's score job fits it, and torch takes seconds to load

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y, dtype=torch.long)
    weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    test = torch.tensor((test_x - mean) / std, dtype=torch.float64)
    with torch.no_grad():
        predicted = (test @ weight + bias).argmax(1).numpy()
    return float((predicted == test_y).mean())


def top_neuron_accuracy(run_dir: str | Path, task: Task, ranking: pd.DataFrame, seed_scores: pd.DataFrame) -> float:
    """Test accuracy of the top skill neuron(s) of one seed, as in Wang et al.'s Table 1.

    Binary: the top neuron's test predictivity at its best dev position. Multi-class: a logistic
    regression on the top neuron of each subtask, fitted on dev and scored on test.
    """
    subtasks: Sequence[Subtask] = task.binary_subtasks()
    tops = [ranking[ranking["subtask"] == s.name].iloc[0] for s in subtasks]
    keyed = seed_scores.set_index(["subtask", "layer", "neuron"])
    if len(task.labels) == 2:
        top = tops[0]
        return float(keyed.loc[(top["subtask"], top["layer"], top["neuron"]), "test_predictivity"])
    features = {}
    for split in ("dev", "test"):
        columns = []
        for top in tops:
            position = int(keyed.loc[(top["subtask"], top["layer"], top["neuron"]), "position"])
            acts = top_neuron_activations(run_dir, split, int(top["layer"]), int(top["neuron"]), position)
            columns.append(acts["activation"].to_numpy())
        features[split] = (np.stack(columns, 1), acts["label"].to_numpy())
    return logistic_regression_accuracy(*features["dev"], *features["test"], n_classes=len(task.labels))


def majority_rate(values: np.ndarray) -> float:
    """The share of the most frequent value: the accuracy of always answering it (nan without values)."""
    if len(values) == 0:
        return float("nan")
    return float(np.unique(values, return_counts=True)[1].max() / len(values))


def split_labels(examples: pd.DataFrame, split: str) -> np.ndarray:
    """The class indices of one split of a run's examples (`read_examples`)."""
    return examples.loc[examples["split"] == split, "label"].to_numpy()


def subtask_counts(labels: np.ndarray, task: Task, subtask: Subtask) -> dict[str, int | float]:
    """Examples of a split on each side of `subtask`, and the larger side's share of them."""
    _, targets = subtask_targets(labels, task, subtask)
    positive = int(targets.sum())
    return {"positive": positive, "negative": len(targets) - positive, "majority_class": majority_rate(targets)}


def predicted_classes(examples: pd.DataFrame, split: str) -> list[int]:
    """The classes the prompt predicted for at least one example of `split`, in increasing order."""
    return sorted(int(c) for c in examples.loc[examples["split"] == split, "prediction"].unique())


def chance_p_value(accuracy: float, examples: int, random_guess: float) -> float:
    """One-sided binomial p of round(accuracy * examples) correct answers of `examples` under a random guess:

    p = P(X >= k),  X ~ Binomial(examples, random_guess),  k = round(accuracy * examples)
    """
    return float(binomtest(round(accuracy * examples), examples, random_guess, alternative="greater").pvalue)


def task_chance(summaries: Sequence[dict], test_examples: Sequence[int], alpha: float) -> pd.DataFrame:
    """Per task: is the tuned prompt's test accuracy (mean over seeds) above a random guess at level `alpha`?

    `summaries` are rank_neurons' summaries and `test_examples` the sizes of the tasks' test splits. A task
    that is not is left out of the task-similarity claims (Fig. 5, §6.2): its prompt has found no skill.
    """
    rows = []
    for summary, examples in zip(summaries, test_examples, strict=True):
        accuracy, guess = summary["prompt_test_accuracy_mean"], summary["random_guess"]
        p_value = chance_p_value(accuracy, examples, guess)
        rows.append(
            {
                "task": summary["task"],
                "prompt_test_accuracy": accuracy,
                "random_guess": guess,
                "test_examples": int(examples),
                "p_value": p_value,
                "above_chance": p_value < alpha,
            }
        )
    return pd.DataFrame(rows)
