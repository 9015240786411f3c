"""A whole run of a tiny config that exercises every stage, and what a change to it reruns."""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import save_tiny_model, write_mirror

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


TINY_TASKS = {
    "toy": {
        "dataset": "toy",
        "text_fields": ["sentence"],
        "template": "Review : {sentence} \n Sentiment :",
        "labels": [0, 1],
        "label_words": [" negative", " positive"],
    },
    "toy3": {
        "dataset": "toy3",
        "text_fields": ["sentence"],
        "template": "Review : {sentence} \n Sentiment :",
        "labels": [0, 1, 2],
        "label_words": [" negative", " neutral", " positive"],
        "subtasks": [
            {"name": "polar", "positive": [2], "negative": [0]},
            {"name": "neutral", "positive": [1], "negative": [0, 2]},
        ],
    },
}


PRUNED = ["toy"]


def tiny_config(folder: Path, **changes) -> dict:
    """A config of two toy tasks on a tiny random LLaMA, every stage; `changes` replace top-level keys."""
    config = {
        "data_root": str(write_mirror(folder / "mirror")),
        "model_threads": 1,
        "models": {"tiny": {"path": str(save_tiny_model(folder / "tiny-llama", "llama")), "mem_mb": 500}},
        "seeds": [0, 1],
        "tasks": TINY_TASKS,
        "data": {"max_train": 48, "max_dev": 20, "max_test": 24},
        "prompt": {"n_tokens": 3, "lr": 0.05, "max_steps": 4, "eval_every": 2, "batch_size": 8},
        "plots": {"bins": 8},
        "perturbation": {"rates": [0, 0.1, 0.2], "modes": ["noise", "position_baseline"], "max_examples": 16},
        "label_words": {"tasks": ["toy"], "draws": 2},
        # one method on one task: tuned, swept in both tasks' orders and a random one, tabulated
        "tuning_methods": {
            "tasks": ["toy"],
            "methods": ["bitfit"],
            "max_steps": 2,
            "eval_every": 2,
            "rates": [0, 0.2],
            "max_examples": 8,
        },
        "pruning": {
            "tasks": PRUNED,  # one task: every pruning stage runs, at half the jobs
            "retune": {"max_steps": 2, "eval_every": 2},
            "skeleton": {"n_examples": 4, "step": 0.25, "width_multiple": 16, "attention_groups": True},
            "selection": {"keep_ratios": [0.5]},
            "speed": {
                "batch_sizes": [1, 2],
                "lengths": [8],
                "reference": {"batch": 2, "length": 8},
                "dtypes": ["float32"],
                "warmup": 1,
                "repeats": 2,
                "threads": 1,
            },
        },
    }
    return {**config, **changes}


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny config run once to the end; the tests below read it or dry-run changes against it."""
    tmp_path = tmp_path_factory.mktemp("tiny-run")
    config = tiny_config(tmp_path)
    write_config(config, tmp_path / "tiny.yaml")
    result = snakemake("--cores", "2", "--configfile", str(tmp_path / "tiny.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, config


@pytest.mark.slow
def test_tiny_config_runs_end_to_end(tiny_run):
    tmp_path, config = tiny_run
    out = tmp_path / "results" / "tiny"
    ranking = pd.read_parquet(out / "ranking" / "toy3" / "ranking.parquet")
    assert len(ranking) == 3 * 48 and ranking["rank"].tolist() == list(range(1, 145))
    assert set(ranking["subtask"]) == {"polar", "neutral"}
    assert {"seed_0", "seed_1", "mean", "std", "test_predictivity_mean"} <= set(ranking.columns)
    summary = json.loads((out / "ranking" / "toy" / "summary.json").read_text())
    assert 0 <= summary["top1_neuron_test_accuracy_mean"] <= 1 and summary["n_neurons"] == 144
    assert (out / "tables" / "table1.md").read_text().count("\n") == 4  # header, rule, two tasks
    chance = pd.read_parquet(out / "tables" / "chance.parquet")
    assert chance["task"].tolist() == sorted(TINY_TASKS) and chance["random_guess"].tolist() == [1 / 2, 1 / 3]
    assert (chance["above_chance"] == (chance["p_value"] < 0.05)).all()
    for task in TINY_TASKS:
        for plot in ("predictivity.png", "top_neuron.png", "perturbation.png"):
            assert (out / "plots" / task / plot).read_bytes()[:4] == b"\x89PNG"
    for plot in ("importance.png", "specificity.png"):
        assert (out / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    specificity = pd.read_parquet(out / "tables" / "specificity.parquet")
    assert len(specificity) == 3 * (1 + 3)  # (toy, toy), (toy, toy3), (toy3, toy3) x (all + 3 layers)
    sweep = pd.read_parquet(out / "perturbation" / "toy" / "seed1.parquet")
    assert set(sweep["order"]) == {"toy", "toy3", "selectivity", "random"}
    assert sorted(sweep["rate"].unique()) == [0, 0.1, 0.2] and set(sweep["mode"]) == {"noise", "position_baseline"}
    assert sweep.groupby("rate")["n_neurons"].max().tolist() == [0, 15, 30]  # 3 layers x round(r * 48)
    assert set(zip(sweep["mode"], sweep["positions"], sweep["scope"])) == {
        ("noise", "all", "per_layer"),
        ("position_baseline", "prompt", "per_layer"),
    }
    importance = pd.read_parquet(out / "tables" / "importance.parquet")
    assert len(importance) == 2 * 3 * 2 * 2  # evaluation tasks x (two source tasks + selectivity) x seeds x modes
    summary = pd.read_parquet(out / "tables" / "perturbation.parquet")
    assert len(summary) == 2 * 2 * 2 * 4  # evaluation tasks x modes x rates above 0 x (2 sources, selectivity, random)
    assert "random drop (points)" in (out / "tables" / "perturbation.md").read_text()
    selectivity = pd.read_parquet(out / "ranking" / "toy" / "selectivity.parquet")
    assert len(selectivity) == 144 and selectivity["mean"].is_monotonic_decreasing
    assert_pruning_outputs(out)
    # The text was encoded once per task, every prompt job read it, and it was removed after its last reader.
    for task in TINY_TASKS:
        assert "text of 92 examples encoded" in (tmp_path / "results/logs/tiny/encode_text" / f"{task}.log").read_text()
        assert not (out / "text" / f"{task}.safetensors").exists()
        released = json.loads((out / "text" / f"{task}.released.json").read_text())
        assert released["store"] == f"results/tiny/text/{task}.safetensors" and released["bytes_freed"] > 0
    logs = [path.read_text() for path in (tmp_path / "results/logs/tiny").rglob("*.log")]
    assert not [text for text in logs if "encoding it again" in text]  # no reader ran after the release
    for log in (
        "tune_prompt/toy/seed1",
        "dump_activations/toy3/seed0",
        "perturbation_sweep/toy/seed0",
        "dump_control/hard_prompt/toy/seed0",
        "tune_random_words/toy/draw1",
    ):
        assert "skill_neurons.text_cache INFO text cache" in (tmp_path / "results/logs/tiny" / f"{log}.log").read_text()
    methods = pd.read_parquet(out / "tables" / "tuning_methods.parquet")
    assert set(methods["method"]) == {"bitfit"} and set(methods["order"]) == {"toy", "toy3", "random"}
    assert json.loads((out / "methods" / "toy" / "bitfit" / "metrics.json").read_text())["added_biases"] > 0
    # The papers' claims beside ours: one row per claim; the label-word row reads the label-word table.
    reproduction = pd.read_parquet(out / "tables" / "reproduction.parquet").set_index("claim")
    claims = yaml.safe_load((ROOT / "workflow" / "resources" / "paper_claims.yaml").read_text())
    assert len(reproduction) == len(claims["claims"] if isinstance(claims, dict) else claims)
    words = pd.read_parquet(out / "tables" / "label_words.parquet")
    label_word_rows = reproduction[reproduction["reference"].str.contains("4.4")]
    expected = f"{words['spearman with original (mean)'].iloc[0]:.2f}"
    assert any(cell.startswith(expected) for cell in label_word_rows["ours"]), label_word_rows["ours"].tolist()
    assert words["task"].tolist() == ["toy"] and words["draws"].tolist() == [2]
    assert -1 <= words["spearman with original (mean)"].iloc[0] <= 1
    drawn = [json.loads((out / "label_words" / "toy" / f"draw{d}" / "words.json").read_text()) for d in (0, 1)]
    assert drawn[0]["label_words"] != drawn[1]["label_words"] and drawn[0]["original"] == [" negative", " positive"]
    controls = pd.read_parquet(out / "tables" / "controls.parquet")
    assert controls["task"].tolist() == ["toy", "toy3"]
    assert list(controls.columns[1:]) == [
        "random guess (%)",
        "majority class (%)",
        "hard prompt (%)",
        "random model (%)",
        "random prompt (%)",
        "tuned prompt (%)",
    ]
    assert controls["random guess (%)"].tolist() == ["50.0", "33.3"]
    # Random prompts are random vectors, N(0, init_std^2) drawn with each seed (Wang et al.), one trial per seed.
    for seed in config["seeds"]:
        untuned = load_file(out / "controls" / "random_prompt" / f"seed{seed}" / "prompts" / "toy.safetensors")
        expected = torch.randn(3, 32, generator=torch.Generator().manual_seed(seed)) * 0.03
        assert torch.equal(untuned["prompt"], expected)
    trials = [
        json.loads((out / "controls" / "random_model" / f"seed{s}" / "scores" / "toy.json").read_text())[
            "top1_test_accuracy"
        ]
        for s in config["seeds"]
    ]
    mean, sd = 100 * np.mean(trials), 100 * np.std(trials, ddof=1)
    assert controls.set_index("task").loc["toy", "random model (%)"] == f"{mean:.1f} ± {sd:.1f} (n=2)"
    # The random weights were temporary: made per seed, read by their control's jobs, then removed.
    assert not list((out / "controls" / "random_model").glob("seed*/model"))
    # So were the activations that only a score reads: the controls' and the label-word draws'.
    assert list(out.glob("controls/*/seed*/scores/toy.parquet")) and not list(out.glob("controls/*/seed*/activations"))
    assert list(out.glob("label_words/toy/draw*/scores.parquet"))
    assert not list(out.glob("label_words/*/draw*/activations"))
    summary = json.loads((out / "controls" / "hard_prompt" / "seed0" / "scores" / "toy.json").read_text())
    assert 0 <= summary["top1_test_accuracy"] <= 1 and summary["random_guess"] == 0.5
    assert not (out / "controls" / "hard_prompt" / "seed1").exists()  # the same text every time: one trial
    metrics = json.loads((out / "prompts" / "toy" / "seed0" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 0 and not (out / "checkpoints" / "toy" / "seed0.pt").exists()
    # Nothing left to do, and nothing half-written in the results.
    again = snakemake(
        "--cores", "1", "--configfile", str(tmp_path / "tiny.yaml"), "--directory", str(tmp_path), "--dry-run"
    )
    assert "Nothing to be done" in again.stdout + again.stderr
    assert not list((tmp_path / "results").rglob(".*.tmp-*"))


def assert_attention_pruning_outputs(pruning: Path, skeleton: dict) -> None:
    """Ours: key/value groups removed from SKELETON's model (3 layers of 2 groups), as recorded; its table row."""
    import torch

    from skill_neurons.architecture import ffn_output_projections, ffn_width
    from skill_neurons.attention import layer_attentions
    from skill_neurons.models import load_model
    from skill_neurons.skeleton import global_keep, order_of

    metrics = json.loads((pruning / "skeleton_attention" / "metrics.json").read_text())
    model, _ = load_model(pruning / "skeleton_attention" / "model")
    groups = [a.n_groups for a in layer_attentions(model)]
    assert groups == metrics["kv_heads"] and sum(groups) == metrics["kept_groups"] and metrics["total_groups"] == 6
    assert [ffn_width(p) for p in ffn_output_projections(model)] == skeleton["widths"]  # SKELETON's FFNs as they were
    assert sum(p.numel() for p in model.parameters()) == metrics["parameters"] <= skeleton["parameters"]
    search = pd.read_parquet(pruning / "skeleton_attention" / "search.parquet")
    assert len(search) == metrics["attention_probes"] == 2 and search["keep_ratio"].iloc[0] == 0.5
    # the first round(0.5 * 6) = 3 groups of the attribution order, and a layer's first group where it has none
    scores = pd.read_parquet(pruning / "skeleton_attention" / "attribution.parquet")
    layers, groups_ranked = order_of(scores, "attribution")
    first = {int(layer) for layer in layers[:3]}
    assert search["kept_groups"].iloc[0] == 3 + (3 - len(first)) and scores["attribution"].max() > 0
    accepted = search.loc[search["accepted"], "keep_ratio"]
    assert metrics["attention_keep_ratio"] == (accepted.min() if len(accepted) else 1.0)
    # which groups: the pruned model's key/value rows are the dense ones of the groups kept at that ratio
    dense_attentions = layer_attentions(load_model(pruning / "skeleton" / "model")[0])
    kept = global_keep(layers, groups_ranked, [2, 2, 2], metrics["attention_keep_ratio"])
    for layer, (attention, dense) in enumerate(zip(layer_attentions(model), dense_attentions)):
        rows = torch.cat([torch.arange(g * 8, (g + 1) * 8) for g in kept[layer].tolist()])
        torch.testing.assert_close(attention.module.k_proj.weight, dense.module.k_proj.weight[rows])
    table = pd.read_parquet(pruning.parents[1] / "tables" / "pruning.parquet")
    kept = table.set_index("method")["attention groups kept (%)"]
    assert kept["skeleton + attention groups (ours)"] == round(100 * sum(groups) / 6, 1) and kept["skeleton"] == 100


