"""Auxiliary metrics of Zhao, Wang et al. (2025): rank neurons by a per-example metric and read them.

A metric gives one number per validation example: the model's `loss` on the completion, its
`confidence`, a data column (numeric, or compared with a value: `heuristic == lexical_overlap`), or a
named function of the example (`EXAMPLE_FUNCTIONS`). Every neuron is scored by
    corr = max over prompt positions p of |pearson(a(p, .), metric)|
over the validation examples, neurons are ordered by it, and the K-th value of that order is the
paper's threshold (top 10: HANS 0.43, arithmetic 0.93, Skill-Mix 0.83). A top neuron is read from the
examples that activate it most and least at its best position (§2.2 step 4).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .activation_store import LayerActivations
from .ranking import best_correlation, order_by_score

MODEL_METRICS = ("loss", "confidence")
MULTIPLICATION = re.compile(r"What is (-?\d+) times (-?\d+)\?")  # BIG-bench arithmetic's only phrasing


def last_digit_shortcut(inputs: str, targets: Sequence[str] | str, choices: Sequence[str]) -> bool:
    """True iff `inputs` asks "What is A times B?" and the gold answer is the only choice ending in A*B's last digit."""
    match = MULTIPLICATION.fullmatch(inputs.strip())
    if match is None:
        return False
    digit = str(abs(int(match[1]) * int(match[2])))[-1]
    ending = [str(c).strip() for c in choices if str(c).strip().endswith(digit)]
    gold = {targets.strip()} if isinstance(targets, str) else {str(t).strip() for t in targets}
    return len(ending) == 1 and ending[0] in gold


def multiplication(inputs: str) -> bool:
    """True iff `inputs` is a BIG-bench arithmetic multiplication question (a skill label: which operation)."""
    return MULTIPLICATION.fullmatch(inputs.strip()) is not None


@dataclass(frozen=True)
class ExampleFunction:
    """A named metric computed from some columns of one example, passed in this order."""

    columns: tuple[str, ...]
    compute: Callable[..., bool | float]


EXAMPLE_FUNCTIONS: dict[str, ExampleFunction] = {
    "last_digit_shortcut": ExampleFunction(("inputs", "targets", "multiple_choice_targets"), last_digit_shortcut),
    "multiplication": ExampleFunction(("inputs",), multiplication),
}


@dataclass(frozen=True)
class MetricSpec:
    """One auxiliary metric: kind 'loss', 'confidence', 'column' (name, optionally == equals) or 'function'."""

    kind: str
    name: str
    equals: str | int | float | bool | None = None

    @classmethod
    def parse(cls, value: str | Mapping[str, object]) -> MetricSpec:
        """From config: "loss", "confidence", {"column": c}, {"column": c, "equals": v} or {"function": f}."""
        if isinstance(value, str):
            if value in MODEL_METRICS:
                return cls(kind=value, name=value)
            raise ValueError(f"metric {value!r}: a string metric is one of {MODEL_METRICS}; see MetricSpec.parse")
        keys = set(value)
        if keys == {"function"}:
            name = str(value["function"])
            if name not in EXAMPLE_FUNCTIONS:
                raise ValueError(f"metric function {name!r} is not one of {sorted(EXAMPLE_FUNCTIONS)}")
            return cls(kind="function", name=name)
        if keys in ({"column"}, {"column", "equals"}):
            equals = value.get("equals")
            if "equals" in value and equals is None:
                raise ValueError(f"metric {dict(value)}: 'equals' needs a value to compare the column with")
            return cls(kind="column", name=str(value["column"]), equals=equals)
        raise ValueError(
            f"metric {dict(value)}: expected {{'column': c}}, {{'column': c, 'equals': v}} or {{'function': f}}"
        )

    @property
    def label(self) -> str:
        """How the metric is named in messages and column names: 'loss', 'x', 'heuristic == lexical_overlap'."""
        return self.name if self.equals is None else f"{self.name} == {self.equals}"


