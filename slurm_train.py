"""Train presets and seeds on a Slurm cluster: one array job, one task per preset and seed.

    python slurm_train.py [--presets lp2x3,repl] [--seeds 0-11] [--gpus-per-task 1] [--mem 80G]
                          [--time 4-00:00:00] [--partition P] [--account A] [--dry-run]
                          [-- name=value ...]
    python slurm_train.py --status [--presets ...] [--seeds ...]

Without ``--presets`` / ``--seeds`` the paper's plan is submitted: every preset with seeds
0..11, except extr1, extr2 and lp6x7 with seeds 0..2. Runs that already have their final
checkpoint, and runs that this script submitted and that are still queued or running, are left
out. Each task runs ``python job.py preset=P seed=S resume_checkpoint=-1 [name=value ...]``,
so a requeued task continues from its newest checkpoint.

Preemption and time limits: the job asks Slurm for SIGUSR1 five minutes before its time limit
(``--signal=B:USR1@300``; ``B:`` sends it to the batch shell only). The batch shell passes it,
and the SIGTERM that Slurm sends on preemption, requeue or cancel, on to the trainer, which
writes a checkpoint and exits with status 128 + signal number. After the time-limit warning the
shell requeues its own task (``scontrol requeue``); a time limit alone would end the task
for good. Preemption and ``scontrol requeue`` are requeued by Slurm itself (``--requeue``).

Bookkeeping: ``{runs}/slurm_jobs.json`` (written atomically) maps each submitted job id and
array index to its preset and seed; the tasks' output goes to ``{runs}/slurm_logs/``.
``--status`` combines the run folders (their checkpoints and the outcome the trainer records
in ``exception.json``) with ``squeue`` (and ``sacct`` where accounting is enabled) and prints
one line per run; without Slurm commands it uses the run folders only. The runs folder comes
from ``paths_config`` (``LPPAD_TRAIN_RUNS_FOLDER``), read once in ``main``.

Exit status: 0 done, 1 a failed Slurm command, 2 a bad command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import catalog
import checkpoints
import cli
import paths_config
import presets
import run_layout
from io_utils import atomic_write_json
from presets import Run, plan

WARNING_SIGNAL_SECONDS = 300
# job.py names that slurm_train.py sets itself, per task.
RESERVED_NAMES = ("preset", "seed", "resume_checkpoint", "folder")
# squeue states of a job that has not started (again) yet; every other queued state counts as
# running (CONFIGURING, RUNNING, COMPLETING, SUSPENDED, ...).
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
SLURM_TIMEOUT_SECONDS = 60
DEFAULT_RUNS_FOLDER = paths_config.default_paths()["train_runs_folder"]


class SlurmError(cli.UserError):
    """A Slurm command failed or is missing (exit status 1)."""


# ----------------------------------------------------------------------------------------------
# What to run


def run_folders(run: Run, runs_folder: str | Path = DEFAULT_RUNS_FOLDER) -> list[Path]:
    """The run's folder, then its folder under the preset's older name (``compat_preset``)."""
    return catalog.run_folder_candidates(runs_folder, *run)


def is_finished(run: Run, train_steps: int, runs_folder: str | Path = DEFAULT_RUNS_FOLDER) -> bool:
    """Whether the run has its final checkpoint (in its folder or under its older name)."""
    return catalog.is_run_finished(runs_folder, *run, train_steps)


# ----------------------------------------------------------------------------------------------
# Slurm commands


def _slurm(command: list[str], stdin: str | None = None) -> str:
    """Run a Slurm command; its stdout, or ``SlurmError`` with its one-line complaint."""
    if shutil.which(command[0]) is None:
        raise SlurmError(f"{command[0]} not found; is Slurm installed and on PATH?")
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=SLURM_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]} did not answer within {SLURM_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        complaint = cli.one_line(done.stderr) or f"exit status {done.returncode}"
        raise SlurmError(f"{command[0]} failed: {complaint}")
    return done.stdout


def queue_states() -> dict[tuple[str, int], str] | None:
    """``{(array job id, array index): Slurm state}`` of this user's queued array tasks; None
    when ``squeue`` is missing or fails."""
    try:
        output = _slurm(["squeue", "--noheader", "--array", "--user", getpass.getuser(), "--format", "%F|%K|%T"])
    except SlurmError:
        return None
    states = {}
    for line in output.splitlines():
        job_id, _, rest = line.strip().partition("|")
        index, _, state = rest.partition("|")
        if index.isdigit():
            states[(job_id, int(index))] = state
    return states


def accounting_states(job_ids: Iterable[str]) -> dict[tuple[str, int], str]:
    """``{(array job id, array index): final Slurm state}`` from ``sacct``; empty where
    accounting is disabled or ``sacct`` is missing."""
    job_ids = sorted(set(job_ids))
    if not job_ids:
        return {}
    try:
        output = _slurm(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", ",".join(job_ids),
                         "--format", "JobID,State"])  # fmt: skip
    except SlurmError:
        return {}
    states = {}
    for line in output.splitlines():
        job, _, state = line.partition("|")
        match = re.fullmatch(r"(\d+)_(\d+)", job.strip())
        if match:
            # "CANCELLED by 1000" -> "CANCELLED"
            states[(match[1], int(match[2]))] = state.split()[0] if state.split() else state
    return states


# ----------------------------------------------------------------------------------------------
# The job map: which job id and array index trains which run


def load_job_map(runs_folder: str | Path = DEFAULT_RUNS_FOLDER) -> dict:
    """``{"jobs": [{"job_id", "submitted", "train_steps", "log_folder", "tasks": [[preset,
    seed], ...]}, ...]}``, oldest submission first."""
    path = run_layout.slurm_job_map_path(runs_folder)
    if not path.exists():
        return {"jobs": []}
    try:
        job_map = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SlurmError(f"cannot read the job map {path}: {e}") from e
    if not isinstance(job_map, dict) or not isinstance(job_map.get("jobs"), list):
        raise SlurmError(f'the job map {path} is not of the form {{"jobs": [...]}}')
    return job_map


@dataclasses.dataclass
class Submission:
    """The newest submission of one run."""

    job_id: str
    index: int
    train_steps: int
    log_path: Path


def latest_submissions(job_map: dict) -> dict[Run, Submission]:
    """Run -> its newest submission (later entries of the job map win)."""
    latest = {}
    for job in job_map["jobs"]:
        for index, (preset, seed) in enumerate(job["tasks"]):
            log_path = Path(job["log_folder"]) / f"{job['job_id']}_{index}.out"
            latest[(preset, seed)] = Submission(job["job_id"], index, job["train_steps"], log_path)
    return latest


def record_submission(
    job_id: str, runs: list[Run], train_steps: int, log_folder: Path, runs_folder: str | Path = DEFAULT_RUNS_FOLDER
) -> None:
    job_map = load_job_map(runs_folder)
    job_map["jobs"].append(
        {
            "job_id": job_id,
            "submitted": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "train_steps": train_steps,
            "log_folder": str(log_folder),
            "tasks": [[preset, seed] for preset, seed in runs],
        }
    )
    atomic_write_json(run_layout.slurm_job_map_path(runs_folder), job_map)


def queued_runs(job_map: dict, states: dict[tuple[str, int], str] | None) -> set[Run]:
    """Runs whose newest submission is still in the queue (pending or running)."""
    if not states:
        return set()
    return {run for run, sub in latest_submissions(job_map).items() if (sub.job_id, sub.index) in states}


# ----------------------------------------------------------------------------------------------
# The job script


@dataclasses.dataclass
class Resources:
    """What each array task asks Slurm for; None leaves an option to the cluster's default."""

    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem: str | None = "80G"
    time: str | None = "4-00:00:00"
    partition: str | None = None
    account: str | None = None
    max_parallel: int | None = None


