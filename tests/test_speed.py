"""Speed benchmark: the cases of the sweeps, the summary against a hand computation, a real side-by-side run."""

import copy

import pandas as pd
import pytest
import torch

from skill_neurons import devices
from skill_neurons.pruning import prune_ffns, save_pruned
from skill_neurons.speed import (
    Case,
    benchmark,
    benchmark_dtypes,
    parameter_counts,
    summarise,
    sweep_cases,
    time_variants,
)

from .conftest import tiny_model, word_tokenizer


def test_sweep_cases_vary_one_dimension_through_the_reference():
    cases = sweep_cases([1, 8], [16, 64], Case(8, 32))
    assert cases == [Case(1, 32), Case(8, 16), Case(8, 32), Case(8, 64)]


def test_summary_medians_quartiles_and_speedup_by_hand():
    times = pd.DataFrame(
        {
            "variant": ["dense"] * 4 + ["pruned"] * 4,
            "batch": [1] * 8,
            "length": [8] * 8,
            "repeat": [0, 1, 2, 3] * 2,
            "seconds": [0.010, 0.012, 0.011, 0.030, 0.004, 0.006, 0.005, 0.005],
        }
    )
    table = summarise(times, "dense").set_index("variant")
    assert table.loc["dense", "median_ms"] == pytest.approx(11.5)  # (11 + 12) / 2
    assert table.loc["pruned", "median_ms"] == pytest.approx(5.0)
    assert table.loc["dense", "q1_ms"] == pytest.approx(10.75) and table.loc["dense", "q3_ms"] == pytest.approx(16.5)
    # paired ratios 10/4, 12/6, 11/5, 30/5 = 2.5, 2.0, 2.2, 6.0: median (2.2 + 2.5) / 2, quartiles by interpolation
    assert table.loc["pruned", "speedup"] == pytest.approx(2.35) and table.loc["dense", "speedup"] == 1.0
    assert table.loc["pruned", "speedup_q1"] == pytest.approx(2.15)  # 2.0 + 0.75 * (2.2 - 2.0)
    assert table.loc["pruned", "speedup_q3"] == pytest.approx(3.375)  # 2.5 + 0.25 * (6.0 - 2.5)
    assert table.loc["dense", "min_ms"] == pytest.approx(10.0) and table.loc["pruned", "repeats"] == 4


@pytest.mark.parametrize("architecture", ["llama", "bert"])
def test_timing_alternates_variants_and_counts_every_repeat(architecture):
    models = {"dense": tiny_model(architecture, 40), "copy": tiny_model(architecture, 40)}
    times = time_variants(models, [Case(2, 5), Case(1, 9)], warmup=1, repeats=3, device=torch.device("cpu"))
    assert len(times) == 2 * 2 * 3 and (times["seconds"] > 0).all()
    first_case = times[(times["batch"] == 2)]
    assert first_case["variant"].tolist() == ["dense", "copy"] * 3  # interleaved, not one model after the other


def test_benchmark_compares_a_saved_pruned_model_with_its_dense_model(tmp_path):
    tokenizer = word_tokenizer()
    dense = tiny_model("llama", len(tokenizer))
    dense.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    pruned = copy.deepcopy(dense)
    widths = prune_ffns(pruned, {layer: torch.arange(4) for layer in range(3)})
    save_pruned(pruned, tokenizer, tmp_path / "pruned", widths)

    table = benchmark(
        {"dense": str(tmp_path / "dense"), "pruned": str(tmp_path / "pruned")},
        "dense",
        [Case(2, 6)],
        ["float32", "bfloat16"],
        warmup=1,
        repeats=2,
        device=torch.device("cpu"),
        threads=1,
    )
    assert set(zip(table["variant"], table["dtype"])) == {
        (v, d) for v in ("dense", "pruned") for d in ("float32", "bfloat16")
    }
    by_variant = table[table["dtype"] == "float32"].set_index("variant")
    assert by_variant.loc["pruned", "ffn_neurons"] == 12 and by_variant.loc["dense", "ffn_neurons"] == 3 * 48
    assert by_variant.loc["dense", "parameters"] == parameter_counts(dense)["parameters"]
    removed = by_variant.loc["dense", "parameters"] - by_variant.loc["pruned", "parameters"]
    assert removed == 3 * 44 * 3 * 32  # 44 neurons of 3 layers, 3 x 32 weights each; removal adds no bias
    assert (table["peak_memory_mb"] > 50).all()  # a process with torch and a model: tens of MiB at least
    assert (table.loc[table["variant"] == "dense", "speedup"] == 1.0).all()


@pytest.mark.parametrize(
    "flags, expected",
    [("flags: fpu avx2 amx_bf16 amx_tile", ["float32", "bfloat16"]), ("flags: fpu avx2 avx512f", ["float32"])],
)
def test_auto_dtypes_add_bf16_only_where_the_cpu_has_amx(monkeypatch, flags, expected):
    monkeypatch.setattr(devices, "_cpu_flags", lambda: flags)
    assert benchmark_dtypes("auto", torch.device("cpu")) == expected
    assert benchmark_dtypes(["bfloat16"], torch.device("cpu")) == ["bfloat16"]  # a list is taken as it is
