"""The reproduction table: each of the papers' claims next to our measurement of it (issue 14, item 10).

The papers' numbers are data (workflow/resources/paper_claims.yaml, read by `load_claims`). The extractors read
the workflow's own tables, already loaded (frames and dicts, not paths), into `Measured` values keyed by claim
id; `reproduction_table` puts one row per claim beside them: a claim whose stage or task did not run says
"not run". Ids are `<table or figure>.<task>.<quantity>` with the config's task names, so a measurement finds
its claim only when the task is named as in the claims file; `unclaimed` lists those that found none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .ranking import specificity_summary
from .stages.common import markdown_table
from .sweep_tables import RANDOM_ORDER

REQUIRED = ("id", "claim", "paper", "reference", "value")
OPTIONAL = ("unit", "model", "setting", "note")
UNITS = ("%", "points", "x", "")
COLUMNS = ["claim", "reference", "paper", "paper value", "ours", "model", "settings that differ"]
NOT_RUN = "not run"
DECIMALS = {"%": 1, "points": 1, "x": 2, "": 2}

# The papers' settings that ours are compared against in `settings_differences` (Wang et al. 2022; see DESIGN.md).
PAPER_PROMPT_TOKENS = 127
PAPER_SEEDS = 5
PAPER_PERTURBATION = {"mode": "noise", "positions": "all", "scope": "per_layer"}
PAPER_LABEL_WORD_DRAWS = 5
PAPER_KEEP_SHARE, PAPER_LAYER_SHARE = 0.02, 0.75
PAPER_AUX_PROMPT_TOKENS = 20  # Zhao, Wang et al.: 20 soft tokens after the instruction


@dataclass(frozen=True)
class Measured:
    """One measurement of ours: mean and sd over seeds (or over tasks or pairs, as `note` says).

    mean None: not measured although the stage ran (note says why). n: how many values the mean is over.
    note: shown in the 'ours' cell after the number; settings: shown under 'settings that differ'.
    """

    mean: float | None
    sd: float | None
    n: int
    unit: str
    note: str = ""
    settings: str = ""

    def __str__(self) -> str:
        if self.mean is None:
            return f"not measured: {self.note}" if self.note else "not measured"
        text = format_number(self.mean, self.unit)
        if self.sd is not None and not math.isnan(self.sd):
            text += f" ± {self.sd:.{DECIMALS.get(self.unit, 2)}f}"
        if self.n:
            text += f" (n={self.n})"
        return f"{text}; {self.note}" if self.note else text


class ClaimsError(ValueError):
    """A malformed entry of the claims file: the message names the entry and the field."""


def format_number(value: float, unit: str) -> str:
    """A value in its unit: 91.6 (%, points: one decimal), 1.34x, 0.87 (a correlation or a ratio: two)."""
    text = f"{value:.{DECIMALS.get(unit, 2)}f}"
    return text + "x" if unit == "x" else text


# ---------------------------------------------------------------- claims


def load_claims(path: str | Path) -> list[dict[str, Any]]:
    """The claims of a YAML file (a list, or a mapping with a `claims` list), each entry checked."""
    data = yaml.safe_load(Path(path).read_text())
    entries = data.get("claims") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ClaimsError(f"{path}: expected a list of claims (or a mapping with a 'claims' list)")
    return validate_claims(entries, source=str(path))


def validate_claims(entries: Sequence[Any], source: str = "claims") -> list[dict[str, Any]]:
    """The entries as dicts with every optional field present (None where absent); a ClaimsError otherwise."""
    claims, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"{source}: entry {index + 1}"
        if not isinstance(entry, dict):
            raise ClaimsError(f"{where}: expected a mapping, got {type(entry).__name__}")
        if isinstance(entry.get("id"), str) and entry["id"].strip():
            where += f" ({entry['id']})"
        for field in REQUIRED:
            if field not in entry:
                raise ClaimsError(f"{where}: field '{field}' is missing")
        for field in ("id", "claim", "paper", "reference"):
            if not isinstance(entry[field], str) or not entry[field].strip():
                raise ClaimsError(f"{where}: field '{field}' must be a non-empty string, got {entry[field]!r}")
        value = entry["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ClaimsError(f"{where}: field 'value' must be a number or null, got {value!r}")
        for field in OPTIONAL:
            if entry.get(field) is not None and not isinstance(entry[field], str):
                raise ClaimsError(f"{where}: field '{field}' must be a string, got {entry[field]!r}")
        unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise ClaimsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if entry.get("unit") is not None and entry["unit"] not in UNITS:
            raise ClaimsError(f"{where}: field 'unit' must be one of {UNITS}, got {entry['unit']!r}")
        if entry["id"] in seen:
            raise ClaimsError(f"{where}: field 'id' repeats an earlier entry's")
        seen.add(entry["id"])
        claims.append({**{field: None for field in OPTIONAL}, **entry})
    return claims


# ---------------------------------------------------------------- the table


def reproduction_table(
    claims: Sequence[Mapping[str, Any]],
    ours: Mapping[str, Measured],
    model: str,
    differences: Mapping[str, str] | None = None,
    keep_empty: bool = True,
) -> pd.DataFrame:
    """One row per claim: the paper's number with its reference, ours, our model and the settings that differ.

    `differences` maps a claim id, or a prefix of ids at a dot ('fig4', 'table1.sst2'; '' for every claim), to
    the settings of ours that differ from the paper's; every matching key applies, the shortest first ('' repeats
    on every measured row: settings common to all may go in the report's text instead). A claim
    without a measurement reads "not run". keep_empty False drops the rows with neither a paper number nor ours.
    """
    differences = differences or {}
    rows = []
    for claim in claims:
        measured = ours.get(claim["id"])
        if not keep_empty and measured is None and claim["value"] is None:
            continue
        rows.append(
            {
                "claim": claim["claim"],
                "reference": claim["reference"],
                "paper": claim["paper"],
                "paper value": paper_value(claim),
                "ours": NOT_RUN if measured is None else str(measured),
                "model": model,
                "settings that differ": "" if measured is None else differing(claim, measured, model, differences),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def paper_value(claim: Mapping[str, Any]) -> str:
    if claim["value"] is None:
        return f"— ({claim['note']})" if claim.get("note") else "—"
    return format_number(float(claim["value"]), claim.get("unit") or "")


def differing(claim: Mapping[str, Any], measured: Measured, model: str, differences: Mapping[str, str]) -> str:
    parts = []
    if claim.get("model") and claim["model"].lower() != model.lower():
        parts.append(f"the paper's model: {claim['model']}")
    keys = sorted((k for k in differences if matches(claim["id"], k)), key=len)
    parts += [differences[k] for k in keys if differences[k]]
    if measured.settings:
        parts.append(measured.settings)
    pieces = [piece for part in parts for piece in part.split("; ")]
    return "; ".join(dict.fromkeys(pieces))  # a setting named twice (by the config and by a table) once


def matches(claim_id: str, key: str) -> bool:
    """Whether `key` is the claim id, a prefix of it at a dot, or '' (every claim)."""
    return key == "" or claim_id == key or claim_id.startswith(key + ".")


def unclaimed(claims: Iterable[Mapping[str, Any]], ours: Mapping[str, Measured]) -> list[str]:
    """Measurement ids that no claim asks for (a task named otherwise than in the claims file, say)."""
    ids = {c["id"] for c in claims}
    return sorted(k for k in ours if k not in ids)


def reproduction_markdown(table: pd.DataFrame, title: str = "") -> str:
    """The table as Markdown ('|' inside a cell escaped), under an optional heading."""
    escaped = table.map(lambda v: str(v).replace("|", "\\|"))
    heading = f"## {title}\n\n" if title else ""
    legend = (
        "paper value '—': no number read from the paper (see the claim). ours: mean ± sd (n = seeds, tasks or "
        "pairs, as the cell says); 'not run': the stage or task is not in this config.\n\n"
    )
    return heading + legend + markdown_table(escaped)


# ---------------------------------------------------------------- extractors


def stats(values: Sequence[float]) -> tuple[float, float | None, int]:
    """Mean, sample sd (None for a single value) and count."""
    series = pd.Series(list(values), dtype=float).dropna()
    sd = float(series.std(ddof=1)) if len(series) > 1 else None
    return float(series.mean()), sd, len(series)


def table1_measured(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Measured]:
    """Per task (rank_neurons' summary.json): prompt-tuning and top-1 neuron test accuracy, in %, over seeds."""
    ours = {}
    for s in summaries:
        task = s["task"]
        for key, name in (("prompt", "prompt_tuning"), ("top1", "top1_neuron")):
            mean, sd, n = stats([100 * v for v in s[f"per_seed_{key}_accuracy"]])
            ours[f"table1.{task}.{name}"] = Measured(mean, sd, n, "%")
    return ours


PERCENT = re.compile(r"^\s*(-?[\d.]+)\s*(?:±\s*([\d.]+))?\s*(?:\(n=(\d+)\))?\s*$")


def trial_count(text: Any) -> int | None:
    """The k of a 'mean ± sd (n=k)' cell, None where the cell does not say."""
    match = PERCENT.match(str(text))
    return int(match.group(3)) if match and match.group(3) else None


def parse_mean_sd(text: Any) -> tuple[float | None, float | None]:
    """'76.0' -> (76.0, None); '76.0 ± 1.2' -> (76.0, 1.2); a number as itself; '' or None -> (None, None)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None, None
    if isinstance(text, (int, float)):
        return float(text), None
    match = PERCENT.match(str(text))
    if not match:
        raise ValueError(f"not a 'mean' or 'mean ± sd' value: {text!r}")
    return float(match.group(1)), None if match.group(2) is None else float(match.group(2))


NOT_CONTROLS = ("task", "random guess (%)", "majority class (%)", "tuned prompt (%)")  # chance, Table 1's neuron


def controls_measured(table: pd.DataFrame, seeds: int | None = None) -> dict[str, Measured]:
    """Per task and control (controls.parquet, columns '<control> (%)'): table3.<task>.<control_name>.

    A cell is '76.0' (one trial) or '76.0 ± 1.2' (over `seeds` trials; n is left out when seeds is None).
    """
    ours = {}
    for row in table.to_dict("records"):
        for column, cell in row.items():
            if column in NOT_CONTROLS or not column.endswith(" (%)"):
                continue
            mean, sd = parse_mean_sd(cell)
            if mean is None:
                continue
            n = 1 if sd is None else (trial_count(cell) or seeds or 0)
            ours[f"table3.{row['task']}.{column[: -len(' (%)')].replace(' ', '_')}"] = Measured(mean, sd, n, "%")
    return ours


def perturbation_measured(table: pd.DataFrame, rate: float = 0.15, mode: str | None = None) -> dict[str, Measured]:
    """Per task (sweep_summary's table): accuracy drop at the rate nearest `rate`, own order and random order.

    The mode is `mode`, else the paper's ('noise') where present, else the first in the table. The drop is the
    mean over seeds in points (the table keeps no sd of the drop); the settings name the mode, rate, positions
    and scope where they are not the paper's.
    """
    if table.empty:
        return {}
    modes = list(dict.fromkeys(table["mode"]))
    chosen = mode if mode is not None else PAPER_PERTURBATION["mode"] if "noise" in modes else modes[0]
    part = table[table["mode"] == chosen]
    ours = {}
    for task, rows in part.groupby("task", sort=False):
        rates = sorted(rows["rate"].unique())
        nearest = min(rates, key=lambda r: (abs(r - rate), r))
        at = rows[rows["rate"] == nearest]
        settings = [f"mode {chosen}"] if chosen != PAPER_PERTURBATION["mode"] else []
        if not math.isclose(nearest, rate):
            settings.append(f"rate {nearest:.0%} (nearest to {rate:.0%})")
        for column in ("positions", "scope"):
            if column in at.columns and at[column].iloc[0] != PAPER_PERTURBATION[column]:
                settings.append(f"{column} {at[column].iloc[0]}")
        for order, name in ((task, "own_drop"), (RANDOM_ORDER, "random_drop")):
            row = at[at["order"] == order]
            if row.empty:
                continue
            r = row.iloc[0]
            note = f"accuracy after it {100 * r['accuracy']:.1f}"
            if pd.notna(r.get("accuracy_sd")):
                note += f" ± {100 * r['accuracy_sd']:.1f}"
            ours[f"fig4.{task}.{name}"] = Measured(
                float(r["drop (points)"]), None, int(r["seeds"]), "points", note, "; ".join(settings)
            )
    return ours


def specificity_measured(
    table: pd.DataFrame, task_types: Mapping[str, str], at_chance: Sequence[str] = ()
) -> dict[str, Measured]:
    """Mean Spearman (within layers, averaged over layers) over same-type and over cross-type task pairs.

    `table` is specificity_summary's (task_a, task_b, spearman_layer_mean, ...) or order_correlation's (with a
    layer column), which is summarised first. Pairs of a task with itself, tasks without a type, and tasks at
    chance (`at_chance`: their prompt found no skill to compare) are left out.
    """
    if "spearman_layer_mean" not in table.columns:
        table = specificity_summary(table)
    typed = [task for task in task_types if task not in at_chance]
    pairs = table[(table["task_a"] != table["task_b"])]
    pairs = pairs[pairs["task_a"].isin(typed) & pairs["task_b"].isin(typed)]
    left_out = f"; left out at chance: {', '.join(sorted(at_chance))}" if len(at_chance) else ""
    same = pairs["task_a"].map(task_types) == pairs["task_b"].map(task_types)
    ours = {}
    for name, part in (("same_type", pairs[same]), ("cross_type", pairs[~same])):
        if part.empty:
            note = f"no {name.replace('_', '-')} pair of tasks{left_out}"
            ours[f"fig5.{name}_spearman"] = Measured(None, None, 0, "", note)
            continue
        mean, sd, n = stats(part["spearman_layer_mean"])
        note = "n = task pairs"
        if len(part) <= 6:
            note += ": " + ", ".join(
                f"{a}/{b} {v:.2f}" for a, b, v in part[["task_a", "task_b", "spearman_layer_mean"]].values
            )
        ours[f"fig5.{name}_spearman"] = Measured(mean, sd, n, "", note + left_out)
    return ours


def label_words_measured(table: pd.DataFrame) -> dict[str, Measured]:
    """Spearman of the random-label-word orders with the original words' order (label_words.parquet).

    One task: its mean over draws (n = draws). Several: the mean over tasks ± sd over tasks (n = tasks).
    """
    if table.empty:
        return {}
    column = "spearman with original (mean)"
    details = ", ".join(
        f"{r['task']} {r[column]:.2f} (min {r['spearman with original (min)']:.2f}, {r['draws']} draws)"
        for r in table.to_dict("records")
    )
    if len(table) == 1:
        r = table.iloc[0]
        return {"sec4_4.label_words_spearman": Measured(float(r[column]), None, int(r["draws"]), "", details)}
    mean, sd, n = stats(table[column])
    return {"sec4_4.label_words_spearman": Measured(mean, sd, n, "", f"n = tasks: {details}")}


TRANSFER_CLAIMS = {
    "overlap_all": "sec6_2.transferability_all_neurons",
    "overlap_skill": "sec6_2.transferability_skill_neurons",
}


def transferability_measured(correlations: pd.DataFrame) -> dict[str, Measured]:
    """The Spearman of each overlap indicator with the transfer accuracy (transferability_spearman.parquet).

    The claim reads the pairs of tasks above chance where the table has them (tasks "above chance"), with the
    value over all pairs in the note; n = task pairs; below 3 the Spearman is undefined and the cell says why.
    """
    if "tasks" not in correlations.columns:
        correlations = correlations.assign(tasks="all")
    ours = {}
    for indicator, rows in correlations.groupby("indicator", sort=False):
        by_tasks = rows.set_index("tasks")
        row = by_tasks.loc["above chance" if "above chance" in by_tasks.index else "all"]
        claim, pairs = TRANSFER_CLAIMS[indicator], int(row["pairs"])
        scope = "task pairs that share label words" + (", both tasks above chance" if row.name != "all" else "")
        extra = ""
        if row.name != "all":
            everything = by_tasks.loc["all"]
            extra = f"; over all {int(everything['pairs'])} pairs {everything['spearman']:.2f}"
        if math.isnan(row["spearman"]):
            note = f"{pairs} {scope}; a Spearman over pairs needs at least 3{extra}"
            ours[claim] = Measured(None, None, pairs, "", note)
        else:
            ours[claim] = Measured(float(row["spearman"]), None, pairs, "", f"n = {scope}{extra}")
    return ours


def parse_speedup(text: Any) -> float | None:
    """'1.63x (1.46-1.72)' or '1.00x' -> the speedup; '' or NaN -> None."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    match = re.match(r"^\s*([\d.]+)x", str(text))
    if not match:
        raise ValueError(f"not a speedup like '1.63x (1.46-1.72)': {text!r}")
    return float(match.group(1))


SKILL_NEURONS, SKELETON = "skill_neurons", "skeleton"
ONE_SEED = "one seed's prompt per task"


def pruning_measured(
    table: pd.DataFrame, skeleton_metrics: Mapping[str, Mapping[str, Any]] | None = None, dtype: str = "float32"
) -> dict[str, Measured]:
    """Table 4 and SKELETON from pruning.parquet (one seed per task) and SKELETON's metrics.json per task.

    Per task: the skill-neuron model's test accuracy (table4.<task>.accuracy). Over tasks: parameters kept and
    speedup of the skill-neuron model, SKELETON's keep ratio (metrics.json, else 'FFN neurons kept (%)'), its
    accuracy change and its speedup, the best over tasks as the paper's "at most". Speedups in `dtype`.
    """
    ours: dict[str, Measured] = {}
    skill = table[table["method"] == SKILL_NEURONS]
    skeleton = table[table["method"] == SKELETON]
    column = f"speedup {dtype}"
    for r in skill.to_dict("records"):
        change = r.get("change (points)", "")
        note = f"{change} points vs dense prompt tuning" if change not in ("", None) else ""
        ours[f"table4.{r['task']}.accuracy"] = Measured(float(r["test acc (%)"]), None, 1, "%", note)
    if not skill.empty:
        mean, sd, n = stats(skill["parameters kept (%)"])
        ours["table4.parameters_kept"] = Measured(mean, sd, n, "%", "n = tasks")
        speedup = speedups(skill, column)
        if speedup:
            mean, sd, n = stats(list(speedup.values()))
            ours["table4.speedup"] = Measured(mean, sd, n, "x", "n = tasks: " + per_task(speedup, "x"), dtype)
    if not skeleton.empty:
        if skeleton_metrics:
            ratios = {t: float(m["keep_ratio"]) for t, m in skeleton_metrics.items()}
        else:
            ratios = dict(zip(skeleton["task"], skeleton["FFN neurons kept (%)"] / 100))
        mean, sd, n = stats(list(ratios.values()))
        ours["skeleton.keep_ratio"] = Measured(mean, sd, n, "", "n = tasks: " + per_task(ratios, ""), ONE_SEED)
        changes = {
            t: float(c)
            for t, c in zip(skeleton["task"], skeleton["change (points)"])
            if str(c).strip() not in ("", "nan")
        }
        if changes:
            mean, sd, n = stats(list(changes.values()))
            ours["skeleton.accuracy_change"] = Measured(
                mean, sd, n, "points", "n = tasks: " + per_task(changes, "points"), ONE_SEED
            )
        speedup = speedups(skeleton, column)
        if speedup:
            best = max(speedup, key=speedup.get)
            ours["skeleton.speedup"] = Measured(
                speedup[best],
                None,
                len(speedup),
                "x",
                f"best of {len(speedup)} tasks ({best}): " + per_task(speedup, "x"),
                dtype,
            )
    return ours


def speedups(rows: pd.DataFrame, column: str) -> dict[str, float]:
    if column not in rows.columns:
        return {}
    values = {t: parse_speedup(v) for t, v in zip(rows["task"], rows[column])}
    return {t: v for t, v in values.items() if v is not None}


def per_task(values: Mapping[str, float], unit: str) -> str:
    return ", ".join(f"{t} {format_number(v, unit)}" for t, v in values.items())


def aux_thresholds(thresholds: pd.DataFrame, claims: Mapping[tuple[str, str], str], k: int) -> dict[str, Measured]:
    """The top-k threshold (the k-th largest |r|) of each claimed (task, metric), mean ± sd over seeds.

    `thresholds` has columns task, metric, seed, threshold (aux_metrics_table); `claims` maps (task, metric
    label) to the claim's name: aux.<name>.top<k>_threshold.
    """
    ours = {}
    for (task, metric), name in claims.items():
        values = thresholds.loc[(thresholds["task"] == task) & (thresholds["metric"] == metric), "threshold"]
        if values.empty:
            continue
        ours[f"aux.{name}.top{k}_threshold"] = Measured(
            float(values.mean()),
            float(values.std()) if len(values) > 1 else None,
            len(values),
            "",
            f"{task}: |Pearson r| with {metric}",
        )
    return ours


def measure_all(
    table1: Iterable[Mapping[str, Any]] | None = None,
    controls: pd.DataFrame | None = None,
    control_seeds: int | None = None,
    perturbation: pd.DataFrame | None = None,
    specificity: pd.DataFrame | None = None,
    task_types: Mapping[str, str] | None = None,
    label_words: pd.DataFrame | None = None,
    pruning: pd.DataFrame | None = None,
    skeleton_metrics: Mapping[str, Mapping[str, Any]] | None = None,
    aux_thresholds_table: pd.DataFrame | None = None,
    aux_claims: Mapping[tuple[str, str], str] | None = None,
    aux_k: int = 10,
    transferability: pd.DataFrame | None = None,
    at_chance: Sequence[str] = (),
) -> dict[str, Measured]:
    """Every extractor over what ran (None: that stage is not in the config, its claims read "not run").

    `at_chance`: tasks whose tuned prompt is at chance, left out of the task-similarity claims."""
    ours: dict[str, Measured] = {}
    if table1 is not None:
        ours |= table1_measured(table1)
    if controls is not None:
        ours |= controls_measured(controls, control_seeds)
    if perturbation is not None:
        ours |= perturbation_measured(perturbation)
    if specificity is not None and task_types:
        ours |= specificity_measured(specificity, task_types, at_chance)
    if label_words is not None:
        ours |= label_words_measured(label_words)
    if pruning is not None:
        ours |= pruning_measured(pruning, skeleton_metrics)
    if aux_thresholds_table is not None and aux_claims:
        ours |= aux_thresholds(aux_thresholds_table, aux_claims, aux_k)
    if transferability is not None:
        ours |= transferability_measured(transferability)
    return ours


def precision_difference(precision: str | None) -> str | None:
    """`prompt.precision` where it is not the papers' fp32 ('auto' names its rule: it depends on the hardware)."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return "bf16 autocast (papers fp32)"
    return "bf16 autocast on a GPU or a CPU with a bf16 unit, else fp32 (prompt.precision auto; papers fp32)"


def aux_settings_differences(
    n_tokens: int, seeds: int, data_caps: Mapping[str, int], precision: str | None = None
) -> dict[str, str]:
    """`differences` for the auxiliary-metric claims (aux.*): prompt length against the paper's 20, seeds, caps."""
    general = (
        [] if n_tokens == PAPER_AUX_PROMPT_TOKENS else [f"{n_tokens} prompt tokens (paper {PAPER_AUX_PROMPT_TOKENS})"]
    )
    general.append(f"mean over {seeds} prompt seeds" if seeds > 1 else "one prompt seed")
    general.append("examples capped: " + ", ".join(f"{split} ≤ {cap}" for split, cap in data_caps.items()))
    if precision_note := precision_difference(precision):
        general.append(precision_note)
    return {"aux": "; ".join(general)}


def settings_differences(
    n_tokens: int | None = None,
    seeds: int | None = None,
    data_caps: Mapping[str, int | None] | None = None,
    perturbation_positions: str | None = None,
    perturbation_scope: str | None = None,
    perturbation_examples: int | None = None,
    label_word_draws: int | None = None,
    keep_share: float | None = None,
    layer_share: float | None = None,
    speed_reference: Mapping[str, int] | None = None,
    precision: str | None = None,
) -> dict[str, str]:
    """`differences` for `reproduction_table` from plain config values: those that are not the paper's.

    data_caps: e.g. {'train': 240, 'dev': 160, 'test': 200} (None: the full split); speed_reference: the
    benchmark's {'batch': 8, 'length': 64}; perturbation_examples: `perturbation.max_examples`, named where it
    is below the test split's cap. An argument left None adds nothing.
    """
    general = []
    if n_tokens is not None and n_tokens != PAPER_PROMPT_TOKENS:
        general.append(f"{n_tokens} prompt tokens (paper {PAPER_PROMPT_TOKENS})")
    if seeds is not None and seeds != PAPER_SEEDS:
        general.append(f"{seeds} seeds (paper {PAPER_SEEDS})")
    caps = [f"{split} ≤ {cap}" for split, cap in (data_caps or {}).items() if cap is not None]
    if caps:
        general.append("examples capped: " + ", ".join(caps))
    if precision_note := precision_difference(precision):
        general.append(precision_note)
    differences = {"": "; ".join(general)} if general else {}
    perturbation = []
    if perturbation_positions is not None and perturbation_positions != PAPER_PERTURBATION["positions"]:
        perturbation.append(f"positions {perturbation_positions}")
    if perturbation_scope is not None and perturbation_scope != PAPER_PERTURBATION["scope"]:
        perturbation.append(f"scope {perturbation_scope}")
    test_cap = (data_caps or {}).get("test")
    if perturbation_examples is not None and (test_cap is None or perturbation_examples < test_cap):
        perturbation.append(f"each sweep point on the first {perturbation_examples} test examples")
    if perturbation:
        differences["fig4"] = "; ".join(perturbation)
    if label_word_draws is not None and label_word_draws != PAPER_LABEL_WORD_DRAWS:
        differences["sec4_4"] = f"{label_word_draws} draws (paper {PAPER_LABEL_WORD_DRAWS})"
    pruning = []
    if keep_share is not None and not math.isclose(keep_share, PAPER_KEEP_SHARE):
        pruning.append(f"top {keep_share:.0%} of each layer kept (paper {PAPER_KEEP_SHARE:.0%})")
    if layer_share is not None and not math.isclose(layer_share, PAPER_LAYER_SHARE):
        pruning.append(f"top {layer_share:.0%} of layers pruned (paper 9 of 12)")
    if pruning:
        differences["table4"] = "; ".join(pruning)
    if speed_reference:
        timing = f"timed at batch {speed_reference['batch']} x length {speed_reference['length']}"
        differences["table4.speedup"] = timing
        differences["skeleton.speedup"] = timing
    return differences