def job_script(runs: list[Run], resources: Resources, extra_args: list[str], log_folder: Path) -> str:
    """The bash script of an array job with one task per run (``runs[i]`` is index ``i``)."""
    q = shlex.quote
    array = f"0-{len(runs) - 1}" + (f"%{resources.max_parallel}" if resources.max_parallel else "")
    options = [
        "--job-name=lppad-train",
        f"--array={array}",
        "--ntasks=1",
        f"--output={log_folder / '%A_%a.out'}",
        # Requeued tasks append to their log instead of truncating it.
        "--open-mode=append",
        # Requeue on preemption or node failure, and allow the script's own requeue.
        "--requeue",
        f"--signal=B:USR1@{WARNING_SIGNAL_SECONDS}",
        f"--chdir={Path.cwd()}",
    ]
    if resources.gpus_per_task:
        options.append(f"--gpus-per-task={resources.gpus_per_task}")
    for name in ("cpus_per_task", "mem", "time", "partition", "account"):
        value = getattr(resources, name)
        if value is not None:
            options.append(f"--{name.replace('_', '-')}={value}")
    job_py = Path(__file__).resolve().with_name("job.py")
    command = [sys.executable, str(job_py), 'preset="$preset"', 'seed="$seed"', "resume_checkpoint=-1"]
    command += [q(arg) for arg in extra_args]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {q(option)}" for option in options),
        "# Written by slurm_train.py; one task per preset and seed.",
        "set -u",
        f"presets=({' '.join(q(preset) for preset, _ in runs)})",
        f"seeds=({' '.join(str(seed) for _, seed in runs)})",
        "preset=${presets[$SLURM_ARRAY_TASK_ID]}",
        "seed=${seeds[$SLURM_ARRAY_TASK_ID]}",
        'echo "slurm_train: job ${SLURM_JOB_ID}, task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}:'
        ' preset=$preset seed=$seed, restart ${SLURM_RESTART_COUNT:-0}, $(date --iso-8601=seconds)"',
        "export PYTHONUNBUFFERED=1",
        "",
        "# The trainer runs as a child of this shell, which passes signals on: Slurm sends the",
        "# time-limit warning (USR1) to this shell only. On USR1 or TERM the trainer writes a",
        "# checkpoint and exits with status 128 + signal number.",
        " ".join(command) + " &",
        "trainer=$!",
        "warned=0",
        "trap 'warned=1; kill -USR1 $trainer 2>/dev/null' USR1",
        "trap 'kill -TERM $trainer 2>/dev/null' TERM",
        "# A trap interrupts wait, so wait until the trainer is really gone, then fetch its status.",
        'while kill -0 "$trainer" 2>/dev/null; do wait "$trainer"; done',
        'wait "$trainer"',
        "status=$?",
        'echo "slurm_train: job.py exited with status $status, $(date --iso-8601=seconds)"',
        "# Near the time limit a task that has not finished requeues itself; it resumes from the",
        "# checkpoint just written. (Preemption and scontrol requeue are requeued by Slurm.)",
        "if [[ $warned == 1 && $status -ge 128 ]]; then",
        '    scontrol requeue "$SLURM_JOB_ID"',
        "fi",
        "exit $status",
        "",
    ]
    return "\n".join(lines)


