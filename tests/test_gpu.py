"""The GPU path (run by benchmarks/gpu_check.sh on a CUDA machine; skipped elsewhere)."""

import pandas as pd
import pytest
import torch

from skill_neurons.models import load_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.pruning import prune_ffns, save_pruned
from skill_neurons.speed import Case, benchmark
from skill_neurons.tuning import init_prompt

from .conftest import save_tiny_model, toy_reviews

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_label_scores_on_the_gpu_match_the_cpu(tmp_path):
    model_dir = save_tiny_model(tmp_path / "m", "llama")
    scores = {}
    for device in ("cpu", "cuda"):
        model, tokenizer = load_model(model_dir, device)
        lm = PromptedLM(model, tokenizer, "Review : {sentence} \n Sentiment :", [" negative", " positive"], 3)
        prompt = init_prompt(lm, "normal", 0.5, seed=0).to(lm.device)
        batch = lm.batches(toy_reviews(8, seed=0).assign(example=range(8)), ["sentence"], 8)[0]
        scores[device] = lm.label_logits(prompt, batch).cpu()
    torch.testing.assert_close(scores["cuda"], scores["cpu"], rtol=1e-4, atol=1e-4)


def test_the_speed_benchmark_times_dense_and_pruned_in_both_dtypes_on_the_gpu(tmp_path):
    dense_dir = save_tiny_model(tmp_path / "dense", "llama")
    model, tokenizer = load_model(dense_dir)
    widths = prune_ffns(model, {layer: torch.arange(12) for layer in range(3)})
    save_pruned(model, tokenizer, tmp_path / "pruned", widths)
    table = benchmark(
        {"dense": str(dense_dir), "pruned": str(tmp_path / "pruned")},
        "dense",
        [Case(2, 8)],
        ["float32", "bfloat16"],
        warmup=1,
        repeats=3,
        device=torch.device("cuda"),
        threads=1,
    )
    assert set(table["dtype"]) == {"float32", "bfloat16"} and set(table["variant"]) == {"dense", "pruned"}
    assert (table["median_ms"] > 0).all() and (table["forward_peak_mb"] > 0).all()


def test_the_tiny_workflow_runs_on_the_gpu_its_model_jobs_taking_turns(tmp_path):
    from .test_workflow import snakemake, tiny_config, write_config

    config = write_config(tiny_config(tmp_path, device="auto", gpus_per_job=1), tmp_path / "tiny.yaml")
    # Every model job type up to the speed benchmark, not the whole run: each job starts CUDA (minutes on a lent GPU).
    targets = [f"results/tiny/ranking/{task}/ranking.parquet" for task in ("toy", "toy3")]
    targets.append("results/tiny/pruning/toy/speed.parquet")
    on_one_card = ["--cores", "4", "--resources", "gpu=1"]
    result = snakemake(*on_one_card, "--configfile", str(config), "--directory", str(tmp_path), *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = sorted((tmp_path / "results" / "logs" / "tiny" / "tune_prompt").rglob("*.log"))
    assert len(logs) == 4 and all("leased GPU" in log.read_text() for log in logs)  # 2 tasks x 2 seeds
    speed = pd.read_parquet(tmp_path / "results" / "tiny" / "pruning" / "toy" / "speed.parquet")
    assert set(speed["device"]) == {"cuda"} or set(speed["device"]) == {"cuda:0"}
