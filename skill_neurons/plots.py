"""Figures in the style of Wang et al.: predictivity histograms (Fig. 3) and a top neuron by label (Fig. 1/2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path, read_json, read_parquet  # noqa: E402
from .scores import top_neuron_activations  # noqa: E402
from .sweep_tables import SETTING_COLUMNS, importance_matrix, setting_label  # noqa: E402

SOURCES = {"predictivity": "prompt", "avg_predictivity": "Avg", "max_predictivity": "Max"}


def histogram_counts(score_files: Sequence[str], seeds: Sequence[int], bins: int) -> pd.DataFrame:
    """Share of neurons per predictivity bin, per seed, subtask and activation source (long format)."""
    edges = np.linspace(0.5, 1.0, bins + 1)
    rows = []
    for seed, path in zip(seeds, score_files):
        scores = read_parquet(path)
        for subtask, part in scores.groupby("subtask"):
            for column, source in SOURCES.items():
                counts, _ = np.histogram(part[column].clip(0.5, 1.0), bins=edges)
                rows += [
                    {"seed": seed, "subtask": subtask, "source": source, "bin": f"{lo:.3f}", "share": c / len(part)}
                    for lo, c in zip(edges[:-1], counts)
                ]
    return pd.DataFrame(rows)


def _save(figure: plt.Figure, output: str | Path, dpi: int) -> None:
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(figure)


def predictivity_histogram(
    score_files: Sequence[str],
    seeds: Sequence[int],
    output: str | Path,
    bins: int = 30,
    style: str = "whitegrid",
    dpi: int = 120,
) -> None:
    sns.set_theme(style=style)
    counts = histogram_counts(score_files, seeds, bins)
    grid = sns.catplot(
        data=counts,
        x="bin",
        y="share",
        hue="source",
        col="subtask",
        kind="bar",
        errorbar="sd",
        height=3.5,
        aspect=2.0,
        sharey=False,
    )
    grid.set_axis_labels("predictivity (dev)", "share of neurons")
    for axis in grid.axes.flat:
        labels = axis.get_xticklabels()
        axis.set_xticks(axis.get_xticks()[:: max(1, bins // 6)])
        axis.set_xticklabels([t.get_text() for t in labels][:: max(1, bins // 6)])
    grid.figure.suptitle(f"Neuron predictivity, mean ± sd over {len(seeds)} seeds", y=1.02)
    _save(grid.figure, output, dpi)


def top_neuron_distribution(
    ranking_file: str,
    scores_file: str,
    run_dir: str,
    label_words: Sequence[str],
    output: str | Path,
    style: str = "whitegrid",
    dpi: int = 120,
) -> None:
    sns.set_theme(style=style)
    top = read_parquet(ranking_file).iloc[0]
    scores = read_parquet(scores_file).set_index(["subtask", "layer", "neuron"])
    position = int(scores.loc[(top["subtask"], top["layer"], top["neuron"]), "position"])
    acts = top_neuron_activations(run_dir, "test", int(top["layer"]), int(top["neuron"]), position)
    acts["label"] = [label_words[i].strip() for i in acts["label"]]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    sns.histplot(data=acts, x="activation", hue="label", element="step", stat="density", common_norm=False, ax=axis)
    axis.axvline(acts["baseline"].iloc[0], color="black", linestyle="--", label="baseline")
    axis.set_title(f"Top neuron: layer {int(top['layer'])} #{int(top['neuron'])}, prompt position {position}")
    _save(figure, output, dpi)


def setting_labels(rows: pd.DataFrame) -> list[str]:
    """Each row's perturbation setting as a label (mode, positions, scope); the mode alone in older tables."""
    if not set(SETTING_COLUMNS) <= set(rows.columns):
        return rows["mode"].tolist()
    return [setting_label(m, p, s) for m, p, s in zip(rows["mode"], rows["positions"], rows["scope"])]