def submit(script: str) -> str:
    """Submit ``script`` with ``sbatch``; its job id."""
    output = _slurm(["sbatch", "--parsable"], stdin=script).strip()
    job_id = output.split(";")[0]  # "id;cluster" on multi-cluster set-ups
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {output!r} instead of a job id")
    return job_id


# ----------------------------------------------------------------------------------------------
# Status


@dataclasses.dataclass
class RunStatus:
    preset: str
    seed: int
    step: int | None  # the newest checkpoint's step
    state: str  # pending, running, finished, diverged, failed, stopped or unknown
    job: str  # "jobid_index" of the newest submission, or "-"
    detail: str  # the error line of a failed run, the Slurm state, ...


def _log_error_line(path: Path) -> str:
    """The last error line of a task's log: job.py's one-line error, else a Python exception
    or a Slurm message (a time limit, running out of memory). Requeue notices and job.py's
    note that a signal stopped it after a checkpoint are no errors."""
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    lines = [line.strip() for line in reversed(lines) if "DUE TO JOB REQUEUE" not in line]
    for line in lines:
        if line.startswith(("job.py: error:", "job.py: out of memory")):
            return line
    for line in lines:
        if re.search(r"Error|error:|CANCELLED|TIME LIMIT|[Oo]ut of memory|oom", line):
            return line
    return ""