def _raw_values(spec: MetricSpec, examples: pd.DataFrame, model_metrics: pd.DataFrame | None) -> np.ndarray:
    if spec.kind in MODEL_METRICS:
        if model_metrics is None:
            raise ValueError(f"metric {spec.label!r} needs the model's per-example metrics (model_metrics)")
        return model_metrics[spec.kind].to_numpy(np.float64)
    if spec.kind == "function":
        function = EXAMPLE_FUNCTIONS[spec.name]
        missing = [c for c in function.columns if c not in examples.columns]
        if missing:
            raise ValueError(f"metric {spec.label!r} needs the example columns {missing}")
        rows = zip(*(examples[c] for c in function.columns))
        return np.array([float(function.compute(*row)) for row in rows], dtype=np.float64)
    if spec.name not in examples.columns:
        raise ValueError(f"metric {spec.label!r}: the examples have no column {spec.name!r}")
    column = examples[spec.name]
    if spec.equals is not None:
        return (column == spec.equals).to_numpy(np.float64)
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raise ValueError(
            f"metric {spec.label!r}: column {spec.name!r} is not numeric; compare it with a value"
            f" ({{'column': {spec.name!r}, 'equals': ...}})"
        )
    return column.to_numpy(np.float64)


def metric_values(
    spec: MetricSpec, examples: pd.DataFrame, model_metrics: pd.DataFrame | None = None, split: str = "validation"
) -> np.ndarray:
    """The metric of each example (float, N). Row i of `examples` and of `model_metrics` is the same example.

    A metric that is constant or not finite on the split cannot rank neurons (every |r| would be 0 or
    nan): ValueError naming it.
    """
    if model_metrics is not None:
        if len(model_metrics) != len(examples):
            raise ValueError(f"{len(examples)} examples but {len(model_metrics)} rows of model metrics")
        if "example" in examples and "example" in model_metrics:
            if not np.array_equal(examples["example"].to_numpy(), model_metrics["example"].to_numpy()):
                raise ValueError("examples and model metrics are not in the same example order")
    values = _raw_values(spec, examples, model_metrics)
    if not np.isfinite(values).all():
        raise ValueError(f"metric {spec.label!r} is not finite on {np.sum(~np.isfinite(values))} {split} examples")
    if len(values) == 0 or np.all(values == values[0]):
        constant = values[0] if len(values) else "no examples"
        raise ValueError(f"metric {spec.label!r} is constant ({constant}) on the {split} split: it cannot rank neurons")
    return values


def with_metric_columns(
    examples: pd.DataFrame,
    specs: Sequence[MetricSpec],
    model_metrics: pd.DataFrame | None = None,
    split: str = "validation",
) -> pd.DataFrame:
    """`examples` with one column per metric, named by its label, for reading neurons next to their metrics."""
    columns = {spec.label: metric_values(spec, examples, model_metrics, split) for spec in specs}
    return examples.assign(**columns)


def rank_by_metric(layers: Iterable[tuple[int, LayerActivations]], metric: np.ndarray) -> pd.DataFrame:
    """Every neuron's max over prompt positions of |pearson| with `metric`, in decreasing order.

    `layers` yields (layer index, `read_layer` output); `metric` (N,) follows their example order, which
    every layer must share. Columns: layer, neuron, corr, position (the best one), rank (1 = highest;
    ties: lower layer, then lower neuron first).
    """
    metric = np.asarray(metric, dtype=np.float64)
    frames, first_examples = [], None
    for layer, acts in layers:
        if first_examples is None:
            first_examples = acts.examples
        elif not np.array_equal(acts.examples, first_examples):
            raise ValueError(f"layer {layer} holds other examples than the first layer")
        if acts.prompt.shape[0] != len(metric):
            raise ValueError(f"layer {layer} has {acts.prompt.shape[0]} examples but the metric {len(metric)}")
        corr, position = best_correlation(acts.prompt, metric)
        frames.append(
            pd.DataFrame({"layer": layer, "neuron": np.arange(len(corr)), "corr": corr, "position": position})
        )
    table = pd.concat(frames, ignore_index=True).sort_values(["layer", "neuron"], ignore_index=True)
    table = table.iloc[order_by_score(table["corr"].to_numpy())].reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table


