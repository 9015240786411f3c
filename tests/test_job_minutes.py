"""The job-minutes benchmark: per-rule sums of Snakemake's benchmark files."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from job_minutes import job_minutes  # noqa: E402

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path: Path, seconds: float, cpu: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")


def test_job_minutes_sum_each_rules_jobs_and_the_run(tmp_path):
    write(tmp_path / "smollm2" / "tune_prompt" / "sst2" / "seed0.tsv", 120, 60, 900)
    write(tmp_path / "smollm2" / "tune_prompt" / "sst2" / "seed1.tsv", 60, 30, 1000)
    write(tmp_path / "smollm2" / "table1.tsv", 6, 6, 100)
    write(tmp_path / "data" / "sst2.tsv", 6, 6, 50)  # split_data's files: no rule name on the path
    write(tmp_path / "smollm2" / "aux" / "hans" / "seed0" / "tune_generation.tsv", 6, 6, 10)
    table = job_minutes(tmp_path).set_index("rule")
    assert table.loc["tune_prompt", "jobs"] == 2 and table.loc["tune_prompt", "wall_min"] == 3.0
    assert table.loc["tune_prompt", "cpu_min"] == 1.5 and table.loc["tune_prompt", "max_rss_mb"] == 1000
    assert table.loc["table1", "jobs"] == 1 and table.loc["data", "cpu_min"] == pytest.approx(0.1)
    assert table.loc["tune_generation", "jobs"] == 1
    assert table.loc["total", "jobs"] == 5 and table.loc["total", "cpu_min"] == pytest.approx(1.8)
    assert table.index[0] == "tune_prompt"  # the largest first
