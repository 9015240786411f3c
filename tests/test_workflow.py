"""The workflow itself: lint, a dry run of the shipped configs, and a whole run of a tiny config."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import save_tiny_model, write_mirror

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for rule" not in result.stdout + result.stderr


@pytest.mark.parametrize("configfile", [None, "config/quick.yaml", "config/paper.yaml"])
def test_shipped_configs_build_their_dag(configfile):
    args = ["--dry-run", "--quiet", "rules"] + (["--configfile", configfile] if configfile else [])
    result = snakemake(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tune_prompt" in result.stdout


def test_a_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["prompt"]["n_tokens"] = "eight"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("--dry-run", "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert "config key prompt.n_tokens: 'eight' is not of type 'integer'" in result.stdout + result.stderr


TINY_TASKS = {
    "toy": {"dataset": "toy", "text_fields": ["sentence"], "template": "Review : {sentence} \n Sentiment :",
            "labels": [0, 1], "label_words": [" negative", " positive"]},
    "toy3": {"dataset": "toy3", "text_fields": ["sentence"], "template": "Review : {sentence} \n Sentiment :",
             "labels": [0, 1, 2], "label_words": [" negative", " neutral", " positive"],
             "subtasks": [{"name": "polar", "positive": [2], "negative": [0]},
                          {"name": "neutral", "positive": [1], "negative": [0, 2]}]},
}


@pytest.mark.slow
def test_tiny_config_runs_end_to_end(tmp_path):
    config = {
        "data_root": str(write_mirror(tmp_path / "mirror")),
        "model_threads": 1,
        "models": {"tiny": {"path": str(save_tiny_model(tmp_path / "tiny-llama", "llama")), "mem_mb": 500}},
        "seeds": [0, 1],
        "tasks": TINY_TASKS,
        "data": {"max_train": 48, "max_dev": 20, "max_test": 24},
        "prompt": {"n_tokens": 3, "lr": 0.05, "max_steps": 4, "eval_every": 2, "batch_size": 8},
        "plots": {"bins": 8},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("--cores", "2", "--configfile", str(tmp_path / "tiny.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "results" / "tiny"
    ranking = pd.read_parquet(out / "ranking" / "toy3" / "ranking.parquet")
    assert len(ranking) == 3 * 48 and ranking["rank"].tolist() == list(range(1, 145))
    assert set(ranking["subtask"]) == {"polar", "neutral"}
    assert {"seed_0", "seed_1", "mean", "std", "test_predictivity_mean"} <= set(ranking.columns)
    summary = json.loads((out / "ranking" / "toy" / "summary.json").read_text())
    assert 0 <= summary["top1_neuron_test_accuracy_mean"] <= 1 and summary["n_neurons"] == 144
    assert (out / "tables" / "table1.md").read_text().count("\n") == 4  # header, rule, two tasks
    for task in TINY_TASKS:
        for plot in ("predictivity.png", "top_neuron.png"):
            assert (out / "plots" / task / plot).read_bytes()[:4] == b"\x89PNG"
    # Nothing left to do, and nothing half-written in the results.
    again = snakemake("--cores", "1", "--configfile", str(tmp_path / "tiny.yaml"), "--directory", str(tmp_path),
                      "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
    assert not list((tmp_path / "results").rglob(".*.tmp-*"))
