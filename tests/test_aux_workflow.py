"""The auxiliary-metrics stages as a workflow: a generation task on a tiny LLaMA, every rule, read back."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import save_tiny_model, write_mirror
from .test_workflow import snakemake, write_config

TOY_GENERATION = {
    "dataset": "toy",
    "validation_split": "validation",
    "instruction": "Review : {sentence} \n Sentiment :",
    "completion": "{answer}",
    "label_words": [" negative", " positive"],
    "metrics": ["loss", {"column": "label"}],
    "flag": {"column": "label", "equals": 1},
    "group_by": "label",
    "claims": {"loss": "bigbench_arithmetic"},
}


def aux_config(folder: Path) -> dict:
    return {
        "data_root": str(write_mirror(folder / "mirror")),
        "model_threads": 1,
        "models": {"tiny": {"path": str(save_tiny_model(folder / "tiny-llama", "llama")), "mem_mb": 500}},
        "seeds": [0],
        "tasks": {},
        "label_words": {"tasks": []},
        "pruning": {"tasks": []},
        "plots": {"bins": 8},
        "aux_metrics": {
            "seeds": [0, 1],
            "top_k": 10,
            "extremes": 2,
            "permutation_draws": 200,
            "data": {"max_train": 32, "max_dev": 12, "max_validation": 20},
            "prompt": {"n_tokens": 3, "lr": 0.05, "max_steps": 4, "eval_every": 2, "batch_size": 4},
            "causal": {"random_draws": 2},
            "tasks": {"toygen": TOY_GENERATION},
        },
    }


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("aux-run")
    write_config(aux_config(folder), folder / "aux.yaml")
    result = snakemake("--cores", "2", "--configfile", str(folder / "aux.yaml"), "--directory", str(folder))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_every_aux_rule_runs_and_its_outputs_read_back(aux_run):
    out = aux_run / "results" / "tiny"
    run = out / "aux" / "toygen" / "seed0"
    validation = pd.read_parquet(aux_run / "results" / "data" / "aux" / "toygen" / "validation.parquet")
    assert len(validation) == 20
    ranking = pd.read_parquet(run / "ranking" / "ranking.parquet")
    assert set(ranking["metric"]) == {"loss", "label"}
    loss_rank = ranking[ranking["metric"] == "loss"]
    assert loss_rank["rank"].tolist() == list(range(1, len(loss_rank) + 1))
    assert np.all(np.diff(loss_rank["corr"].to_numpy()) <= 0)  # ordered by |r|
    thresholds = json.loads((run / "ranking" / "thresholds.json").read_text())
    assert thresholds["thresholds"]["loss"] == pytest.approx(loss_rank["corr"].iloc[9])  # the 10th |r|
    interpretation = pd.read_parquet(run / "ranking" / "interpretation.parquet")
    # per metric, 10 neurons x (2 highest + 2 lowest) examples, with their text and metric values
    assert len(interpretation) == 2 * 10 * 4 and {"instruction", "completion", "loss", "label"} <= set(
        interpretation.columns
    )
    highest = interpretation[(interpretation["side"] == "highest") & (interpretation["metric"] == "loss")]
    assert (highest.groupby("rank")["activation"].apply(lambda a: a.is_monotonic_decreasing)).all()
    flags = pd.read_parquet(run / "ranking" / "flags.parquet")
    assert set(flags["side"]) == {"lowest", "highest"} and flags["base_rate"].iloc[0] == validation["label"].mean()
    causal = pd.read_parquet(run / "causal.parquet")
    assert sorted(set(causal["perturbed"])) == ["none", "random", "top"] and set(causal["group"]) == {
        "label == 1",
        "not label == 1",
    }
    assert causal.groupby("group")["n_examples"].first().sum() == 20
    table = (out / "tables" / "aux_metrics.md").read_text()
    assert "toygen" in table and "Causal test" in table
    reproduction = pd.read_parquet(out / "tables" / "aux_reproduction.parquet")
    arithmetic = reproduction[reproduction["claim"].str.startswith("BIG-bench arithmetic")].iloc[0]
    seeds = pd.read_parquet(out / "tables" / "aux_thresholds.parquet").query("metric == 'loss'")["threshold"]
    assert arithmetic["paper value"] == "0.93" and arithmetic["ours"].startswith(f"{seeds.mean():.2f} ± ")
    assert (reproduction["ours"] == "not run").sum() == 2  # HANS and Skill-Mix: no metric of this config claims them
    for plot in ("correlations", "top_neurons"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_report_holds_the_interpretation_figures_and_tables_with_captions(aux_run):
    report = aux_run / "report.html"
    result = snakemake("--report", str(report), "--configfile", str(aux_run / "aux.yaml"), "--directory", str(aux_run))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = report.read_text()
    for seed in (0, 1):
        run = f"results/tiny/aux/toygen/seed{seed}"
        for path in ("ranking/interpretation.html", "plots/correlations.png", "plots/top_neurons.png"):
            assert f"{run}/{path}" in html, path
    assert "results/tiny/tables/aux_metrics.html" in html and "results/tiny/tables/aux_reproduction.html" in html
    for caption in (
        "the top-k threshold (Zhao, Wang et al. Fig. 4, 6, 7)",
        "one density per group",
        "activate each one most",
    ):
        assert caption in html, caption
    assert '"Auxiliary metrics"' in html


@pytest.mark.slow
def test_an_edited_metric_reruns_the_ranking_and_what_reads_it_but_not_the_tuning(aux_run):
    config = aux_config(aux_run)
    config["aux_metrics"]["tasks"]["toygen"]["metrics"] = ["loss", "confidence"]
    write_config(config, aux_run / "edited.yaml")
    result = snakemake(
        "--dry-run", "--quiet", "rules", "--configfile", str(aux_run / "edited.yaml"), "--directory", str(aux_run)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert jobs["rank_by_metrics"] == "2" and jobs["causal_test"] == "2"
    assert "tune_generation" not in jobs and "dump_generation" not in jobs and "split_generation_data" not in jobs