def assert_pruning_outputs(out: Path) -> None:
    """Both pruned models per task reload with the accuracy the stage recorded; table, speed and plots exist."""
    from skill_neurons.architecture import ffn_output_projections, ffn_width
    from skill_neurons.models import load_model

    for task in PRUNED:
        metrics = json.loads((out / "pruning" / task / "skeleton" / "metrics.json").read_text())
        model, _ = load_model(out / "pruning" / task / "skeleton" / "model")
        widths = [ffn_width(p) for p in ffn_output_projections(model)]
        assert widths == metrics["widths"] and sum(widths) == metrics["kept_neurons"] <= 3 * 48
        assert sum(p.numel() for p in model.parameters()) == metrics["parameters"]
        # Wang et al.'s pruned models were timed (speed.parquet below), then removed: keep_models is false
        assert not [p for p in (out / "pruning" / task / "skill_neurons").rglob("model*") if p.is_dir()]
        skeleton = json.loads((out / "pruning" / task / "skeleton" / "metrics.json").read_text())
        search = pd.read_parquet(out / "pruning" / task / "skeleton" / "search.parquet")
        assert len(search) == skeleton["probes"] == 2 and search["keep_ratio"].iloc[0] == 0.5  # grid 0.25 .. 1
        # every layer keeps a multiple of 16 (round(0.5 * 144) = 72 alone is not one), the model as searched
        assert skeleton["width_multiple"] == 16 and all(width % 16 == 0 for width in skeleton["widths"])
        assert (search["kept_neurons"] % 16 == 0).all() and search["kept_neurons"].iloc[0] >= 72
        accepted = search.loc[search["accepted"], "keep_ratio"]
        assert skeleton["keep_ratio"] == (accepted.min() if len(accepted) else 1.0)
        for constant in ("prompt_mean", "input_mean"):
            skill = json.loads((out / "pruning" / task / "skill_neurons" / constant / "metrics.json").read_text())
            assert skill["pruned_layers"] == [1, 2] and skill["widths"] == [48, 1, 1]  # round(0.02 * 48) = 1
            assert skill["constant"] == constant
        selection = pd.read_parquet(out / "pruning" / task / "selection.parquet")
        assert set(selection["method"]) == {
            "dense",
            "attribution",
            "activation",
            "gradient",
            "random",
            "predictivity",
            "attribution_signed_sum",
        }
        assert_attention_pruning_outputs(out / "pruning" / task, skeleton)
        speed = pd.read_parquet(out / "pruning" / task / "speed.parquet")
        assert len(speed) == 4 * 2 and (speed.loc[speed["variant"] == "dense", "speedup"] == 1.0).all()
        assert speed["forward_peak_mb"].notna().all()  # measured in a child interpreter, also from a Snakemake script
        assert (out / "plots" / task / "pruning.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_parquet(out / "tables" / "pruning.parquet")
    assert table["method"].tolist() == [
        "dense (prompt tuning)",
        "dense, prompt re-tuned alike (control)",
        "skill_neurons",
        "skill_neurons (input-token mean, ours)",
        "skeleton",
        "skeleton + attention groups (ours)",
    ] * len(PRUNED)
    assert "speedup float32" in table.columns


def planned_jobs(folder: Path, config: dict, name: str) -> set[str]:
    """The jobs a dry run of `config` plans against the finished tiny run, as 'rule[wildcards]'."""
    result = snakemake(
        "--dry-run", "--configfile", str(write_config(config, folder / name)), "--directory", str(folder)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs, rule = set(), None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            if rule is not None:
                jobs.add(rule)
            rule = match.group(1)
        elif rule is not None and (match := re.match(r"^\s+wildcards: (.*)$", line)):
            wildcards = ",".join(w.split("=")[1] for w in match.group(1).split(", ") if not w.startswith("model="))
            jobs.add(f"{rule}[{wildcards}]" if wildcards else rule)
            rule = None
    if rule is not None:
        jobs.add(rule)
    return jobs


def jobs_of(rule: str, *wildcard_sets) -> set[str]:
    return {f"{rule}[{','.join(map(str, w))}]" for w in itertools.product(*wildcard_sets)} if wildcard_sets else {rule}


PLOTS_OF_SWEEPS = {"neuronal_importance", "perturbation_table", "plot_importance", "reproduction_table", "all"}


def reversed_mappings(value):
    """The same config with every mapping's keys in reverse order (lists keep theirs: their order means)."""
    if isinstance(value, dict):
        return {k: reversed_mappings(v) for k, v in reversed(list(value.items()))}
    return value


@pytest.mark.slow
def test_a_reordered_yaml_reruns_nothing(tiny_run):
    folder, config = tiny_run
    assert planned_jobs(folder, reversed_mappings(config), "reordered.yaml") == set()


@pytest.mark.slow
def test_keeping_the_text_states_reruns_nothing(tiny_run):
    folder, config = tiny_run
    kept = {**config, "activations": {"keep_text_states": True}}
    assert planned_jobs(folder, kept, "kept.yaml") == set()


@pytest.mark.slow
def test_pruned_models_asked_for_by_name_are_pruned_again_and_reload_as_recorded(tiny_run, tmp_path):
    from skill_neurons.architecture import ffn_output_projections, ffn_width
    from skill_neurons.models import load_model

    folder = tmp_path / "run"
    shutil.copytree(tiny_run[0], folder, symlinks=True)
    pruning = tiny_run[1]["pruning"]
    config = {**tiny_run[1], "pruning": {**pruning, "skill_neurons": {"keep_models": True}}}
    assert planned_jobs(folder, config, "kept.yaml") == set()  # switching it on makes no removed model again
    constants = ("prompt_mean", "input_mean")
    models = [f"results/tiny/pruning/{task}/skill_neurons/{c}/model" for task in PRUNED for c in constants]
    result = snakemake(
        "--cores", "2", "--configfile", str(folder / "kept.yaml"), "--directory", str(folder), *models
    )  # asked for by name, they are pruned again
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = folder / "results" / "tiny" / "pruning"
    for task in PRUNED:
        models = {}
        for constant in ("prompt_mean", "input_mean"):
            metrics = json.loads((out / task / "skill_neurons" / constant / "metrics.json").read_text())
            models[constant], _ = load_model(out / task / "skill_neurons" / constant / "model")
            widths = [ffn_width(p) for p in ffn_output_projections(models[constant])]
            assert widths == metrics["widths"] == [48, 1, 1]  # round(0.02 * 48) = 1 in the 2 pruned layers
            assert sum(p.numel() for p in models[constant].parameters()) == metrics["parameters"]
        # The two constants differ only in the folded bias: b = W_out[:, frozen] @ c[frozen], c per constant.
        biases = {c: model.model.layers[1].mlp.down_proj.bias for c, model in models.items()}
        assert not torch.allclose(biases["prompt_mean"], biases["input_mean"])


@pytest.mark.slow
def test_a_new_reader_after_the_release_encodes_the_text_again_and_reruns_no_other_reader(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run[0], folder, symlinks=True)  # copy2 keeps the times: the copy is as finished
    config = {**tiny_run[1], "label_words": {**tiny_run[1]["label_words"], "draws": 3}}
    planned = planned_jobs(folder, config, "three_draws.yaml")
    new_draw = {f"{rule}[toy,2]" for rule in ("draw_label_words", "tune_random_words", "dump_random_words")}
    assert new_draw <= planned and "release_text[toy]" in planned
    reader_rules = (
        "encode_text",
        "tune_",
        "dump_",
        "perturbation",
        "prompt_transfer",
        "skeleton",
        "skill_",
        "selection",
    )
    readers = {job for job in planned if job.startswith(reader_rules)}
    assert readers == new_draw - {"draw_label_words[toy,2]"}
    result = snakemake("--cores", "2", "--configfile", str(folder / "three_draws.yaml"), "--directory", str(folder))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (folder / "results/logs/tiny/tune_random_words/toy/draw2.log").read_text()
    assert "encoding it again" in log and "text of 92 examples encoded" in log
    assert not (folder / "results/tiny/text/toy.safetensors").exists()  # released again after its new reader
    assert planned_jobs(folder, config, "three_draws.yaml") == set()


@pytest.mark.slow
def test_storing_the_text_in_float16_encodes_it_again_and_reruns_its_readers(tiny_run):
    folder, config = tiny_run
    tasks, seeds = sorted(config["tasks"]), config["seeds"]
    half = {**config, "activations": {**config.get("activations", {}), "text_dtype": "float16"}}
    planned = planned_jobs(folder, half, "half.yaml")
    assert jobs_of("encode_text", tasks) | jobs_of("tune_prompt", tasks, seeds) <= planned
    assert not any(job.startswith(("split_data", "prepare_model")) for job in planned)


@pytest.mark.slow
def test_skeletons_width_multiple_reruns_its_pruning_and_only_the_timed_pruned_model_besides(tiny_run):
    folder, config = tiny_run
    pruning = config["pruning"]
    unrounded = {**config, "pruning": {**pruning, "skeleton": {**pruning["skeleton"], "width_multiple": 1}}}
    planned = planned_jobs(folder, unrounded, "unrounded.yaml")
    assert jobs_of("skeleton_pruning", PRUNED) <= planned
    assert not any(job.startswith(("tune_prompt", "selection_comparison")) for job in planned)
    # Wang et al.'s timed model is temporary: the speed benchmark that reruns with SKELETON's prunes it again.
    wang = {job for job in planned if job.startswith("skill_neuron_pruning")}
    assert wang == jobs_of("skill_neuron_pruning", PRUNED, ["prompt_mean"])


@pytest.mark.slow
def test_switching_attention_groups_off_reruns_the_speed_benchmark_and_the_table_not_skeleton(tiny_run):
    folder, config = tiny_run
    pruning = config["pruning"]
    off = {**config, "pruning": {**pruning, "skeleton": {**pruning["skeleton"], "attention_groups": False}}}
    planned = planned_jobs(folder, off, "attention_off.yaml")
    assert {"speed_benchmark", "pruning_table"} <= planned
    untouched = ("neuron_attribution", "skeleton_pruning", "attention_attribution", "skeleton_attention_pruning")
    assert not [job for job in planned if job.startswith((*untouched, "tune_prompt"))]


@pytest.mark.slow
def test_a_perturbation_setting_reruns_only_the_sweeps_and_their_plots(tiny_run):
    folder, config = tiny_run
    changed = {**config, "perturbation": {**config["perturbation"], "sigma": 0.5}}
    tasks, seeds = list(config["tasks"]), config["seeds"]
    # The tuned models' sweeps (tuning_methods) perturb with the same sigma: they and their table rerun too.
    assert planned_jobs(folder, changed, "sigma.yaml") == (
        jobs_of("perturbation_sweep", tasks, seeds)
        | jobs_of("plot_perturbation", tasks)
        | PLOTS_OF_SWEEPS
        | jobs_of("method_sweep", ["toy"], ["bitfit"])
        | {"methods_table"}
        | jobs_of("release_text", tasks)  # a sweep reads the text store: its release follows it
    )


@pytest.mark.slow
def test_a_plot_style_reruns_only_the_plots(tiny_run):
    folder, config = tiny_run
    changed = {**config, "plots": {**config["plots"], "style": "ticks"}}
    tasks = list(config["tasks"])
    plots = {"plot_predictivity", "plot_top_neuron", "plot_perturbation"}
    assert planned_jobs(folder, changed, "style.yaml") == (
        set().union(*(jobs_of(rule, tasks) for rule in plots))
        | jobs_of("plot_pruning", PRUNED)
        | {"plot_importance", "plot_specificity", "all"}
    )


@pytest.mark.slow
def test_adding_a_seed_reruns_that_seeds_jobs_and_what_aggregates_seeds(tiny_run):
    folder, config = tiny_run
    tasks, seeds = list(config["tasks"]), config["seeds"]
    new = max(seeds) + 1
    per_seed = {"tune_prompt", "dump_activations", "score_neurons"}
    expected = set().union(*(jobs_of(rule, tasks, [new]) for rule in per_seed))
    expected |= set().union(
        *(
            jobs_of(rule, tasks)
            for rule in ("rank_neurons", "plot_predictivity", "plot_top_neuron", "plot_perturbation")
        )
    )
    # The sweeps of the old seeds rerun too: they perturb in the seed-averaged ranking, which changed.
    expected |= jobs_of("perturbation_sweep", tasks, [*seeds, new]) | jobs_of("table1") | PLOTS_OF_SWEEPS
    expected |= {"task_specificity", "plot_specificity", "specificity_table", "chance_table"}
    expected |= jobs_of("word_selectivity", tasks)  # reads the top neurons of the ranking
    # The random controls run one trial per seed: the new seed's trials join.
    expected |= jobs_of("random_model", [new])
    for rule in ("dump_control", "score_control"):
        expected |= jobs_of(rule, ["random_model", "random_prompt"], [new], tasks)
    # Pruning starts from seed 0's prompt: attribution and SKELETON stay; what reads the ranking reruns.
    expected |= set().union(*(jobs_of(rule, PRUNED) for rule in ("selection_comparison", "plot_pruning")))
    expected |= {"speed_benchmark"}  # one job over every pruned task: dense timed once
    expected |= jobs_of("skill_neuron_pruning", PRUNED, ["prompt_mean", "input_mean"])
    expected |= {"pruning_table", "controls_table"}
    # The tuned model's sweep perturbs in the rankings too; its tuning reads no prompt and stays.
    expected |= jobs_of("method_sweep", ["toy"], ["bitfit"]) | {"methods_table"}
    expected |= jobs_of("release_text", tasks)  # the new seed's jobs read the text store (encoded again)
    assert planned_jobs(folder, {**config, "seeds": [*seeds, new]}, "seed.yaml") == expected


@pytest.mark.slow
def test_a_model_change_reruns_everything_of_that_model_but_not_the_data(tiny_run):
    folder, config = tiny_run
    other = save_tiny_model(folder / "other-llama", "llama", seed=1)
    changed = {**config, "models": {"tiny": {**config["models"]["tiny"], "path": str(other)}}}
    tasks, seeds = list(config["tasks"]), config["seeds"]
    jobs = planned_jobs(folder, changed, "model.yaml")
    assert not any(job.startswith("split_data") for job in jobs)
    assert jobs_of("prepare_model") | jobs_of("tune_prompt", tasks, seeds) | jobs_of("table1") <= jobs
    assert jobs == planned_jobs(folder, {**config, "results": "elsewhere"}, "fresh.yaml") - jobs_of("split_data", tasks)


@pytest.mark.slow
def test_an_edited_mirror_file_reruns_its_tasks_split_and_what_follows_but_not_the_other_task(tiny_run):
    folder, config = tiny_run
    source = Path(config["data_root"]) / "toy" / "validation.parquet"
    original, stat = source.read_bytes(), source.stat()
    edited = pd.read_parquet(source)
    edited.loc[0, "label"] = 1 - edited.loc[0, "label"]
    try:
        edited.to_parquet(source)
        jobs = planned_jobs(folder, config, "edited.yaml")
    finally:  # the other tests read the fixture's run: put the file back as it was, its time too
        source.write_bytes(original)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    seeds = config["seeds"]
    follows = jobs_of("encode_text", ["toy"]) | jobs_of("rank_neurons", ["toy"]) | jobs_of("table1")
    for rule in ("tune_prompt", "dump_activations", "score_neurons"):
        follows |= jobs_of(rule, ["toy"], seeds)
    assert jobs_of("split_data", ["toy"]) | follows <= jobs
    for rule in ("split_data", "encode_text", "rank_neurons"):
        assert not jobs_of(rule, ["toy3"]) & jobs, rule
    assert not jobs_of("tune_prompt", ["toy3"], seeds) & jobs


@pytest.mark.slow
def test_the_html_report_holds_every_plot_and_table_with_its_caption(tiny_run):
    folder, _ = tiny_run
    report = folder / "report.html"
    result = snakemake("--report", str(report), "--configfile", str(folder / "tiny.yaml"), "--directory", str(folder))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = report.read_text()
    for task in TINY_TASKS:
        for plot in ("predictivity", "top_neuron", "perturbation"):
            assert f"results/tiny/plots/{task}/{plot}.png" in html
    assert "results/tiny/plots/specificity.png" in html
    assert "results/tiny/plots/importance.png" in html and "results/tiny/tables/table1.html" in html
    assert "results/tiny/tables/chance.html" in html and "one-sided binomial p" in html
    assert "results/tiny/plots/toy/pruning.png" in html and "results/tiny/tables/pruning.html" in html
    for caption in (
        "share of neurons per dev predictivity bin",
        "train-set baseline (dashed)",
        "Neuronal importance: the area",
        "Prompt-tuning test accuracy next to",
        "toy3: test accuracy",
        "SKELETON's binary search probed",
        "Pruned models per task",
        "Perturbation sweeps in numbers",
    ):
        assert caption in html, caption
    assert '"Skill neurons"' in html and '"Perturbation"' in html and '"Pruning"' in html  # the categories
