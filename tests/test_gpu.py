"""The GPU path (run by benchmarks/gpu_check.sh on a CUDA machine; skipped elsewhere)."""

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
        batch = lm.batches(toy_reviews(8, seed=0), ["sentence"], 8)[0]
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
