"""Run the workflow once, timed, with its results folder's size sampled: the run summary the README quotes.

    python benchmarks/timed_run.py OUT_DIR [--results results] [--every 20] -- --cores 2 [snakemake arguments]
    python benchmarks/timed_run.py OUT_DIR --summarize-only      # the summary again from OUT_DIR's files

Writes OUT_DIR/disk.tsv (seconds since the start, bytes under the results folder), OUT_DIR/run.json (commit,
CPU, start, end, exit status) and OUT_DIR/run_summary.md: wall time, disk at the end and at its peak, the
job minutes per rule, and how the jobs held the cores: the minutes with a core free and what ran then
(benchmarks/job_minutes.py). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from job_minutes import core_use, job_minutes, job_records  # noqa: E402
from outputs import commit, cpu_description  # noqa: E402

from skill_neurons.io import folder_bytes  # noqa: E402
from skill_neurons.stages.common import markdown_table  # noqa: E402


def timed(command: list[str], results: Path, every: float, disk_log: Path) -> dict:
    """Run `command`, writing the size of `results` to `disk_log` every `every` seconds; start, end, status."""
    started = time.time()
    done = threading.Event()

    def size() -> int:
        return folder_bytes(results) if results.exists() else 0

    def sample() -> None:
        with disk_log.open("w") as log:
            log.write("seconds\tbytes\n")
            while True:
                log.write(f"{time.time() - started:.1f}\t{size()}\n")
                log.flush()
                if done.wait(every):
                    break
            log.write(f"{time.time() - started:.1f}\t{size()}\n")

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status = subprocess.run(command, check=False).returncode
    finally:
        done.set()
        sampler.join()
    return {"start": started, "end": time.time(), "exit_status": status, "command": command}


def folder_sizes(results: Path) -> pd.DataFrame:
    """Bytes under each folder (or file) two levels below `results` (e.g. smollm2/activations), largest first."""
    rows = [
        {"path": f"{top.name}/{entry.name}", "bytes": folder_bytes(entry) if entry.is_dir() else entry.stat().st_size}
        for top in sorted(results.iterdir())
        if top.is_dir()
        for entry in sorted(top.iterdir())
    ]
    return pd.DataFrame(rows, columns=["path", "bytes"]).sort_values("bytes", ascending=False, kind="stable")


def summarize(out_dir: Path, benchmarks: Path) -> str:
    """The run summary as Markdown, from OUT_DIR's run.json and disk.tsv and the run's benchmark files."""
    run = json.loads((out_dir / "run.json").read_text())
    disk = pd.read_csv(out_dir / "disk.tsv", sep="\t")
    when = datetime.fromtimestamp(run["start"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = pd.DataFrame(
        [
            {
                "run": f"{run['name']}, {when}",
                "commit": run["commit"],
                "CPU": run["cpu"],
                # a run recorded before the unit was: it had AMX or not (the precision then followed AMX alone)
                "bf16 unit": run.get("bf16_unit", "AMX" if run.get("amx") else None) or "none",
                "cores": run["cores"],
                "wall (min)": round((run["end"] - run["start"]) / 60, 1),
                "exit status": run["exit_status"],
                "results at the end (GB)": round(disk["bytes"].iloc[-1] / 1e9, 2),
                "results at the peak (GB)": round(disk["bytes"].max() / 1e9, 2),
            }
        ]
    )
    jobs = job_records(benchmarks)
    per_rule = job_minutes(jobs)
    text = (
        f"{markdown_table(summary)}\n\nJob minutes per rule (`{' '.join(run['command'])}`; wall and CPU minutes "
        f"summed over each rule's jobs, largest wall first):\n\n{markdown_table(per_rule, 4)}\n"
    )
    if jobs["start"].notna().any():
        held, alone = core_use(jobs, snakemake_cores(run["command"], run["cores"]), run["start"], run["end"])
        text += (
            f"\nCores held (each job's threads from its process's start to its end, as its log gives them):\n\n"
            f"{markdown_table(pd.DataFrame([held]))}\nWhat ran while a core was free (job-minutes per rule):\n\n"
            f"{markdown_table(alone.head(10))}"
        )
    else:
        text += "\nCores held: not known (no job's log gives its process's start and end: logs older than that line)\n"
    if (out_dir / "end_sizes.tsv").is_file():
        sizes = pd.read_csv(out_dir / "end_sizes.tsv", sep="\t")
        sizes = sizes.assign(GB=(sizes.pop("bytes") / 1e9).round(3)).query("GB >= 0.001")
        text += f"\nResults at the end by folder (at least 1 MB):\n\n{markdown_table(sizes)}\n"
    return text


def snakemake_cores(command: list[str], machine_cores: int) -> int:
    """The cores a snakemake command was given (`--cores N`, `-c N`, `-cN`, `--cores=N`), else the machine's."""
    for index, word in enumerate(command):
        if word in ("--cores", "-c") and index + 1 < len(command):
            value = command[index + 1]
        elif word.startswith("--cores="):
            value = word.split("=", 1)[1]
        elif word.startswith("-c") and word[2:].isdigit():
            value = word[2:]
        else:
            continue
        return machine_cores if value == "all" else int(value)
    return machine_cores


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """This script's options before '--', snakemake's after it (`snakemake_args`), wherever OUT_DIR stands.

    argparse alone fills a trailing list positional together with OUT_DIR: an option between the two (the
    documented `OUT_DIR --results DIR -- ...`) left snakemake's arguments unrecognised.
    """
    own, snakemake_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between disk samples")
    parser.add_argument("--name", default="config.yaml", help="what the summary calls the run")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(own)
    args.snakemake_args = snakemake_args
    return args


def main() -> None:
    args = parse_arguments(sys.argv[1:])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        command = [sys.executable, "-m", "snakemake", *args.snakemake_args]
        run = timed(command, args.results, args.every, args.out_dir / "disk.tsv")
        run |= {"name": args.name, "commit": commit(), **cpu_description()}
        (args.out_dir / "run.json").write_text(json.dumps(run, indent=1))
        if args.results.is_dir():
            folder_sizes(args.results).to_csv(args.out_dir / "end_sizes.tsv", sep="\t", index=False)
    text = summarize(args.out_dir, args.results / "benchmarks")
    (args.out_dir / "run_summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
