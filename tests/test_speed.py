"""Speed benchmark: the cases of the sweeps, the summary against a hand computation, a real side-by-side run."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from skill_neurons import devices
from skill_neurons.models import load_model
from skill_neurons.pruning import prune_ffns, save_pruned
from skill_neurons.speed import (
    Case,
    benchmark,
    benchmark_dtypes,
    forward_peak_mb,
    in_private_memory,
    model_parts,
    parameter_counts,
    part_times,
    speedup_bounds,
    summarise,
    sweep_cases,
    time_variants,
    weights_mb,
)

from .conftest import save_tiny_model, tiny_model, word_tokenizer


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


@pytest.mark.parametrize(
    ("architecture", "ffn", "attention", "norms"),
    [
        ("llama", "mlp", "self_attn", ["input_layernorm", "post_attention_layernorm"]),
        ("gpt2", "mlp", "attn", ["ln_1", "ln_2"]),
    ],
)
def test_a_forward_splits_into_each_layers_ffn_attention_and_norms(architecture, ffn, attention, norms):
    model = tiny_model(architecture, 40)
    parts = {part: [id(m) for m in modules] for part, modules in model_parts(model).items()}
    layers = model.model.layers if architecture == "llama" else model.transformer.h
    assert parts["ffn"] == [id(getattr(layer, ffn)) for layer in layers]
    assert parts["attention"] == [id(getattr(layer, attention)) for layer in layers]
    final_norm = model.model.norm if architecture == "llama" else model.transformer.ln_f
    assert parts["norm"] == [id(getattr(layer, n)) for layer in layers for n in norms] + [id(final_norm)]
    assert parts["embedding"] == [id(model.get_input_embeddings())]


def test_part_times_add_up_to_the_forward():
    dense = tiny_model("llama", 40)
    times = part_times(dense, {"input_ids": torch.ones(4, 16, dtype=torch.long)}, repeats=3, device=torch.device("cpu"))
    assert set(times["part"]) == {"ffn", "attention", "norm", "embedding", "other", "total"}
    per_repeat = times.pivot(index="repeat", columns="part", values="seconds")
    parts = per_repeat[["ffn", "attention", "norm", "embedding", "other"]].sum(axis=1)
    assert parts.to_numpy() == pytest.approx(per_repeat["total"].to_numpy())
    assert (per_repeat[["ffn", "attention", "norm", "embedding"]] > 0).all().all() and (per_repeat["other"] >= 0).all()


def test_speedup_bounds_by_hand():
    rows = [
        ("float32", "dense", {"ffn": 60.0, "total": 100.0}),
        ("float32", "pruned", {"ffn": 24.0, "total": 70.0}),
        ("bfloat16", "dense", {"ffn": 20.0, "total": 50.0}),
        ("bfloat16", "pruned", {"ffn": 8.0, "total": 40.0}),
    ]
    part_ms = pd.DataFrame(
        [{"dtype": d, "variant": v, "part": p, "median_ms": ms} for d, v, parts in rows for p, ms in parts.items()]
    )
    table = speedup_bounds(part_ms, "dense").set_index(["dtype", "variant"])
    assert table.loc[("float32", "pruned"), "speedup"] == pytest.approx(100 / 70)
    assert table.loc[("float32", "pruned"), "ffn_bound"] == pytest.approx(100 / (100 - 60 + 24))  # 1.5625
    assert table.loc[("bfloat16", "pruned"), "ffn_bound"] == pytest.approx(50 / (50 - 20 + 8))  # against bf16 dense
    assert table.loc[("bfloat16", "pruned"), "ffn_share"] == pytest.approx(0.2)
    assert table.loc[("bfloat16", "dense"), "speedup"] == 1.0


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
    weights_bytes = 4 * by_variant["parameters"] + 2 * 4 * 4  # fp32, and RoPE's two buffers of head_dim / 2
    assert (by_variant["weights_mb"] * 2**20 == weights_bytes).all()
    assert table["forward_peak_mb"].notna().all()  # measured in a child interpreter
    assert (table["memory_mb"] == table["weights_mb"] + table["forward_peak_mb"]).all()
    assert (table.loc[table["variant"] == "dense", "speedup"] == 1.0).all()


def test_each_model_is_labelled_with_its_own_attention_kernel(tmp_path, monkeypatch):
    import skill_neurons.speed as speed

    folders = {name: save_tiny_model(tmp_path / name, "llama") for name in ("dense", "other")}

    def load_other_as_eager(model_dir, device="cpu"):
        model, tokenizer = load_model(model_dir, device)
        if Path(model_dir) == folders["other"]:
            model.set_attn_implementation("eager")
        return model, tokenizer

    monkeypatch.setattr(speed, "load_model", load_other_as_eager)
    paths = {name: str(folder) for name, folder in folders.items()}
    cpu = torch.device("cpu")
    table = benchmark(paths, "dense", [Case(1, 4)], ["float32"], 0, 1, cpu, 1, peak_memory=False)
    assert table.set_index("variant")["attention"].to_dict() == {"dense": "sdpa", "other": "eager"}


def test_the_speed_stage_times_dense_once_beside_every_tasks_pruned_models(tmp_path):
    from skill_neurons.stages.pruning import speed_benchmark

    from .conftest import fake_job

    tokenizer = word_tokenizer()
    dense = tiny_model("llama", len(tokenizer))
    dense.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    pruned_dirs: dict[str, list[str]] = {"skeleton": [], "skill_neurons": []}
    for task, kept in (("first", 4), ("second", 8)):
        for variant, extra in (("skeleton", 0), ("skill_neurons", 16)):
            pruned = copy.deepcopy(dense)
            widths = prune_ffns(pruned, {layer: torch.arange(kept + extra) for layer in range(3)})
            save_pruned(pruned, tokenizer, tmp_path / task / variant, widths)
            pruned_dirs[variant].append(str(tmp_path / task / variant))
    outputs = [str(tmp_path / task / "speed.parquet") for task in ("first", "second")]
    params = {"batch_sizes": [2], "lengths": [6], "reference_batch": 2, "reference_length": 6, "dtypes": ["float32"]}
    params |= {"warmup": 1, "repeats": 3, "peak_memory": False, "device": "cpu", "tasks": ["first", "second"]}
    speed_benchmark(fake_job(input={"dense": str(tmp_path / "dense"), **pruned_dirs}, output=outputs, params=params))

    first, second = (pd.read_parquet(output) for output in outputs)
    for table, kept in ((first, 4), (second, 8)):
        assert table["variant"].tolist() == ["dense", "skeleton", "skill_neurons"] and table["reference"].all()
        assert table.set_index("variant")["ffn_neurons"].tolist() == [3 * 48, 3 * kept, 3 * (kept + 16)]
    # one timing of dense in both files: the same rounds paired it with each task's models
    pd.testing.assert_frame_equal(first[first["variant"] == "dense"], second[second["variant"] == "dense"])
    assert (first["repeats"] == 3).all() and (first.loc[first["variant"] == "dense", "speedup"] == 1.0).all()


@pytest.mark.parametrize(
    "flags, unit, expected",
    [
        ("flags: fpu avx2 amx_bf16 amx_tile avx512_bf16", "AMX", ["float32", "bfloat16"]),
        ("flags: fpu avx2 avx512f avx512_bf16", "AVX512-BF16", ["float32", "bfloat16"]),
        ("flags: fpu avx2 avx512f", None, ["float32"]),
    ],
)
def test_auto_dtypes_add_bf16_only_where_the_cpu_has_a_bf16_unit(monkeypatch, flags, unit, expected):
    monkeypatch.setattr(devices, "_cpu_flags", lambda: flags)
    assert devices.cpu_bf16_unit() == unit
    assert benchmark_dtypes("auto", torch.device("cpu")) == expected
    assert devices.autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if unit else None)
    assert devices.autocast_dtype("fp32", torch.device("cpu")) is None  # asked for, whatever the CPU
    assert benchmark_dtypes(["bfloat16"], torch.device("cpu")) == ["bfloat16"]  # a list is taken as it is


def _mapped_file(address: int) -> str | None:
    """The file a memory mapping of this process holds at `address`, None for private memory."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, _, _, _, _, *path = line.split()
            low, high = (int(bound, 16) for bound in span.split("-"))
            if low <= address < high:
                return path[0] if path and path[0].startswith("/") else None
    return None


