"""GPU leases: each concurrent job gets its own card, a killed job frees its card, no GPU means CPU."""

import os
import subprocess
import sys

import pytest
import torch

from skill_neurons import devices

HOLD = """
import sys, time
from pathlib import Path
from skill_neurons.devices import lease_gpu
print(lease_gpu(['3', '5'], Path(sys.argv[1])), flush=True)
time.sleep(60)
"""


def test_concurrent_jobs_lease_different_gpus_and_a_killed_job_frees_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "3"
        assert devices.lease_gpu(["3", "5"], tmp_path) == "5"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        with pytest.raises(RuntimeError, match=r"all GPUs \['3', '5'\] stayed leased .* --resources gpu=N"):
            devices.lease_gpu(["3", "5"], tmp_path, timeout_s=0.2, poll_s=0.05)
        holder.kill()
        holder.wait()
        assert devices.lease_gpu(["3", "5"], tmp_path, timeout_s=5, poll_s=0.05) == "3"
    finally:
        holder.kill()
        for handle in devices._held:
            handle.close()
        devices._held.clear()


def test_visible_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 2")
    assert devices.visible_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert devices.visible_gpus() == []


def test_no_gpu_falls_back_to_the_cpu_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with caplog.at_level("INFO", logger="skill_neurons.devices"):
        assert devices.pick_device("auto") == torch.device("cpu")
    assert "no GPU found; running on the CPU" in caplog.text
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_a_cuda_device_asked_for_but_absent_is_named_with_its_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.pick_device("cuda:0") == torch.device("cuda:0")  # one card: cuda:0 is there
    with pytest.raises(RuntimeError, match=r"config key device: 'cuda:1' asked for, but this machine shows 1 CUDA"):
        devices.pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"config key device: 'cuda' asked for, but this machine shows 0 CUDA"):
        devices.pick_device("cuda")
