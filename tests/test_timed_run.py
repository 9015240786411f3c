"""The timed run: the results folder's size sampled while a command runs, and the summary read back."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from timed_run import folder_sizes, parse_arguments, snakemake_cores, summarize, timed  # noqa: E402

from .test_job_minutes import write, write_log  # noqa: E402


def test_the_disk_samples_hold_the_peak_and_the_end_of_a_command(tmp_path):
    results = tmp_path / "results"
    grow_then_shrink = (
        f"import pathlib, time; r = pathlib.Path({str(results)!r}); r.mkdir(); (r / 'a').write_bytes(b'x' * 1000);"
        " (r / 'b').write_bytes(b'x' * 500); time.sleep(0.6); (r / 'a').unlink(); time.sleep(0.3)"
    )
    run = timed([sys.executable, "-c", grow_then_shrink], results, 0.05, tmp_path / "disk.tsv")
    disk = pd.read_csv(tmp_path / "disk.tsv", sep="\t")
    assert run["exit_status"] == 0 and run["end"] > run["start"]
    assert disk["bytes"].max() == 1500 and disk["bytes"].iloc[-1] == 500 and disk["bytes"].iloc[0] == 0


def test_a_failing_command_is_recorded_with_its_status(tmp_path):
    run = timed([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "none", 0.05, tmp_path / "disk.tsv")
    assert run["exit_status"] == 3


def test_the_summary_reads_wall_time_disk_and_job_minutes(tmp_path):
    run = {"start": 1000.0, "end": 1000.0 + 5400, "exit_status": 0, "command": ["snakemake", "--cores", "2"]}
    run |= {"name": "config.yaml", "commit": "abc1234", "cpu": "AMD EPYC", "bf16_unit": "AVX512-BF16", "cores": 2}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "disk.tsv").write_text("seconds\tbytes\n0\t0\n20\t9500000000\n5400\t6250000000\n")
    write(tmp_path / "benchmarks" / "smollm2" / "tune_prompt" / "sst2" / "seed0.tsv", 120, 60, 900)
    # the job's log: one thread from minute 28 to 30 of the run, the other core free all along; CPU 90 s
    write_log(tmp_path / "logs" / "smollm2" / "tune_prompt" / "sst2" / "seed0.log", 1000.0 + 1680, 1000.0 + 1800, 90, 1)
    text = summarize(tmp_path, tmp_path / "benchmarks")
    assert "| 180.0 | 2.0 | 0.011 | 90.0 | 0 | 0 |" in text  # 2 of 180 core-min held
    assert "| tune_prompt | 2.0 |" in text
    assert (
        "| config.yaml, 1970-01-01 00:16 UTC | abc1234 | AMD EPYC | AVX512-BF16 | 2 | 90.0 | 0 | 6.25 | 9.5 |" in text
    )
    assert "| tune_prompt | 1 | 2 | 1.5 | 900 |" in text and "snakemake --cores 2" in text  # CPU from the log


def test_the_end_sizes_by_folder_are_read_back_into_the_summary(tmp_path):
    results = tmp_path / "results"
    for path, size in (("smollm2/text/sst2.json", 300), ("smollm2/activations/sst2/seed0/a", 2_000_000)):
        (results / path).parent.mkdir(parents=True, exist_ok=True)
        (results / path).write_bytes(b"x" * size)
    (results / "smollm2" / "activations" / "imdb").mkdir()
    (results / "smollm2" / "activations" / "imdb" / "b").write_bytes(b"x" * 2_000_000)
    sizes = folder_sizes(results)
    assert sizes.to_dict("records") == [
        {"path": "smollm2/activations", "bytes": 4_000_000},
        {"path": "smollm2/text", "bytes": 300},
    ]
    test_the_summary_reads_wall_time_disk_and_job_minutes(tmp_path)  # run.json, disk.tsv, benchmarks
    sizes.to_csv(tmp_path / "end_sizes.tsv", sep="\t", index=False)
    text = summarize(tmp_path, tmp_path / "benchmarks")
    assert "| smollm2/activations | 0.004 |" in text and "smollm2/text" not in text  # under 1 MB


@pytest.mark.parametrize(
    "argv",
    [
        ["out", "--results", "results/quick", "--", "--cores", "2", "--configfile", "config/quick.yaml"],
        ["--results", "results/quick", "out", "--", "--cores", "2", "--configfile", "config/quick.yaml"],
    ],
)
def test_the_options_go_to_the_script_and_what_follows_the_double_dash_to_snakemake(argv):
    args = parse_arguments(argv)
    assert args.out_dir == Path("out") and args.results == Path("results/quick")
    assert args.snakemake_args == ["--cores", "2", "--configfile", "config/quick.yaml"]
    assert parse_arguments(["out", "--summarize-only"]).snakemake_args == []


def test_the_cores_are_snakemakes_and_the_machines_where_it_was_given_none_or_all():
    assert snakemake_cores(["python", "-m", "snakemake", "--cores", "1"], 2) == 1
    assert [snakemake_cores(["snakemake", *given], 16) for given in (["-c", "3"], ["-c4"], ["--cores=5"])] == [3, 4, 5]
    assert snakemake_cores(["snakemake", "--cores", "all"], 16) == 16
    assert snakemake_cores(["snakemake", "--profile", "profiles/default"], 16) == 16


def test_a_run_whose_logs_do_not_place_its_jobs_says_so_instead_of_a_free_core(tmp_path):
    run = {"start": 1000.0, "end": 1060.0, "exit_status": 0, "command": ["snakemake", "--cores", "2"]}
    run |= {"name": "config.yaml", "commit": "abc1234", "cpu": "AMD EPYC", "bf16_unit": None, "cores": 2}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "disk.tsv").write_text("seconds\tbytes\n0\t0\n")
    write(tmp_path / "benchmarks" / "smollm2" / "table1.tsv", 6, 6, 100)
    text = summarize(tmp_path, tmp_path / "benchmarks")
    assert "Cores held: not known (no job's log gives its process's start and end" in text
    assert "min_with_a_free_core" not in text