def test_a_dense_checkpoint_is_memory_mapped_until_copied_into_private_memory(llama_dir):
    model, _ = load_model(llama_dir)
    checkpoint = str(llama_dir / "model.safetensors")
    # Why the memory measure copies: from_pretrained leaves the weights in the file's pages.
    assert any(_mapped_file(p.data_ptr()) == checkpoint for p in model.parameters())
    before = {name: p.clone() for name, p in model.named_parameters()}
    model = in_private_memory(model)
    assert all(_mapped_file(p.data_ptr()) is None for p in model.parameters())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied


HIDDEN, LAYERS, DENSE_FFN, WIDE_FFN, KEPT = 128, 2, 1024, 4096, 128
ACTIVATION_CASE = Case(4, 128)  # 512 tokens: an FFN activation of DENSE_FFN neurons is 2 MiB


def _llama(ffn_width: int, vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=ffn_width,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=ACTIVATION_CASE.length,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def memory_by_variant(tmp_path_factory) -> dict[str, tuple[float, float]]:
    """(weights_mb, forward_peak_mb) at ACTIVATION_CASE of a dense model, it pruned, and one with a 4x wider FFN."""
    folder: Path = tmp_path_factory.mktemp("memory")
    tokenizer = word_tokenizer()
    dense = _llama(DENSE_FFN, len(tokenizer))
    for name, model in (("dense", dense), ("wide", _llama(WIDE_FFN, len(tokenizer)))):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    widths = prune_ffns(dense, {layer: torch.arange(KEPT) for layer in range(LAYERS)})
    save_pruned(dense, tokenizer, folder / "pruned", widths)
    memory = {}
    for name in ("dense", "pruned", "wide"):
        model, _ = load_model(folder / name)
        peak = forward_peak_mb(str(folder / name), model, "float32", ACTIVATION_CASE, torch.device("cpu"), 1)
        memory[name] = (weights_mb(model), peak)
    return memory


def test_weights_mb_are_the_bytes_of_the_parameters(memory_by_variant):
    ffn_bytes_per_neuron = LAYERS * 3 * HIDDEN * 4  # gate and up rows, down column; fp32
    weights = {name: weights_mb * 2**20 for name, (weights_mb, _) in memory_by_variant.items()}
    assert weights["wide"] - weights["dense"] == (WIDE_FFN - DENSE_FFN) * ffn_bytes_per_neuron
    assert weights["dense"] - weights["pruned"] == (DENSE_FFN - KEPT) * ffn_bytes_per_neuron


def test_the_forward_peak_holds_the_ffn_activations(memory_by_variant):
    tokens = ACTIVATION_CASE.batch * ACTIVATION_CASE.length
    activation_mb = {width: tokens * width * 4 / 2**20 for width in (DENSE_FFN, WIDE_FFN)}
    forward = {name: peak for name, (_, peak) in memory_by_variant.items()}
    # LlamaMLP holds act(gate(x)), up(x) and their product at once: three activations at least. Measured
    # in the forward, not left out because the warm-up's freed blocks were reused (CHILD_ENVIRONMENT).
    for name, width in (("dense", DENSE_FFN), ("wide", WIDE_FFN)):
        assert forward[name] >= 3 * activation_mb[width]
    assert forward["pruned"] < forward["dense"]  # KEPT of DENSE_FFN neurons: an eighth of the activations


def test_a_pruned_model_measures_less_memory_than_its_dense_model_and_a_wider_one_more(memory_by_variant):
    memory = {name: weights + peak for name, (weights, peak) in memory_by_variant.items()}
    assert memory["pruned"] < memory["dense"] < memory["wide"]


def test_the_pruned_speed_benchmark_times_random_weights_in_the_models_shapes(tmp_path):
    import subprocess
    import sys

    dense_dir = save_tiny_model(tmp_path / "dense", "llama")
    model, tokenizer = load_model(dense_dir)
    widths = prune_ffns(model, {layer: torch.arange(6) for layer in range(3)})
    save_pruned(model, tokenizer, tmp_path / "pruned", widths)
    for folder in (dense_dir, tmp_path / "pruned"):  # what a lent GPU gets: the config and the tokenizer alone
        for weights in folder.glob("*.safetensors"):
            weights.unlink()
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pruned_speed.py"
    command = [sys.executable, str(script), str(tmp_path / "out"), "--model", f"dense={dense_dir}"]
    command += ["--model", f"pruned={tmp_path / 'pruned'}", "--shapes-only", "--threads", "1"]
    kernels = ["--attention", "sdpa", "eager"]
    result = subprocess.run(
        [*command, "--cases", "2x8", "4x8", "--repeats", "3", *kernels], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "out" / "speed.csv")
    for kernel in ("sdpa", "eager"):  # every model and case timed with each kernel
        timed = table[table["attention"] == kernel]
        assert sorted(zip(timed["variant"], timed["batch"])) == [
            ("dense", 2),
            ("dense", 4),
            ("pruned", 2),
            ("pruned", 4),
        ]
    assert len(table) == 8
    assert (table.loc[table["variant"] == "dense", "speedup"] == 1.0).all()  # each forward against itself
    ffn_neurons = table.groupby("variant")["ffn_neurons"].first()
    assert ffn_neurons["dense"] == 3 * 48 and ffn_neurons["pruned"] == 3 * 6
    header = (tmp_path / "out" / "speed.md").read_text().splitlines()[0]
    assert "random weights in the models' shapes" in header and "bf16 unit: " in header
    refused = subprocess.run([*command, "--cases", "8by64"], capture_output=True, text=True)
    assert refused.returncode == 2 and "a case is BATCHxLENGTH, e.g. 8x64, not '8by64'" in refused.stderr
    twice = subprocess.run([*command, "--model", f"dense={dense_dir}"], capture_output=True, text=True)
    assert twice.returncode == 2 and "--model dense given twice" in twice.stderr


def test_the_throughput_benchmark_puts_each_pass_against_the_bare_forward_of_its_precision(tmp_path):
    import subprocess
    import sys

    from .conftest import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model", "llama")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    command = [sys.executable, str(script), str(tmp_path / "out"), "--model", str(model_dir), "--examples", "8"]
    command += ["--batch", "4", "--n-prompt", "2", "--threads", "1", "--repeats", "1", "--precisions", "fp32", "bf16"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "out" / "throughput.csv")
    passes = ["bare forward", "dump, text run", "dump, text stored", "sweep point"]
    assert list(zip(table["precision"], table["pass"])) == [(p, name) for p in ("fp32", "bf16") for name in passes]
    assert list(table["examples"]) == [8, 16, 16, 8] * 2  # a dump reads every example twice
    bare = table[table["pass"] == "bare forward"].set_index("precision")["examples_per_s"]
    expected = table["examples_per_s"] / table["precision"].map(bare)
    assert table["ratio_to_bare"].to_numpy() == pytest.approx(expected.to_numpy())
    assert (table.loc[table["pass"] == "bare forward", "ratio_to_bare"] == 1).all()
    header = (tmp_path / "out" / "throughput.md").read_text().splitlines()[0]
    assert "8 SST-2 examples" in header
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=script.parent)
    assert f"commit {head.stdout.strip()}" in header and "bf16 unit: " in header  # where it was measured
