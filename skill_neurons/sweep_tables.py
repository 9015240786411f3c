"""A perturbation sweep's rows, their labels, and the tables made of them (Wang et al. Fig. 4 and 6), without
torch: table and plot jobs read sweeps without loading it (`perturbation` runs them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SETTING_COLUMNS = ("positions", "scope")  # beside `mode` in a sweep's rows: what each curve measured
RANDOM_ORDER = "random"
SELECTIVITY_ORDER = "selectivity"  # the evaluation task's order by selectivity index, not a source task


def setting_label(mode: str, positions: str, scope: str) -> str:
    """A curve's label: its mode, where it acts and how neurons are chosen, e.g. 'noise, all tokens, per layer'."""
    where = "all tokens" if positions == "all" else "prompt positions"
    return f"{mode}, {where}, {scope.replace('_', ' ')}"


def sweep_summary(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Per (evaluation task, mode, rate, order): accuracy over seeds and its drop from rate 0, in points.

    drop = mean over seeds of 100 * (acc(0) - acc(r)); `random drop` is the random order's at the same rate.
    """
    setting = ["mode", *(c for c in SETTING_COLUMNS if c in sweeps)]
    keys = ["task", *setting, "rate"]
    unperturbed = sweeps[sweeps["rate"] == 0].groupby(["task", "seed", *setting])["accuracy"].first()
    perturbed = sweeps[sweeps["rate"] > 0].join(unperturbed.rename("unperturbed"), on=["task", "seed", *setting])
    perturbed = perturbed.assign(drop=100 * (perturbed["unperturbed"] - perturbed["accuracy"]))
    table = (
        perturbed.groupby(keys + ["order"])
        .agg(
            seeds=("seed", "nunique"),
            accuracy=("accuracy", "mean"),
            accuracy_sd=("accuracy", "std"),
            drop=("drop", "mean"),
        )
        .reset_index()
    )
    random_drop = table[table["order"] == RANDOM_ORDER].set_index(keys)["drop"].rename("random drop")
    return table.join(random_drop, on=keys).rename(
        columns={"drop": "drop (points)", "random drop": "random drop (points)"}
    )


def neuronal_importance(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Area between random-order and source-order curves per (mode, evaluation, source, seed).

    `sweeps` holds rows task (evaluation), seed, mode, order, rate, accuracy. The area is the trapezoid
    integral over the rates of acc_random(r) - acc_source(r).
    """
    rows = []
    keys = ["task", "seed", "mode", *(c for c in SETTING_COLUMNS if c in sweeps)]
    for values, part in sweeps.groupby(keys):
        random = part[part["order"] == RANDOM_ORDER].set_index("rate")["accuracy"].sort_index()
        for source, curve in part[part["order"] != RANDOM_ORDER].groupby("order"):
            source_curve = curve.set_index("rate")["accuracy"].sort_index()
            gap = (random - source_curve).dropna()
            rows.append(
                {
                    **dict(zip(keys, values)),
                    "source": source,
                    "importance": float(np.trapezoid(gap.to_numpy(), gap.index.to_numpy())),
                }
            )
    return pd.DataFrame(rows)


def importance_matrix(importance: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Mean importance over seeds, z-scored per evaluation task: rows source task, columns evaluation task."""
    tasks = importance[importance["source"] != SELECTIVITY_ORDER]
    matrix = tasks[tasks["mode"] == mode].groupby(["source", "task"])["importance"].mean().unstack("task")
    spread = matrix.std(axis=0, ddof=0).replace(0, np.nan)
    return ((matrix - matrix.mean(axis=0)) / spread).fillna(0.0)
