"""A stand-in for the SLURM client commands that snakemake-executor-plugin-slurm calls, for tests.

The executables next to this file (sbatch, srun, sacct, squeue, scancel, sinfo, scontrol, sacctmgr) all run
this script with their own name first. Every call appends one JSON line {"cmd", "argv", "cwd", ...} to the file
named by $FAKE_SLURM_LOG, so a test can check what the plugin asked the cluster for.

sbatch really runs the job, detached, like a cluster that starts every job at once: it answers a job id at
once (the plugin submits with --parsable and parses stdout), and the job's state (PENDING, RUNNING, then
COMPLETED or FAILED) is kept in a folder that sacct and squeue read back in the `<id>|<STATE>` lines that the
plugin parses. The job runs `--wrap` under /bin/sh in the -D folder, with the caller's environment
(--export=ALL, the only mode the plugin uses) and the SLURM_* variables the jobstep plugin reads, and writes to
--output. srun (called by the jobstep plugin inside the job) drops its options and runs the command, on this
machine: nothing is confined to the cpus, memory or GPUs asked for.

Environment:
  FAKE_SLURM_LOG         the JSON-lines call log (required)
  FAKE_SLURM_STATE       folder for job states and the id counter (default: $FAKE_SLURM_LOG.jobs)
  FAKE_SLURM_ACCOUNTS    comma-separated accounts sacctmgr lists, so the plugin's account check passes for
                         these and fails for any other, placeholders included (default: test)
  FAKE_SLURM_PARTITIONS  comma-separated partitions; sbatch rejects -p with any other (default: cpu,gpu)
  FAKE_SLURM_PYTHON      interpreter the executables use (default: python3)
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIRST_JOB_ID = 1000

# sbatch and srun options that take their value as the next word (the plugin writes `-A acct`, `--mem 500`);
# every other option is either a flag or written as --name=value.
SBATCH_VALUE_OPTIONS = {
    "--job-name",
    "-J",
    "--output",
    "-o",
    "--error",
    "-e",
    "--comment",
    "-A",
    "--account",
    "-p",
    "--partition",
    "--clusters",
    "-M",
    "-t",
    "--time",
    "-C",
    "--constraint",
    "--mem",
    "--mem-per-cpu",
    "-D",
    "--chdir",
    "-n",
    "-c",
    "-N",
    "--gres",
    "--gpus",
    "-G",
}
SRUN_VALUE_OPTIONS = {
    "-n",
    "--ntasks",
    "-c",
    "--cpus-per-task",
    "-N",
    "--nodes",
    "--jobid",
    "-J",
    "--job-name",
    "--mem",
    "--mem-per-cpu",
    "--gpus",
    "-G",
    "--gres",
    "-t",
    "--time",
}


def log_call(cmd: str, argv: list[str], **extra) -> None:
    record = {"cmd": cmd, "argv": argv, "cwd": os.getcwd(), "time": time.time(), **extra}
    with open(os.environ["FAKE_SLURM_LOG"], "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two submissions can run at once: one whole line each
        f.write(json.dumps(record) + "\n")


def state_dir() -> Path:
    folder = Path(os.environ.get("FAKE_SLURM_STATE") or os.environ["FAKE_SLURM_LOG"] + ".jobs")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def listed(variable: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, default).split(",") if item.strip()]


def parse_options(argv: list[str], value_options: set[str], stop_at_positional: bool = True):
    """Options and positional words. sbatch's script and srun's command end the options: what follows is theirs."""
    options: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            if stop_at_positional:
                return options, argv[i:]
            positional.append(word)
        elif word.startswith("--") and "=" in word:
            name, value = word.split("=", 1)
            options[name] = value
        elif word in value_options:
            options[word] = argv[i + 1]
            i += 1
        elif not word.startswith("--") and len(word) > 2 and word[:2] in value_options:
            options[word[:2]] = word[2:]  # -n1
        else:
            options[word] = True
        i += 1
    return options, positional


def read_job(job_id: str) -> dict | None:
    path = state_dir() / f"{job_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_job(job: dict) -> None:
    # Written whole and renamed: sacct may read while the job changes state.
    path = state_dir() / f"{job['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    tmp.replace(path)


def next_job_id() -> str:
    with open(state_dir() / "counter", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read() or FIRST_JOB_ID - 1) + 1
        f.seek(0)
        f.truncate()
        f.write(str(job_id))
    return str(job_id)


def sbatch(argv: list[str]) -> int:
    options, positional = parse_options(argv, SBATCH_VALUE_OPTIONS)
    if "--array" in options:
        # The profile does not ask for array jobs; running each task is not worth faking.
        print("sbatch: error: fake sbatch does not run --array jobs", file=sys.stderr)
        log_call("sbatch", argv, options=options, error="array")
        return 1
    partition = options.get("-p", options.get("--partition"))
    if partition is not None and partition not in listed("FAKE_SLURM_PARTITIONS", "cpu,gpu"):
        print("sbatch: error: invalid partition specified: " + partition, file=sys.stderr)
        log_call("sbatch", argv, options=options, error="partition")
        return 1
    if "--wrap" in options:
        script = str(options["--wrap"])
    elif positional:
        script = sys.stdin.read() if positional[0] == "/dev/stdin" else Path(positional[0]).read_text()
    else:
        print("sbatch: error: no --wrap and no batch script", file=sys.stderr)
        return 1
    job_id = next_job_id()
    workdir = str(options.get("-D", options.get("--chdir", os.getcwd())))
    output = str(options.get("--output", options.get("-o", f"slurm-{job_id}.out"))).replace("%j", job_id)
    gpus = options.get("--gpus", options.get("-G"))
    write_job(
        {
            "id": job_id,
            "name": options.get("--job-name", options.get("-J", "wrap")),
            "state": "PENDING",
            "exit_code": None,
            "account": options.get("-A", options.get("--account", "")),
            "comment": options.get("--comment", ""),
        }
    )
    log_call("sbatch", argv, options=options, job_id=job_id)

    env = dict(
        os.environ,
        SLURM_JOB_ID=job_id,
        SLURM_JOBID=job_id,
        SLURM_SUBMIT_DIR=os.getcwd(),
        SLURM_JOB_NAME=str(options.get("--job-name", "")),
        SLURM_CLUSTER_NAME="fake",
    )
    if gpus:
        env["SLURM_GPUS"] = str(gpus)  # the jobstep plugin reads it to tell a GPU job
    Path(workdir, output).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(workdir, output), "ab") as out:
        # Detached, and stdout/stderr not the plugin's pipes: the plugin waits for sbatch's output to close.
        subprocess.Popen(
            [sys.executable, __file__, "_run_job", job_id, script],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(job_id)  # --parsable: the id alone (a multi-cluster setup adds ";cluster")
    return 0


def run_job(job_id: str, script: str) -> int:
    job = read_job(job_id)
    job.update(state="RUNNING", pid=os.getpid())
    write_job(job)
    code = subprocess.run(["/bin/sh", "-c", script]).returncode
    job = read_job(job_id)
    if job["state"] != "CANCELLED":
        job.update(state="COMPLETED" if code == 0 else "FAILED", exit_code=code)
        write_job(job)
    return code


def srun(argv: list[str]) -> int:
    options, command = parse_options(argv, SRUN_VALUE_OPTIONS)
    log_call("srun", argv, options=options, job_id=os.environ.get("SLURM_JOB_ID"))
    if not command:
        print("srun: fatal: No command given to execute.", file=sys.stderr)
        return 1
    os.execvp(command[0], command)


def jobs_matching(name: str | None, ids: list[str]) -> list[dict]:
    jobs = [json.loads(path.read_text()) for path in sorted(state_dir().glob("*.json"))]
    return [job for job in jobs if (name is None or job["name"] == name) and (not ids or job["id"] in ids)]


def sacct(argv: list[str]) -> int:
    log_call("sacct", argv)
    options, _ = parse_options(
        argv,
        {
            "--format",
            "-o",
            "--name",
            "-j",
            "--jobs",
            "--starttime",
            "--endtime",
            "--clusters",
            "-M",
            "-u",
            "--user",
            "-S",
            "-E",
        },
        stop_at_positional=False,
    )
    fields = str(options.get("--format", options.get("-o", "JobIdRaw,State"))).split(",")
    ids = str(options.get("-j", options.get("--jobs", ""))).split(",")
    if any("." in i for i in ids):
        return 0  # job steps (the failure-reason query): none recorded
    columns = {
        "jobidraw": "id",
        "jobid": "id",
        "state": "state",
        "jobname": "name",
        "account": "account",
        "exitcode": "exit_code",
    }
    for job in jobs_matching(options.get("--name"), [i for i in ids if i]):
        values = []
        for field in fields:
            key = field.split("%")[0].lower()
            if key == "exitcode":
                values.append(f"{job['exit_code'] or 0}:0")
            elif key == "nodelist":
                values.append("fakenode1")
            else:
                values.append(str(job.get(columns.get(key, ""), "")))
        print("|".join(values))
    return 0


def squeue(argv: list[str]) -> int:
    log_call("squeue", argv)
    options, _ = parse_options(
        argv, {"--format", "-o", "--name", "-j", "--jobs", "--states", "-t"}, stop_at_positional=False
    )
    # Only the plugin's own format, %i|%T: id and long state.
    for job in jobs_matching(options.get("--name"), []):
        print(f"{job['id']}|{job['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    log_call("scancel", argv)
    for job_id in (word for word in argv if not word.startswith("-")):
        job = read_job(job_id)
        if job and job["state"] in ("PENDING", "RUNNING"):
            if job.get("pid"):
                try:
                    os.killpg(job["pid"], 15)  # the runner leads its own session: the job's whole tree
                except ProcessLookupError:
                    pass
            job.update(state="CANCELLED")
            write_job(job)
    return 0


def sinfo(argv: list[str]) -> int:
    log_call("sinfo", argv)
    # `sinfo -o %P` (the plugin's default-partition guess): a header, the default marked with *.
    partitions = listed("FAKE_SLURM_PARTITIONS", "cpu,gpu")
    print("PARTITION")
    print("\n".join([partitions[0] + "*"] + partitions[1:]))
    return 0


def scontrol(argv: list[str]) -> int:
    log_call("scontrol", argv)
    if argv[:2] == ["show", "config"]:
        # The plugin reads the array size limit and how long finished jobs stay visible to squeue.
        print("MaxArraySize            = 1001")
        print("MinJobAge               = 300 sec")
        return 0
    print(f"scontrol: fake scontrol does not know {' '.join(argv)}", file=sys.stderr)
    return 1


def sacctmgr(argv: list[str]) -> int:
    log_call("sacctmgr", argv)
    # `sacctmgr -n -s list user <me> format=account%256`: the accounts the plugin accepts.
    print("\n".join(f"{account:>10}" for account in listed("FAKE_SLURM_ACCOUNTS", "test")))
    return 0


COMMANDS = {
    "sbatch": sbatch,
    "srun": srun,
    "sacct": sacct,
    "squeue": squeue,
    "scancel": scancel,
    "sinfo": sinfo,
    "scontrol": scontrol,
    "sacctmgr": sacctmgr,
}

if __name__ == "__main__":
    if sys.argv[1] == "_run_job":
        sys.exit(run_job(sys.argv[2], sys.argv[3]))
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