def top_neurons(ranking: pd.DataFrame, k: int = 10) -> tuple[pd.DataFrame, float]:
    """The first k rows of `rank_by_metric`'s table, and the threshold: the k-th neuron's corr."""
    if len(ranking) < k:
        raise ValueError(f"top {k} asked of {len(ranking)} neurons")
    top = ranking.sort_values("rank").head(k).reset_index(drop=True)
    return top, float(top["corr"].iloc[-1])


def activations_at_best_position(top: pd.DataFrame, layers: Iterable[tuple[int, LayerActivations]]) -> pd.DataFrame:
    """Each top neuron's activation at its best position: index example id, one column per rank.

    Streams `layers` (as `rank_by_metric` takes them), keeping only the top neurons' columns.
    """
    columns: dict[int, np.ndarray] = {}
    index = None
    for layer, acts in layers:
        if index is None:
            index = acts.examples
        elif not np.array_equal(acts.examples, index):
            raise ValueError(f"layer {layer} holds other examples than the first layer")
        for row in top[top["layer"] == layer].itertuples():
            columns[int(row.rank)] = acts.prompt[:, int(row.position), int(row.neuron)]
    missing = sorted(set(top["rank"].astype(int)) - set(columns))
    if missing:
        raise ValueError(f"no activations for the neurons ranked {missing}: their layers were not given")
    return pd.DataFrame(columns, index=pd.Index(index, name="example"))[top["rank"].astype(int).tolist()]


