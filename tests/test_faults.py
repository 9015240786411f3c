"""Faults a user meets: a stale checkpoint, a failing stage, bad YAML, a results path at the root, modes, a run
that is killed."""

import dataclasses
import fcntl
import json
import logging
import os
import re
import signal
import stat
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from skill_neurons.config import ConfigError, check_config_files, validate_config
from skill_neurons.data import Task
from skill_neurons.io import FILE_MODE, FOLDER_MODE, atomic_path, write_json
from skill_neurons.stages.common import stage
from skill_neurons.tuning import load_checkpoint, run_fingerprint, save_checkpoint

from .conftest import fake_job, save_tiny_model
from .test_config import SCHEMA, default
from .test_prompting import frame, prompted
from .test_workflow import ROOT, SNAKEMAKE, TINY_TASKS, snakemake, tiny_config, write_config

TASK = Task("toy", "toy", ("sentence",), "Review : {sentence}", (0, 1), (" negative", " positive"))


@pytest.fixture
def run_parts(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", "llama")
    splits = []
    for name in ("train", "dev", "test"):
        frame(8, 1).to_parquet(tmp_path / f"{name}.parquet")
        splits.append(tmp_path / f"{name}.parquet")
    return model_dir, splits


def test_the_fingerprint_changes_with_the_model_the_task_and_the_data(run_parts, tmp_path):
    model_dir, splits = run_parts
    reference = run_fingerprint(model_dir, TASK, splits)
    assert run_fingerprint(model_dir, TASK, splits) == reference  # a fingerprint of contents, not of a moment
    other_model = save_tiny_model(tmp_path / "other", "llama", seed=1)  # same shapes, other weights
    assert run_fingerprint(other_model, TASK, splits)["model"] != reference["model"]
    for change in ({"template": "Text : {sentence}"}, {"label_words": (" bad", " good")}, {"labels": (1, 0)}):
        changed = run_fingerprint(model_dir, dataclasses.replace(TASK, **change), splits)
        assert changed["task"] != reference["task"] and changed["model"] == reference["model"], change
    data = frame(8, 1)
    data.loc[0, "label"] = 1 - data.loc[0, "label"]  # one label flipped in one split
    data.to_parquet(splits[0])
    assert run_fingerprint(model_dir, TASK, splits)["data"] != reference["data"]


@pytest.mark.parametrize("changed", ["model", "task", "data", "lr", "seed"])
def test_a_checkpoint_of_another_run_is_ignored_with_the_reason_in_the_log(changed, tmp_path, caplog):
    settings = {"seed": 0, "lr": 0.1, "model": "m1", "task": "t1", "data": "d1"}
    save_checkpoint(tmp_path / "c.pt", {"settings": settings, "step": 46})
    assert load_checkpoint(tmp_path / "c.pt", dict(settings))["step"] == 46
    other = {**settings, changed: "another"}
    with caplog.at_level(logging.WARNING, logger="skill_neurons"):
        assert load_checkpoint(tmp_path / "c.pt", other) is None
    assert f"was made with another {changed}; starting afresh" in caplog.text


def test_a_resumed_tuning_of_another_model_starts_afresh(llama_dir, tmp_path, caplog):
    lm = prompted(llama_dir)
    args = dict(
        train=frame(16, 1),
        dev_batches=lm.batches(frame(8, 2), ["sentence"], 8),
        text_fields=["sentence"],
        seed=0,
        lr=0.05,
        batch_size=8,
        max_steps=2,
        eval_every=2,
        patience=5,
        init_std=0.5,
        checkpoint=tmp_path / "c.pt",
    )
    from skill_neurons.tuning import tune_prompt

    tune_prompt(lm, **args, fingerprint={"model": "old"})  # leaves its checkpoint at step 2
    again = tune_prompt(lm, **args, fingerprint={"model": "old"})
    assert again.resumed_from == 2  # the same run resumes
    with caplog.at_level(logging.WARNING, logger="skill_neurons"):
        result = tune_prompt(lm, **args, fingerprint={"model": "new"})
    assert result.resumed_from == 0 and "was made with another model; starting afresh" in caplog.text


def test_a_failing_stage_writes_its_error_into_the_rules_log(tmp_path):
    @stage
    def broken_stage(job):
        raise ValueError("column 'text' is bytes")

    log_file = tmp_path / "logs" / "broken.log"
    with pytest.raises(ValueError):
        broken_stage(fake_job(log=[str(log_file)]))
    text = log_file.read_text()
    assert "broken_stage failed" in text and "ValueError: column 'text' is bytes" in text and "Traceback" in text


def test_outputs_get_the_modes_of_the_umask_and_a_killed_writes_leftover_goes(tmp_path):
    target = tmp_path / "out.json"
    leftover = tmp_path / ".out.json.tmp-abc.json"
    leftover.write_text("half")
    write_json({"a": 1}, target)
    assert stat.S_IMODE(os.stat(target).st_mode) == FILE_MODE and not leftover.exists()
    with atomic_path(tmp_path / "folder", directory=True) as folder:
        (folder / "x").write_text("x")
    assert stat.S_IMODE(os.stat(tmp_path / "folder").st_mode) == FOLDER_MODE


def test_a_repeated_yaml_key_is_named_with_its_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seeds: [0]\nprompt:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=re.escape("key 'lr' appears twice in one mapping, on lines 3 and 4")):
        check_config_files([path])
    path.write_text("seeds: [0]\nprompt:\n  lr: 0.1\n")
    check_config_files([path])