def run_status(
    run: Run,
    submission: Submission | None,
    queue: dict[tuple[str, int], str] | None,
    accounting: dict[tuple[str, int], str],
    default_train_steps: int,
    runs_folder: str | Path = DEFAULT_RUNS_FOLDER,
) -> RunStatus:
    """The state of one run from its folders, the queue, accounting and its log."""
    preset, seed = run
    folders = run_folders(run, runs_folder)
    steps = sorted({step for folder in folders for step in checkpoints.complete_checkpoint_steps(folder)})
    folder = next((f for f in folders if f.is_dir()), folders[0])
    train_steps = submission.train_steps if submission else default_train_steps
    job = f"{submission.job_id}_{submission.index}" if submission else "-"
    key = (submission.job_id, submission.index) if submission else None

    def status(state: str, detail: str = "") -> RunStatus:
        return RunStatus(preset, seed, steps[-1] if steps else None, state, job, detail)

    if train_steps in steps:
        return status("finished")
    if queue is not None and key in queue:
        slurm_state = queue[key]
        return status("pending" if slurm_state in PENDING_STATES else "running", slurm_state)
    outcome = run_layout.read_outcome(folder)
    if outcome is not None:
        return status(outcome.kind, outcome.message)
    slurm_state = accounting.get(key) if key else None
    log_error = _log_error_line(submission.log_path) if submission else ""
    if slurm_state not in (None, "COMPLETED") or log_error:
        return status("failed", "; ".join(text for text in (slurm_state, log_error) if text))
    if submission and queue is None:
        return status("unknown", "squeue unavailable")
    return status("stopped", "not finished and not queued")


def status_lines(statuses: list[RunStatus]) -> list[str]:
    rows = [("preset", "seed", "step", "state", "job", "detail")]
    rows += [
        (s.preset, str(s.seed), "-" if s.step is None else str(s.step), s.state, s.job, s.detail) for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [("  ".join(v.ljust(w) for v, w in zip(row, widths)) + "  " + row[5]).rstrip() for row in rows]


def runs_with_folders(runs_folder: str | Path = DEFAULT_RUNS_FOLDER) -> list[Run]:
    """Runs that have a run folder in ``runs_folder`` (``catalog.run_of_folder``; also under a
    preset's older name)."""
    runs_folder = Path(runs_folder)
    found = []
    for path in runs_folder.iterdir() if runs_folder.is_dir() else []:
        run = catalog.run_of_folder(path) if path.is_dir() else None
        if run is not None:
            found.append(run)
    return found


def collect_status(
    selected: list[Run] | None, train_steps: int, runs_folder: str | Path = DEFAULT_RUNS_FOLDER
) -> list[RunStatus]:
    """Statuses of the selected runs, or else of every run that was submitted or has a folder.
    ``train_steps`` is the final step of runs that this script did not submit."""
    submissions = latest_submissions(load_job_map(runs_folder))
    if selected is None:
        selected = sorted(set(submissions) | set(runs_with_folders(runs_folder)), key=lambda r: presets.table_order(*r))
    queue = queue_states()
    accounting = accounting_states(submissions[run].job_id for run in selected if run in submissions)
    return [run_status(run, submissions.get(run), queue, accounting, train_steps, runs_folder) for run in selected]


# ----------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slurm_train.py",
        description="Submit training runs as a Slurm array job, or show their status.",
        epilog="Names after -- go to every job.py task, e.g. -- train_steps=100000 batch_size=32.",
    )
    parser.add_argument("--presets", type=presets.preset_list, help="comma-separated presets, or 'all' (default: all)")
    parser.add_argument(
        "--seeds", type=presets.seed_list, help="seeds like 0-11 or 0,3,5 (default: 0-11; 0-2 for extr1, extr2, lp6x7)"
    )
    parser.add_argument("--status", action="store_true", help="print the state of each run instead of submitting")
    parser.add_argument("--dry-run", action="store_true", help="print the job script instead of submitting it")
    parser.add_argument(
        "--gpus-per-task", type=cli.non_negative_int, default=1, help="GPUs per task; 0 asks for none (default 1)"
    )
    parser.add_argument("--cpus-per-task", type=cli.positive_int, help="CPU cores per task (default: the cluster's)")
    parser.add_argument("--mem", default="80G", help="memory per task, e.g. 80G (default 80G); 'none' omits it")
    parser.add_argument("--time", default="4-00:00:00", help="time limit per task (default 4-00:00:00)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--account", help="Slurm account to charge")
    parser.add_argument("--max-parallel", type=cli.positive_int, help="at most this many tasks at once")
    return parser


