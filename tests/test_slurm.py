"""profiles/slurm against fake SLURM commands (tests/fake_slurm): what is submitted, and that the jobs run."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import save_tiny_model, write_mirror
from .test_workflow import ROOT, TINY_TASKS, snakemake

FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"

# What a user fills in for the profile's placeholders; the fake cluster knows these and nothing else.
SITE = {"<your-account>": "proj42", "<cpu-partition>": "cpu", "<gpu-partition>": "gpu", "<gpu-model>": "a100"}


def site_profile(folder: Path) -> Path:
    """profiles/slurm with its placeholders filled in, as a user would. Overriding them on the command line
    instead would drop the rest of the profile's default-resources and set-resources (Snakemake replaces a
    profile key whole)."""
    text = PROFILE.read_text()
    for placeholder, value in SITE.items():
        text = text.replace(placeholder, value)
    settings = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert not re.search(r"<[\w-]+>", settings), "a placeholder in the profile that SITE does not fill"
    folder.mkdir()
    (folder / "config.yaml").write_text(text)
    return folder


def fake_cluster(monkeypatch, tmp_path: Path) -> Path:
    """The fake commands first on PATH for the snakemake() subprocess, which inherits this environment.
    Returns the file their calls are logged to."""
    calls = tmp_path / "slurm_calls.jsonl"
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(calls))
    monkeypatch.setenv("FAKE_SLURM_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_SLURM_ACCOUNTS", SITE["<your-account>"])
    monkeypatch.setenv("FAKE_SLURM_PARTITIONS", f"{SITE['<cpu-partition>']},{SITE['<gpu-partition>']}")
    return calls


def read_calls(calls: Path, cmd: str) -> list[dict]:
    if not calls.exists():
        return []
    return [call for call in map(json.loads, calls.read_text().splitlines()) if call["cmd"] == cmd]


def tiny_config(tmp_path: Path) -> Path:
    config = {
        "data_root": str(write_mirror(tmp_path / "mirror")),
        "model_threads": 2,  # not 1, so the GPU job's --cpus-per-task shows it comes from the rule's threads
        "models": {"tiny": {"path": str(save_tiny_model(tmp_path / "tiny-llama", "llama")), "mem_mb": 500}},
        "seeds": [0],
        "tasks": {"toy": TINY_TASKS["toy"]},
        "data": {"max_train": 48, "max_dev": 20, "max_test": 24},
        "prompt": {"n_tokens": 3, "lr": 0.05, "max_steps": 2, "eval_every": 2, "batch_size": 8},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "tiny.yaml"


@pytest.mark.slow
def test_slurm_profile_submits_cpu_and_gpu_jobs_that_run(tmp_path, monkeypatch):
    calls = fake_cluster(monkeypatch, tmp_path)
    profile = site_profile(tmp_path / "profile")
    target = "results/tiny/prompts/toy/seed0/metrics.json"  # tune_prompt, after split_data and prepare_model
    # --workflow-profile none, as the profile says to run it; the first status check after 1 s, not 40 s.
    result = snakemake(
        "--profile",
        str(profile),
        "--workflow-profile",
        "none",
        "--configfile",
        str(tiny_config(tmp_path)),
        "--directory",
        str(tmp_path),
        "--slurm-init-seconds-before-status-checks",
        "1",
        target,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    submitted = {call["options"]["--comment"].split("_wildcards_")[0]: call for call in read_calls(calls, "sbatch")}
    assert set(submitted) == {"rule_split_data", "rule_prepare_model", "rule_encode_text", "rule_tune_prompt"}

    gpu = submitted["rule_tune_prompt"]["options"]
    assert gpu["-A"] == "proj42" and gpu["-p"] == "gpu"
    assert gpu["--gpus"] == "a100:1" and "--gres" not in gpu  # gpu + gpu_model: one GPU of that model
    assert gpu["--mem"] == "4500"  # models.tiny.mem_mb + text_mem_mb (default 4000): it holds the stored text
    assert gpu["-t"] == "150"  # the rule's runtime, minutes: its own 120 and an encode of the text (30)
    assert gpu["--cpus-per-task"] == "2"  # the rule's threads: config model_threads
    assert "--ntasks" not in gpu  # the plugin sets no task count for GPU jobs unless asked

    cpu = submitted["rule_split_data"]["options"]
    assert cpu["-A"] == "proj42" and cpu["-p"] == "cpu"
    assert not {"--gpus", "--gres", "-G"} & set(cpu)
    assert cpu["--mem"] == "4000" and cpu["-t"] == "10"  # the rule's own, not the profile's defaults
    assert cpu["--cpus-per-task"] == "1" and cpu["--ntasks"] == "1"
    assert submitted["rule_prepare_model"]["options"]["-p"] == "cpu"  # a model rule, but no GPU needed

    # The jobs really ran: submitted, polled by job name, started with srun inside the allocation.
    assert (tmp_path / target).exists() and (tmp_path / "results/data/toy/train.parquet").exists()
    (run_name,) = {call["options"]["--job-name"] for call in read_calls(calls, "sbatch")}  # one per run
    status_queries = [call["argv"] for call in read_calls(calls, "sacct")]
    assert status_queries and all(argv[argv.index("--name") + 1] == run_name for argv in status_queries)
    steps = {call["job_id"]: call["options"] for call in read_calls(calls, "srun")}
    assert set(steps) == {call["job_id"] for call in read_calls(calls, "sbatch")}
    gpu_step = steps[submitted["rule_tune_prompt"]["job_id"]]
    assert gpu_step["--gpus"] == "1" and gpu_step["--cpus-per-task"] == "2"
    assert "--gpus" not in steps[submitted["rule_split_data"]["job_id"]]


def test_unfilled_placeholders_fail_before_any_submission(tmp_path, monkeypatch):
    calls = fake_cluster(monkeypatch, tmp_path)
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(PROFILE.read_text())
    result = snakemake(
        "--profile",
        str(tmp_path / "profile"),
        "--workflow-profile",
        "none",
        "--configfile",
        str(tiny_config(tmp_path)),
        "--directory",
        str(tmp_path),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "results/data/toy/train.parquet",
    )
    assert result.returncode != 0
    assert "The given account <your-account> appears to be invalid" in result.stdout + result.stderr
    assert read_calls(calls, "sbatch") == []


def test_every_rule_that_runs_a_model_on_a_gpu_gets_one_on_the_cluster():
    """The rules declaring the `gpu` resource are exactly the profile's set-resources, each with gpu: 1."""
    rules_with_gpu = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            resources = re.search(r"^\s+\*\*model_resources\((.*)\),$", block, flags=re.M)
            if resources and "gpu=False" not in resources.group(1):
                rules_with_gpu.add(block.split(":")[0])
    profile = yaml.safe_load(PROFILE.read_text())["set-resources"]
    assert rules_with_gpu == set(profile) and len(rules_with_gpu) == 21
    assert all(
        settings["gpu"] == 1 and settings["slurm_partition"] == "<gpu-partition>" for settings in profile.values()
    )
