"""The job-minutes benchmark: per-rule sums of Snakemake's benchmark files and the stages' logs, and core use."""

import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from job_minutes import core_use, job_minutes, job_records  # noqa: E402

from skill_neurons.stages.common import stage

from .conftest import fake_job

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path: Path, seconds: float, cpu: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")


def test_job_minutes_sum_each_rules_jobs_and_the_run(tmp_path):
    write(tmp_path / "smollm2" / "tune_prompt" / "sst2" / "seed0.tsv", 120, 60, 900)
    write(tmp_path / "smollm2" / "tune_prompt" / "sst2" / "seed1.tsv", 60, 30, 1000)
    write(tmp_path / "smollm2" / "table1.tsv", 6, 6, 100)
    write(tmp_path / "smollm2" / "speed_benchmark.tsv", 150, 1, 100)  # the longest job, and waiting mostly
    write(tmp_path / "data" / "sst2.tsv", 6, 6, 50)  # split_data's files: no rule name on the path
    write(tmp_path / "smollm2" / "aux" / "hans" / "seed0" / "tune_generation.tsv", 6, 6, 10)
    table = job_minutes(job_records(tmp_path)).set_index("rule")
    assert table.loc["tune_prompt", "jobs"] == 2 and table.loc["tune_prompt", "wall_min"] == 3.0
    assert table.loc["tune_prompt", "cpu_min"] == 1.5 and table.loc["tune_prompt", "max_rss_mb"] == 1000
    assert table.loc["table1", "jobs"] == 1 and table.loc["data", "cpu_min"] == pytest.approx(0.1)
    assert table.loc["tune_generation", "jobs"] == 1
    assert table.loc["total", "jobs"] == 6 and table.loc["total", "cpu_min"] == pytest.approx(
        1.82
    )  # rounded to 2 places
    assert list(table.index[:2]) == ["tune_prompt", "speed_benchmark"]  # the largest wall first, not CPU


def write_log(path: Path, start: float, end: float, cpu: float, threads: int) -> None:
    """A stage's log as `stage` ends it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "2026-12-02 10:00:00,000 skill_neurons INFO started\n"
        "2026-12-02 10:00:02,250 skill_neurons INFO tune_prompt done in 100.0 s "
        f"(process: CPU {cpu} s with imports, {threads} threads, from {start:.3f} to {end:.3f} epoch s)\n"
    )


def test_a_jobs_cpu_threads_and_place_come_from_its_log_and_the_benchmarks_sample_without_one(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    write(benchmarks / "smollm2" / "tune_prompt" / "sst2" / "seed0.tsv", 120, 15, 900)  # Snakemake sampled 15 s
    write(benchmarks / "smollm2" / "tune_prompt" / "sst2" / "seed1.tsv", 60, 30, 900)
    write_log(tmp_path / "logs" / "smollm2" / "tune_prompt" / "sst2" / "seed0.log", 5000.5, 5121.25, 114.5, 2)
    jobs = job_records(benchmarks).set_index("wall_s")
    assert jobs.loc[120, "cpu_s"] == 114.5 and jobs.loc[120, "threads"] == 2
    assert jobs.loc[120, "start"] == 5000.5 and jobs.loc[120, "end"] == 5121.25
    assert jobs.loc[60, "cpu_s"] == 30 and jobs.loc[60, ["threads", "start", "end"]].isna().all()
    cpu_minutes = job_minutes(job_records(benchmarks)).set_index("rule").loc["tune_prompt", "cpu_min"]
    assert cpu_minutes == pytest.approx((114.5 + 30) / 60, abs=0.01)


def test_a_stage_logs_the_line_the_job_minutes_read(tmp_path):
    @stage
    def busy_stage(job):
        sum(i * i for i in range(2_000_000))

    log_file = tmp_path / "logs" / "busy.log"
    before = time.time()
    busy_stage(fake_job(log=[str(log_file)], threads=3))
    write(tmp_path / "benchmarks" / "busy.tsv", 5, 0, 100)
    (job,) = job_records(tmp_path / "benchmarks").itertuples()
    assert job.threads == 3 and job.cpu_s > 0
    assert job.start <= before <= job.end <= time.time()  # the process (this test's) began before the stage


def jobs_table(*rows) -> pd.DataFrame:
    """(rule, threads, start minute, end minute) rows as job_records gives them (times in seconds)."""
    frame = pd.DataFrame(rows, columns=["rule", "threads", "start", "end"])
    frame[["start", "end"]] *= 60.0
    return frame.assign(wall_s=frame["end"] - frame["start"])


def test_core_use_counts_the_minutes_with_a_core_free_and_who_ran_then():
    # 2 cores over 10 min: A (1 thread) 0-6 min, B (1 thread) 0-4 min, C (2 threads) 6-9 min, nothing 9-10.
    jobs = jobs_table(("a", 1, 0, 6), ("b", 1, 0, 4), ("c", 2, 6, 9))
    summary, alone = core_use(jobs, cores=2, start=0.0, end=600.0)
    # held: 6 + 4 + 2 x 3 = 16 of 20 core-min; a core free 4-6 (A alone) and 9-10 (none)
    assert summary == {
        "core_min": 20.0,
        "held_core_min": 16.0,
        "held_share": 0.8,
        "min_with_a_free_core": 3.0,
        "jobs_without_log": 0,
        "jobs_outside_run": 0,
    }
    assert alone.to_dict("records") == [{"rule": "a", "job_min_with_a_free_core": 2.0}]


def test_core_use_counts_only_the_run_and_names_what_it_cannot_place():
    # 2 cores over minutes 10-20: an earlier run's job (0-5), one crossing the start (8-12, 2 threads), one
    # without a log, and 3 jobs of 1 thread at once (12-16: oversubscribed, no core free).
    jobs = jobs_table(("old", 2, 0, 5), ("early", 2, 8, 12), ("x", 1, 12, 16), ("y", 1, 12, 16), ("z", 1, 12, 18))
    jobs = pd.concat([jobs, pd.DataFrame([{"rule": "nolog", "wall_s": 60.0}])], ignore_index=True)
    summary, alone = core_use(jobs, cores=2, start=600.0, end=1200.0)
    # held inside the run: early 2 x 2 + x 4 + y 4 + z 6 = 18 core-min; a core free 16-18 (z alone) and 18-20
    assert summary["held_core_min"] == 18.0 and summary["core_min"] == 20.0
    assert summary["min_with_a_free_core"] == 4.0
    assert summary["jobs_without_log"] == 1 and summary["jobs_outside_run"] == 1
    assert alone.to_dict("records") == [{"rule": "z", "job_min_with_a_free_core": 2.0}]