def extreme_positions(values: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Indices of the n highest values (highest first) and the n lowest (lowest first); ties keep index order."""
    values = np.asarray(values)
    return {
        "highest": np.argsort(-values, kind="stable")[:n],
        "lowest": np.argsort(values, kind="stable")[:n],
    }


def extreme_examples(top: pd.DataFrame, activations: pd.DataFrame, examples: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """For each top neuron, the n examples it activates most and least, with the examples' columns joined.

    `activations` is `activations_at_best_position`'s frame; `examples` has an `example` column (and
    any text and metric columns, e.g. from `with_metric_columns`). Rows: layer, neuron, rank, position,
    side ('highest' / 'lowest'), order (1 = most extreme), example, activation, then the examples' columns.
    """
    keyed = examples.set_index("example")
    missing = sorted(set(activations.index) - set(keyed.index))
    if missing:
        raise ValueError(f"{len(missing)} activated examples are not in the examples frame, e.g. {missing[:5]}")
    parts = []
    for neuron in top.itertuples():
        values = activations[int(neuron.rank)]
        for side, picked in extreme_positions(values.to_numpy(), n).items():
            ids = values.index.to_numpy()[picked]
            rows = pd.DataFrame(
                {
                    "layer": neuron.layer,
                    "neuron": neuron.neuron,
                    "rank": neuron.rank,
                    "position": neuron.position,
                    "side": side,
                    "order": np.arange(1, len(picked) + 1),
                    "example": ids,
                    "activation": values.to_numpy()[picked],
                }
            )
            parts.append(pd.concat([rows, keyed.loc[ids].reset_index(drop=True)], axis=1))
    return pd.concat(parts, ignore_index=True)


def permutation_counts(flags: np.ndarray, k: int, draws: int = 10_000, seed: int = 0) -> np.ndarray:
    """Flagged examples among k drawn without replacement, in each of `draws` draws (the null distribution)."""
    flags = np.asarray(flags, dtype=bool)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // max(len(flags), 1))  # bounds the shuffled copies to a few MB
    counts = []
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        # each row is an independent shuffle; its first k entries are k examples drawn without replacement
        counts.append(rng.permuted(np.tile(flags, (size, 1)), axis=1)[:, :k].sum(1))
    return np.concatenate(counts)


def p_value_from_counts(null_counts: np.ndarray, observed: int) -> float:
    """One-sided permutation p: (1 + #draws with count >= observed) / (1 + draws)."""
    return float((1 + np.sum(null_counts >= observed)) / (1 + len(null_counts)))


def permutation_p_value(flags: np.ndarray, k: int, observed: int, draws: int = 10_000, seed: int = 0) -> float:
    """One-sided p of `observed` flagged examples among k, from `draws` permutation draws with a fixed seed."""
    return p_value_from_counts(permutation_counts(flags, k, draws, seed), observed)


def hypergeometric_p_value(n_examples: int, n_flagged: int, k: int, observed: int) -> float:
    """Exact P(X >= observed) for X ~ Hypergeometric(n_examples, n_flagged, k): the permutation p's limit."""
    from scipy.stats import hypergeom  # scipy.stats takes a second to import; only this cross-check needs it

    return float(hypergeom.sf(observed - 1, n_examples, n_flagged, k))


def shortcut_statistics(
    activation: np.ndarray, flags: np.ndarray, k: int = 10, draws: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Is a flag (e.g. `last_digit_shortcut`) over-represented among one neuron's k lowest and k highest examples?

    Rows side 'lowest' / 'highest': k, count (flagged among them), base_rate (over the split),
    expected (k * base_rate), p_permutation (`permutation_p_value`), p_hypergeometric (exact).
    """
    flags = np.asarray(flags, dtype=bool)
    if len(flags) != len(activation):
        raise ValueError(f"{len(activation)} activations but {len(flags)} flags")
    base_rate = float(flags.mean())
    null_counts = permutation_counts(flags, k, draws, seed)  # one null serves both sides
    rows = []
    extremes = extreme_positions(activation, k)
    for side in ("lowest", "highest"):  # the paper's shortcut sits among the lowest
        count = int(flags[extremes[side]].sum())
        rows.append(
            {
                "side": side,
                "k": k,
                "count": count,
                "base_rate": base_rate,
                "expected": k * base_rate,
                "p_permutation": p_value_from_counts(null_counts, count),
                "p_hypergeometric": hypergeometric_p_value(len(flags), int(flags.sum()), k, count),
            }
        )
    return pd.DataFrame(rows)


def causal_summary(rows: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Mean and sd (over seeds and draws) of `value` per group for the 'top' and 'random' perturbed sets.

    `rows` has columns seed, draw, group, perturbed ('top' / 'random') and `value`. One row per group:
    top_mean, top_sd, top_n, random_mean, random_sd, random_n, difference = top_mean - random_mean.
    """
    unknown = sorted(set(rows["perturbed"]) - {"top", "random"})
    if unknown:
        raise ValueError(f"perturbed sets must be 'top' or 'random', not {unknown}")
    stats = rows.groupby(["group", "perturbed"], sort=False)[value].agg(["mean", "std", "count"])
    wide = stats.unstack("perturbed")
    for perturbed in ("top", "random"):
        if perturbed not in wide.columns.get_level_values("perturbed"):
            raise ValueError(f"no {perturbed!r} rows: the difference top - random needs both")
        lacking = wide.index[wide[("count", perturbed)].isna()].tolist()
        if lacking:
            raise ValueError(f"groups {lacking} have no {perturbed!r} rows")
    summary = pd.DataFrame(index=wide.index)
    for perturbed in ("top", "random"):
        summary[f"{perturbed}_mean"] = wide[("mean", perturbed)]
        summary[f"{perturbed}_sd"] = wide[("std", perturbed)]
        summary[f"{perturbed}_n"] = wide[("count", perturbed)].astype(int)
    summary["difference"] = summary["top_mean"] - summary["random_mean"]
    return summary.reset_index()