def perturbation_curves(
    sweep_files: Sequence[str], output: str | Path, style: str = "whitegrid", dpi: int = 120
) -> None:
    """Accuracy vs share of perturbed neurons, one line per order, mean ± sd over seeds (Wang et al. Fig. 4)."""
    sns.set_theme(style=style)
    sweeps = pd.concat([read_parquet(f) for f in sweep_files], ignore_index=True)
    sweeps["perturbed (%)"] = 100 * sweeps["rate"]
    sweeps["setting"] = setting_labels(sweeps)
    grid = sns.relplot(
        data=sweeps,
        x="perturbed (%)",
        y="accuracy",
        hue="order",
        col="setting",
        kind="line",
        marker="o",
        errorbar="sd",
        height=3.5,
        aspect=1.3,
    )
    grid.figure.suptitle(
        f"{sweeps['task'].iloc[0]}: test accuracy with the top neurons of each order perturbed, "
        f"mean ± sd over {sweeps['seed'].nunique()} seeds",
        y=1.03,
    )
    _save(grid.figure, output, dpi)


def importance_heatmap(importance_file: str, output: str | Path, style: str = "whitegrid", dpi: int = 120) -> None:
    """Neuronal importance, z-scored per evaluation task (Wang et al. Fig. 6), one panel per mode."""
    sns.set_theme(style=style)
    table = read_parquet(importance_file)
    modes = list(table["mode"].unique())
    labels = dict(zip(table["mode"], setting_labels(table)))
    figure, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.8), squeeze=False)
    for axis, mode in zip(axes.flat, modes):
        sns.heatmap(importance_matrix(table, mode), annot=True, fmt=".2f", cmap="vlag", center=0, ax=axis)
        axis.set(title=labels[mode], xlabel="evaluation task", ylabel="source of the neuron order")
    figure.suptitle("Neuronal importance (z-scored per evaluation task)", y=1.02)
    _save(figure, output, dpi)


def specificity_figure(table_file: str, output: str | Path, style: str = "whitegrid", dpi: int = 120) -> None:
    """Spearman correlation of task orders: all layers as a matrix (Fig. 5), and per layer (Fig. 14)."""
    sns.set_theme(style=style)
    table = read_parquet(table_file)
    overall = table[table["layer"] == -1]
    matrix = overall.pivot(index="task_a", columns="task_b", values="spearman")
    matrix = matrix.combine_first(matrix.T)
    per_layer = table[(table["layer"] >= 0) & (table["task_a"] != table["task_b"])].assign(
        pair=lambda t: t["task_a"] + " / " + t["task_b"]
    )
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
    sns.heatmap(matrix, annot=True, fmt=".2f", cmap="rocket_r", vmin=min(0, float(matrix.min().min())), vmax=1, ax=left)
    left.set(title="all layers", xlabel="", ylabel="")
    if len(per_layer):
        sns.lineplot(data=per_layer, x="layer", y="spearman", hue="pair", marker="o", ax=right)
    right.set(title="per layer", ylabel="Spearman correlation")
    figure.suptitle("Spearman correlation of the tasks' neuron predictivity orders", y=1.02)
    _save(figure, output, dpi)