def test_a_number_yaml_reads_as_text_gets_a_hint():
    config = default()
    config["prompt"]["lr"] = "1e-3"
    with pytest.raises(ConfigError, match=re.escape("(YAML reads 1e-3 as text: write 1.0e-3)")):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize("results", ["", "/", "  "])
def test_a_results_folder_at_the_root_is_refused(results):
    config = default()
    config["results"] = results
    with pytest.raises(ConfigError, match="config key results"):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["tasks"]["sst2"].update(template="Review: {text}"),
            "config key tasks.sst2: task 'sst2': template uses ['text'] not listed in text_fields",
        ),
        (lambda c: c["tasks"]["sst2"].update(labels=[0, 0]), "config key tasks.sst2: task 'sst2': repeated label"),
        (lambda c: c.update(device="gpu"), "config key device: 'gpu' does not match"),
        (lambda c: c["plots"].update(style="grid"), "config key plots.style: 'grid' is not one of"),
        (
            lambda c: (
                c["models"]["smollm2"].update(path="/no/such/model", gguf_package=None)
                or c["models"]["smollm2"].pop("gguf_package")
            ),
            "config key models.smollm2.path: no folder /no/such/model",
        ),
    ],
)
def test_task_device_style_and_model_path_errors_come_before_any_job(change, message):
    config = default()
    change(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config, SCHEMA)


def test_a_second_run_on_the_same_results_folder_is_refused(tmp_path):
    config = write_config(tiny_config(tmp_path), tmp_path / "tiny.yaml")
    (tmp_path / "results").mkdir()
    with open(tmp_path / "results" / ".skill_neurons.lock", "a+") as held:  # another run, started elsewhere
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        result = snakemake(
            "--cores", "1", "--configfile", str(config), "--directory", str(tmp_path), "results/data/toy/train.parquet"
        )
    assert result.returncode != 0
    assert "is being written by another run (pid 4242)" in result.stdout + result.stderr
    assert not (tmp_path / "results" / "data").exists()
    again = snakemake(
        "--cores", "1", "--configfile", str(config), "--directory", str(tmp_path), "results/data/toy/train.parquet"
    )  # the lock went with its holder
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_tuning_job_leaves_no_output_and_resumes_to_the_same_prompt(tmp_path):
    prompt = {"n_tokens": 3, "lr": 0.05, "max_steps": 300, "eval_every": 2, "patience": 1000, "batch_size": 8}
    config = tiny_config(tmp_path, seeds=[0], tasks={"toy": TINY_TASKS["toy"]}, prompt=prompt)
    run_dir = tmp_path / "results" / "tiny" / "prompts" / "toy" / "seed0"
    checkpoint = tmp_path / "results" / "tiny" / "checkpoints" / "toy" / "seed0.pt"
    target = "results/tiny/prompts/toy/seed0/metrics.json"
    args = [
        *SNAKEMAKE,
        "--cores",
        "1",
        "--configfile",
        str(write_config(config, tmp_path / "c.yaml")),
        "--directory",
        str(tmp_path),
        target,
    ]
    job = subprocess.Popen(
        args, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the run ended before its first checkpoint:\n" + job.communicate()[0][-3000:]
    os.killpg(job.pid, signal.SIGKILL)  # the whole run, as a node failure or an OOM kill would
    job.wait()
    assert checkpoint.exists()
    assert not [f for f in ("prompt.safetensors", "curve.parquet", "metrics.json") if (run_dir / f).exists()]

    assert snakemake("--unlock", "--configfile", str(tmp_path / "c.yaml"), "--directory", str(tmp_path)).returncode == 0
    resumed = snakemake("--cores", "1", "--configfile", str(tmp_path / "c.yaml"), "--directory", str(tmp_path), target)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] > 0 and metrics["steps"] == 300 and not checkpoint.exists()

    straight = {**config, "results": "straight"}
    uninterrupted = snakemake(
        "--cores",
        "1",
        "--configfile",
        str(write_config(straight, tmp_path / "s.yaml")),
        "--directory",
        str(tmp_path),
        "straight/tiny/prompts/toy/seed0/metrics.json",
    )
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:] + uninterrupted.stderr[-3000:]
    reference = load_file(str(tmp_path / "straight/tiny/prompts/toy/seed0/prompt.safetensors"))["prompt"]
    assert torch.equal(load_file(str(run_dir / "prompt.safetensors"))["prompt"], reference)
