"""What the workflow plans, without running it: lint, dry runs of the shipped configs, each job's resources,
and which changed inputs rerun what."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import save_tiny_model
from .test_workflow import ROOT, snakemake, tiny_config, write_config


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for rule" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "configfile",
    [
        None,
        "config/quick.yaml",
        "config/paper.yaml",
        "config/aux_metrics.yaml",
        "config/aux_metrics_paper.yaml",
        "config/seven_tasks.yaml",
    ],
)
def test_shipped_configs_build_their_dag(configfile, tmp_path):
    # An empty results folder: a finished run in the checkout must not leave the DAG without jobs.
    args = (
        ["--dry-run", "--quiet", "rules"]
        + (["--configfile", configfile] if configfile else [])
        + ["--config", f"results={tmp_path / 'results'}"]
    )
    result = snakemake(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("tune_generation" if "aux_metrics" in str(configfile) else "tune_prompt") in result.stdout


def test_the_second_model_example_plans_every_stage_for_a_model_in_a_local_folder(tmp_path):
    """config/second_model.yaml with its folder made: a tiny Gemma-3 (scaled embeddings) saved where it points."""
    config = yaml.safe_load((ROOT / "config" / "second_model.yaml").read_text())
    save_tiny_model(tmp_path / config["models"]["gemma3"]["path"], "gemma3")
    config["data_root"] = str(ROOT.parent / "shared" / "data")
    result = snakemake(
        "--dry-run",
        "--quiet",
        "rules",
        "--configfile",
        str(write_config(config, tmp_path / "second.yaml")),
        "--directory",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert jobs["tune_prompt"] == "4" and jobs["perturbation_sweep"] == "2" and jobs["skeleton_pruning"] == "1"
    assert jobs["tune_random_words"] == "2" and jobs["reproduction_table"] == "1" and "prepare_model" in jobs


def test_a_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["prompt"]["n_tokens"] = "eight"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("--dry-run", "--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert "config key prompt.n_tokens: 'eight' is not of type 'integer'" in result.stdout + result.stderr


def test_the_paper_config_plans_every_stage_for_7_tasks_and_5_seeds(tmp_path):
    result = snakemake(
        "--dry-run", "--quiet", "rules", "--configfile", "config/paper.yaml", "--config", f"results={tmp_path}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    for rule in ("tune_prompt", "dump_activations", "score_neurons", "perturbation_sweep"):
        assert jobs[rule] == "35", rule
    assert jobs["rank_neurons"] == "7" and jobs["neuronal_importance"] == "1"
    for rule in (
        "neuron_attribution",
        "skeleton_pruning",
        "selection_comparison",
        "plot_pruning",
    ):
        assert jobs[rule] == "7", rule
    assert jobs["speed_benchmark"] == "1"  # dense timed once, beside every task's pruned models
    assert jobs["encode_text"] == "7"  # RoBERTa's files say "no text states": the prompt sits inside the text
    assert jobs["release_text"] == "7"
    for rule in ("dump_control", "score_control"):
        assert jobs[rule] == "77", rule  # (hard prompt once + 5 random prompts + 5 random models) x 7 tasks
    assert jobs["skill_neuron_pruning"] == "14"  # the authors' frozen constant and ours, per task
    assert jobs["pruning_table"] == "1" and jobs["random_model"] == "5" and jobs["reproduction_table"] == "1"
    assert jobs["word_selectivity"] == "7"
    # every task shares its label words with another: each seed's prompt goes to every task with its words
    assert jobs["prompt_transfer"] == "35" and jobs["transferability_table"] == "1"
    assert jobs["tune_method"] == "14" and jobs["method_sweep"] == "14" and jobs["methods_table"] == "1"
    assert jobs["chance_table"] == "1"
    assert jobs["total"] == "476"  # 469 jobs and a text release per task


def test_the_default_config_sweeps_the_prompts_of_its_sweep_seeds_only(tmp_path):
    # an empty results folder: a run in the checkout must not change what is planned
    result = snakemake(
        "--dry-run", "--quiet", "rules", "--configfile", "config.yaml", "--config", f"results={tmp_path}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    sweep_seeds = yaml.safe_load((ROOT / "config.yaml").read_text())["perturbation"]["seeds"]
    assert jobs["perturbation_sweep"] == str(3 * len(sweep_seeds)) and jobs["tune_prompt"] == "15"


def test_model_jobs_take_memory_and_runtime_from_the_models_size(tmp_path):
    model = {
        "path": str(save_tiny_model(tmp_path / "tiny-llama", "llama")),
        "mem_mb": 1234,
        "text_mem_mb": 766,
        "runtime_scale": 2.5,
    }
    config = tiny_config(tmp_path, models={"tiny": model}, gpus_per_job=1)
    result = snakemake(
        "--dry-run", "--configfile", str(write_config(config, tmp_path / "c.yaml")), "--directory", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources = {}
    for block in result.stdout.split("rule ")[1:]:
        line = next((x for x in block.splitlines() if x.strip().startswith("resources:")), "")
        resources.setdefault(block.split(":")[0], dict(kv.split("=", 1) for kv in line.split(": ", 1)[1].split(", ")))
    # a reader of the text store: its own 120 minutes and an encode's 30, which it runs if the store was released
    assert resources["tune_prompt"]["runtime"] == "375" and resources["tune_prompt"]["mem_mb"] == "2000"
    assert resources["encode_text"]["runtime"] == "75"
    assert resources["neuron_attribution"]["mem_mb"] == "1234"  # holds no stored text
    assert resources["perturbation_sweep"]["runtime"] == "225" and resources["dump_activations"]["gpu"] == "1"
    assert resources["split_data"]["runtime"] == "10" and "gpu" not in resources["split_data"]


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_a_mirror_file_over_1_mb_copied_again_with_the_same_bytes_reruns_nothing_at_our_limit(tmp_path, profile):
    big = tmp_path / "mirror.parquet"
    content = np.random.default_rng(0).bytes(1_500_000)  # over Snakemake's default 1 MB checksum limit
    big.write_bytes(content)
    (tmp_path / "Snakefile").write_text(
        'rule count:\n    input: "mirror.parquet"\n    output: "count.txt"\n    shell: "wc -c < {input} > {output}"\n'
    )
    settings = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    limit = f"--max-checksum-file-size={settings['max-checksum-file-size']}"

    def plan(*options: str) -> str:
        command = [sys.executable, "-m", "snakemake", "--cores", "1", "--workflow-profile", "none", *options]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    plan(limit)
    later = big.stat().st_mtime + 60
    big.write_bytes(content)
    os.utime(big, (later, later))  # the mirror copied again: same bytes, a newer time than the output
    assert "Nothing to be done" in plan(limit, "--dry-run")
    assert "count" in plan("--dry-run") and "Nothing to be done" not in plan("--dry-run")  # Snakemake's 1 MB
    big.write_bytes(content[:-1] + b"\x00" if content[-1:] != b"\x00" else content[:-1] + b"\x01")
    os.utime(big, (later + 60, later + 60))
    assert "Nothing to be done" not in plan(limit, "--dry-run")  # new bytes still rerun it


def planned_files(config_file: str, results: Path) -> dict[str, tuple[str, list[str], tuple[str, ...]]]:
    """A dry run of `config_file` into an empty `results`: each planned output file -> its job's rule, inputs and
    outputs."""
    result = snakemake(
        "--dry-run", "--configfile", config_file, "--directory", str(ROOT), "--config", f"results={results}"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    producers, rule, inputs = {}, None, []
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, inputs = match.group(1), []
        elif rule and line.startswith("    input: "):
            inputs = line.removeprefix("    input: ").split(", ")
        elif rule and line.startswith("    output: "):
            outputs = tuple(line.removeprefix("    output: ").split(", "))
            producers |= dict.fromkeys(outputs, (rule, inputs, outputs))
    return producers


@pytest.mark.parametrize("config_file", ["config.yaml", "config/paper.yaml"])
def test_every_reader_of_a_text_store_comes_before_its_release(config_file, tmp_path):
    producers = planned_files(config_file, tmp_path)
    releases = {file: inputs[0] for file, (rule, inputs, _) in producers.items() if rule == "release_text"}
    assert releases and all(ticket.endswith(".json") and "/text/" in ticket for ticket in releases.values())
    for released, ticket in releases.items():
        before, todo = set(), [released]
        while todo:  # every file the release waits for, directly or through the jobs that make them
            for file in producers.get(todo.pop(), ("", [], ()))[1]:
                if file not in before:
                    before.add(file)
                    todo.append(file)
        readers = {job for rule, inputs, job in producers.values() if ticket in inputs and rule != "release_text"}
        assert readers, ticket
        assert not [job for job in readers if not set(job) & before], ticket