def pruning_figure(
    selection_file: str, search_file: str, speed_file: str, output: str | Path, style: str = "whitegrid", dpi: int = 120
) -> None:
    """Accuracy vs keep ratio (selection methods; SKELETON's search) and speedup vs batch size and length."""
    sns.set_theme(style=style)
    selection = read_parquet(selection_file)
    search = read_parquet(search_file)
    speeds = read_parquet(speed_file)
    reference = speeds[speeds["reference"]].iloc[0]
    figure, axes = plt.subplots(1, 4, figsize=(21, 4))
    dense = selection[selection["method"] == "dense"]["test_accuracy"].iloc[0]
    pruned = selection[selection["method"] != "dense"]
    if pruned["keep_ratio"].nunique() > 1:
        sns.lineplot(data=pruned, x="keep_ratio", y="test_accuracy", hue="method", marker="o", ax=axes[0])
        axes[0].set(xlabel="FFN neurons kept")
    else:
        sns.barplot(data=pruned, x="method", y="test_accuracy", hue="method", ax=axes[0])
        axes[0].set(xlabel=f"selection method, {pruned['keep_ratio'].iloc[0]:.0%} of FFN neurons kept")
        axes[0].tick_params(axis="x", labelrotation=20)
    axes[0].axhline(dense, color="black", linestyle="--", label="dense")
    axes[0].set(title="test accuracy, dense prompt (no re-tuning)", ylabel="accuracy")
    axes[0].legend(fontsize=8)
    if len(search):
        melted = search.melt(
            id_vars="keep_ratio",
            value_vars=["dev_accuracy_before_retuning", "dev_accuracy"],
            var_name="prompt",
            value_name="dev accuracy",
        )
        melted["prompt"] = melted["prompt"].map(
            {"dev_accuracy_before_retuning": "dense prompt", "dev_accuracy": "re-tuned"}
        )
        sns.scatterplot(data=melted, x="keep_ratio", y="dev accuracy", hue="prompt", style="prompt", s=70, ax=axes[1])
    axes[1].set(title="SKELETON binary search (attribution order)", xlabel="FFN neurons kept", xlim=(0, 1.02))
    pruned_speeds = speeds[speeds["variant"] != "dense"]
    for axis, (varied, fixed) in zip(axes[2:], [("batch", "length"), ("length", "batch")]):
        part = pruned_speeds[pruned_speeds[fixed] == reference[fixed]]
        sns.lineplot(data=part, x=varied, y="speedup", hue="variant", style="dtype", marker="o", ax=axis)
        axis.vlines(part[varied], part["speedup_q1"], part["speedup_q3"], color="grey", linewidth=1)  # paired IQR
        axis.axhline(1, color="black", linestyle="--")
        axis.set(title=f"speedup over dense, {fixed} {reference[fixed]} ({reference['device']})", xscale="log")
    figure.suptitle(f"Pruning {selection['task'].iloc[0]}", y=1.02)
    _save(figure, output, dpi)


def correlation_histogram(
    ranking_file: str,
    thresholds_file: str,
    output: str | Path,
    bins: int = 30,
    style: str = "whitegrid",
    dpi: int = 120,
) -> None:
    """Every neuron's max-over-positions |r| with each metric, the top-k threshold marked (Zhao et al. Fig. 4, 6, 7)."""
    sns.set_theme(style=style)
    ranking = read_parquet(ranking_file, columns=["metric", "corr"])
    thresholds = read_json(thresholds_file)
    metrics = list(dict.fromkeys(ranking["metric"]))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        sns.histplot(ranking.loc[ranking["metric"] == metric, "corr"], bins=bins, stat="percent", ax=axis)
        threshold = thresholds["thresholds"][metric]
        axis.axvline(threshold, color="black", linestyle="--", label=f"top-{thresholds['top_k']}: {threshold:.2f}")
        axis.set_xlabel("|Pearson r|, max over prompt positions")
        axis.set_title(metric)
        axis.legend()
    _save(figure, output, dpi)


def metric_neuron_density(
    activations_file: str,
    examples_file: str,
    groups: Sequence[str],
    output: str | Path,
    style: str = "whitegrid",
    dpi: int = 120,
) -> None:
    """Validation activations of each metric's top neuron at its best position, one density per group of each
    grouping column (Zhao et al. Fig. 2, 3, 5)."""
    sns.set_theme(style=style)
    activations = read_parquet(activations_file)
    top = activations[activations["rank"].astype(int) == 1]
    examples = read_parquet(examples_file).set_index("example")
    metrics = list(dict.fromkeys(top["metric"]))
    groups = list(groups) or [None]
    figure, axes = plt.subplots(
        len(groups), len(metrics), figsize=(4.5 * len(metrics), 3.2 * len(groups)), squeeze=False
    )
    for row, group in enumerate(groups):
        for column, metric in enumerate(metrics):
            values = top[top["metric"] == metric].set_index("example")["activation"]
            frame = pd.DataFrame({"activation": values})
            if group is not None:
                frame[group] = examples.loc[values.index, group].astype(str).to_numpy()
            sns.kdeplot(
                data=frame,
                x="activation",
                hue=group,
                common_norm=False,
                fill=True,
                ax=axes[row][column],
                warn_singular=False,
            )
            axes[row][column].set_title(f"top neuron of {metric}" + (f", by {group}" if group else ""))
    _save(figure, output, dpi)