def parse_command_line(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options, and the ``name=value`` arguments after ``--`` (checked by job.py's parser)."""
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    args = make_parser().parse_args(argv)
    if args.status and (args.dry_run or extra):
        raise cli.UsageError("--status takes only --presets and --seeds")
    if args.mem is not None and args.mem.lower() == "none":
        args.mem = None
    import job  # no side effects; its parser knows job.py's names and value types

    for arg in extra:
        if arg.partition("=")[0] in RESERVED_NAMES:
            raise cli.UsageError(f"{arg!r} after --: slurm_train.py sets {', '.join(RESERVED_NAMES)} itself")
    try:
        job.parse_args(["preset=repl", *extra])
    except cli.UsageError as e:
        raise cli.UsageError(f"after --: {e}") from None
    return args, extra


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 for a ``SlurmError`` or another
    ``cli.UserError``, 2 for a bad command line)."""
    argv = sys.argv[1:] if argv is None else argv
    return cli.run_script("slurm_train.py", lambda: _run(argv))


def _run(argv: list[str]) -> int:
    args, extra = parse_command_line(argv)
    selected_presets, seeds = args.presets, args.seeds
    import job

    paths = paths_config.get_paths()  # the environment (LPPAD_*) is read here only
    runs_folder = Path(paths["train_runs_folder"])
    train_steps = job.job_hpars(job.parse_args(["preset=repl", *extra]), paths)["train_steps"]
    if args.status:
        selected = None if selected_presets is None and seeds is None else plan(selected_presets, seeds)
        for line in status_lines(collect_status(selected, train_steps, runs_folder)):
            print(line)
        return 0

    job_map = load_job_map(runs_folder)
    queued = queued_runs(job_map, queue_states())
    runs = [r for r in plan(selected_presets, seeds)
            if not is_finished(r, train_steps, runs_folder) and r not in queued]  # fmt: skip
    skipped = len(plan(selected_presets, seeds)) - len(runs)
    if skipped:
        print(f"slurm_train.py: {skipped} run(s) already finished or queued are left out", file=sys.stderr)
    if not runs:
        print("slurm_train.py: nothing to submit", file=sys.stderr)
        return 0
    resources = Resources(
        args.gpus_per_task, args.cpus_per_task, args.mem, args.time, args.partition, args.account, args.max_parallel
    )
    log_folder = run_layout.slurm_logs_folder(runs_folder).resolve()
    script = job_script(runs, resources, extra, log_folder)
    if args.dry_run:
        print(script, end="")
        return 0
    # Slurm does not create the output folder; a task without one fails silently.
    log_folder.mkdir(parents=True, exist_ok=True)
    job_id = submit(script)
    record_submission(job_id, runs, train_steps, log_folder, runs_folder)
    print(job_id)
    print(f"slurm_train.py: submitted {len(runs)} task(s) as array job {job_id}; logs in {log_folder}",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
