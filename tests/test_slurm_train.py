"""Tests of slurm_train.py: the plan, the job script, --status, and runs on a real Slurm.

The tests marked ``slurm`` start a single-node Slurm cluster on this machine
(``tests/slurm_cluster.py``); they are skipped, with the reason, where Slurm or MUNGE is not
installed or the tests do not run as root. CI installs both (``.ci/install_slurm.sh``), and
there a missing cluster is an error instead of a skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import checkpoints
import run_layout
import slurm_train
from slurm_cluster import SlurmCluster, missing_requirements

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Work in ``tmp_path`` with the default folder names (``runs/`` there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LPPAD_TRAIN_RUNS_FOLDER", raising=False)
    return tmp_path


def make_checkpoint(folder: Path, step: int) -> None:
    """What slurm_train.py looks at in a checkpoint: the folder and its checkpoint.json."""
    path = folder / f"{step:08d}"
    path.mkdir(parents=True)
    (path / "checkpoint.json").write_text(json.dumps({"step": step}))


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    status = slurm_train.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----------------------------------------------------------------------------------------------
# The plan and the command line


def test_default_plan_is_the_papers():
    runs = slurm_train.plan()
    assert len(runs) == 19 * 12 + 3 * 3
    seeds = {}
    for preset, seed in runs:
        seeds.setdefault(preset, []).append(seed)
    assert len(seeds) == 22
    for preset, preset_seeds in seeds.items():
        assert preset_seeds == list(range(3 if preset in ("extr1", "extr2", "lp6x7") else 12)), preset
    # Chosen presets keep the paper's seeds; chosen seeds apply to every preset.
    assert slurm_train.plan(["lp6x7", "repl"]) == [("lp6x7", s) for s in range(3)] + [("repl", s) for s in range(12)]
    assert slurm_train.plan(["lp6x7"], [5, 6]) == [("lp6x7", 5), ("lp6x7", 6)]


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["--presets", "lp2x3,bogus"], "unknown preset 'bogus'"),
        (["--seeds", "4-2"], "end is below the start"),
        (["--seeds", "a"], "bad --seeds"),
        (["--gpus-per-task", "-1"], "--gpus-per-task"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--dry-run", "--", "seed=4"], "sets preset, seed"),
        (["--dry-run", "--", "train_steps=many"], "train_steps"),
        (["--dry-run", "--", "nonsense"], "not of the form name=value"),
        (["--status", "--", "train_steps=5"], "--status takes only"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(capsys, in_tmp, argv, complaint):
    status, out, err = run_main(capsys, *argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("slurm_train.py: error:")
    assert complaint in err


def test_dry_run_script(capsys, in_tmp):
    argv = ["--presets", "lp2x3,repl", "--seeds", "0-1", "--dry-run", "--partition", "gpu", "--account", "proj"]
    status, script, _ = run_main(capsys, *argv, "--", "train_steps=100", "checkpoint_steps=[10, 20]")
    assert status == 0
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for option in ("--array=0-3", "--requeue", "--signal=B:USR1@300", "--gpus-per-task=1", "--mem=80G",
                   "--time=4-00:00:00", "--partition=gpu", "--account=proj", "--open-mode=append"):  # fmt: skip
        assert f"#SBATCH {option}" in lines
    assert "presets=(lp2x3 lp2x3 repl repl)" in lines and "seeds=(0 1 0 1)" in lines
    command = next(line for line in lines if "job.py" in line and not line.startswith("#"))
    assert command.startswith(sys.executable) and str(REPO / "job.py") in command
    assert "resume_checkpoint=-1 train_steps=100 'checkpoint_steps=[10, 20]' &" in command
    assert "scontrol requeue" in script
    # Nothing was submitted or recorded.
    assert not (in_tmp / "runs" / "slurm_jobs.json").exists()

    status, script, _ = run_main(capsys, "--presets", "repl", "--dry-run", "--gpus-per-task", "0", "--mem", "none")
    assert status == 0 and "--gpus" not in script and "--mem" not in script and "--array=0-11" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_finished_runs_are_not_submitted_again(capsys, in_tmp):
    make_checkpoint(in_tmp / "runs" / "repl_s0", 100)  # finished at train_steps=100
    make_checkpoint(in_tmp / "runs" / "repl_s1", 50)  # not finished
    make_checkpoint(in_tmp / "runs" / "zero_s1", 100)  # zero-repl under its older folder name
    status, script, err = run_main(capsys, "--presets", "repl,zero-repl", "--seeds", "0-1", "--dry-run",
                                   "--", "train_steps=100")  # fmt: skip
    assert status == 0 and "2 run(s) already finished or queued are left out" in err
    assert "presets=(repl zero-repl)" in script and "seeds=(1 0)" in script
    # With the default 1.5M steps none of them is finished.
    _, script, _ = run_main(capsys, "--presets", "repl", "--seeds", "0-1", "--dry-run")
    assert "seeds=(0 1)" in script
    status, script, err = run_main(capsys, "--presets", "repl", "--seeds", "0", "--dry-run", "--", "train_steps=100")
    assert status == 0 and script == "" and "nothing to submit" in err


# ----------------------------------------------------------------------------------------------
# --status without Slurm


def test_status_from_run_folders_and_queue(capsys, in_tmp, monkeypatch):
    runs = in_tmp / "runs"
    slurm_train.record_submission("41", [("repl", seed) for seed in range(7)], 100, runs / "logs")
    make_checkpoint(runs / "repl_s0", 100)
    make_checkpoint(runs / "repl_s1", 20)
    make_checkpoint(runs / "repl_s2", 10)
    run_layout.write_outcome(runs / "repl_s2", run_layout.Outcome("diverged", 17, "training loss is NaN at step 17"))
    (runs / "repl_s3").mkdir()
    run_layout.write_outcome(
        runs / "repl_s3", run_layout.Outcome("failed", 3, "training failed at step 3: OSError('disk full')")
    )
    (runs / "logs").mkdir()
    (runs / "logs" / "41_4.out").write_text("step 1\rstep 2\njob.py: error: train data file not found: x.npy\n")
    (runs / "logs" / "41_6.out").write_text(
        "job.py: stopped by SIGTERM at step 5; checkpoint written\n"
        "slurmstepd: error: *** JOB 47 ON n1 CANCELLED AT 2025-01-01T00:00:00 DUE TO JOB REQUEUE ***\n"
        "Traceback (most recent call last):\n  ...\nRuntimeError: boom\nslurm_train: job.py exited with status 1\n"
    )
    make_checkpoint(runs / "lp2x3_s7", 30)  # a run folder of a run not submitted by this script
    queue = {("41", 1): "RUNNING", ("41", 5): "PENDING"}
    monkeypatch.setattr(slurm_train, "queue_states", lambda: queue)

    status, out, _ = run_main(capsys, "--status")
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split() == ["preset", "seed", "step", "state", "job", "detail"]
    rows = {tuple(line.split()[:2]): line.split(maxsplit=5)[2:] for line in lines}
    assert rows[("repl", "0")] == ["100", "finished", "41_0"]
    assert rows[("repl", "1")] == ["20", "running", "41_1", "RUNNING"]
    assert rows[("repl", "2")] == ["10", "diverged", "41_2", "training loss is NaN at step 17"]
    assert rows[("repl", "3")] == ["-", "failed", "41_3", "training failed at step 3: OSError('disk full')"]
    assert rows[("repl", "4")] == ["-", "failed", "41_4", "job.py: error: train data file not found: x.npy"]
    assert rows[("repl", "5")] == ["-", "pending", "41_5", "PENDING"]
    assert rows[("repl", "6")] == ["-", "failed", "41_6", "RuntimeError: boom"]
    assert rows[("lp2x3", "7")][:3] == ["30", "stopped", "-"]
    assert [line.split()[0] for line in lines] == ["lp2x3"] + ["repl"] * 7  # presets' order

    # Queued runs are not submitted twice; a selection limits --status.
    _, script, err = run_main(capsys, "--presets", "repl", "--seeds", "0-6", "--dry-run", "--", "train_steps=100")
    assert "seeds=(2 3 4 6)" in script
    _, out, _ = run_main(capsys, "--status", "--presets", "repl", "--seeds", "1")
    assert len(out.splitlines()) == 2

    # Without squeue nothing is known about the queue.
    monkeypatch.setattr(slurm_train, "queue_states", lambda: None)
    _, out, _ = run_main(capsys, "--status", "--presets", "repl", "--seeds", "1,5")
    assert [line.split()[3] for line in out.splitlines()[1:]] == ["unknown", "unknown"]


def test_status_without_slurm_commands(capsys, in_tmp, monkeypatch):
    monkeypatch.setenv("PATH", str(in_tmp))  # no squeue, no sacct
    make_checkpoint(in_tmp / "runs" / "extr3_s2", 1_500_000)
    status, out, _ = run_main(capsys, "--status")
    assert status == 0 and out.splitlines()[1].split()[:4] == ["extr3", "2", "1500000", "finished"]
    status, _, err = run_main(capsys, "--presets", "repl")
    assert status == 1 and err.strip() == "slurm_train.py: error: sbatch not found; is Slurm installed and on PATH?"


def test_unreadable_job_map_is_a_clear_error(capsys, in_tmp):
    (in_tmp / "runs").mkdir()
    (in_tmp / "runs" / "slurm_jobs.json").write_text("{oops")
    status, _, err = run_main(capsys, "--status")
    assert status == 1 and "cannot read the job map" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# The trainer's preemption hook (train_utils), in this process


# Train (8) and test (4) images (N, 3, 24, 24) in [-1, 1]: room for 16x16 crops at sr 4.
TINY_DATA = {"train": 8, "test": 4}
TINY_DATA_SIZE = 24


@pytest.mark.slow
def test_trainer_resumes_exactly_after_sigterm(tmp_path, monkeypatch, write_tiny_images, tiny_hpars):
    """SIGTERM (preemption, scontrol requeue, scancel) mid-run: a checkpoint of that step, no
    exception.txt, and resuming from it gives the uninterrupted run's parameters and histories.
    (The same tiny configuration as tests/test_train_utils.py, so its compiled steps are reused.)"""
    import data_utils
    import train_utils

    data = write_tiny_images(tmp_path, TINY_DATA, TINY_DATA_SIZE)

    def hpars(folder: str, **overrides) -> dict:
        return tiny_hpars("lp1x1cs", tmp_path / folder, data, train_steps=12, checkpoint_steps=[4], **overrides)

    draw = data_utils.ImageBatcher.__call__
    draws = []

    def draw_then_signal(self, images):
        draws.append(1)
        if len(draws) == 7:  # SIGTERM arrives during step 7
            os.kill(os.getpid(), signal.SIGTERM)
        return draw(self, images)

    with monkeypatch.context() as patch:
        patch.setattr(data_utils.ImageBatcher, "__call__", draw_then_signal)
        with pytest.raises(train_utils.TrainingInterrupted) as interrupted:
            train_utils.train(hpars("run"))
    assert (interrupted.value.signum, interrupted.value.step) == (signal.SIGTERM, 7)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the trainer's handler is gone again
    run = tmp_path / "run"
    assert checkpoints.list_checkpoints(run) == [4, 7]
    assert not (run / "exception.txt").exists()  # an interruption is not a failure
    assert len((run / "train_history.csv").read_text().splitlines()) == 1 + 7

    resumed = train_utils.train(hpars("run", resume_checkpoint=-1))
    uninterrupted = train_utils.train(hpars("reference"))
    assert resumed.step == uninterrupted.step == 12
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(resumed.model, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(uninterrupted.model, eqx.is_array))):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in ("train_history.csv", "test_history.csv"):
        assert (run / name).read_text() == (tmp_path / "reference" / name).read_text()


# ----------------------------------------------------------------------------------------------
# A real single-node Slurm cluster


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster, stopped after this module's tests."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Slurm tests, but: {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_cluster_runs_an_array_job(cluster, tmp_path):
    done = cluster.run(["sbatch", "--parsable", "--array=0-1", f"--output={tmp_path}/%A_%a.out",
                        "--wrap", "echo task $SLURM_ARRAY_TASK_ID"])  # fmt: skip
    job_id = done.stdout.strip()
    cluster.wait_for_job(job_id, timeout=30)
    assert [(tmp_path / f"{job_id}_{i}.out").read_text() for i in range(2)] == ["task 0\n", "task 1\n"]


# ----------------------------------------------------------------------------------------------
# Training on the cluster: tiny data, the cheapest presets, 200 steps on 16x16 crops

TRAIN_STEPS = 200
FIRST_CHECKPOINT = 20


@pytest.fixture(scope="module")
def training(cluster, tmp_path_factory, write_tiny_images):
    """Tiny train/test data, the job.py names for tiny runs, and a JAX compilation cache
    shared by all tasks (a requeued task compiles the same steps again)."""
    folder = tmp_path_factory.mktemp("slurm_training")
    data = write_tiny_images(folder, TINY_DATA, TINY_DATA_SIZE)
    extra = [
        f"train_data_path={data['train']}",
        f"test_data_path={data['test']}",
        "image_shape=[3,16,16]",
        "batch_size=2",
        f"train_steps={TRAIN_STEPS}",
        f"checkpoint_steps=[{FIRST_CHECKPOINT}]",
        "test_image_save_interval=0",
    ]
    env = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(folder / "jax_cache")}
    return {"folder": folder, "extra": extra, "env": env}


@pytest.fixture
def slurm_env(cluster, training, tmp_path, monkeypatch):
    """In-process slurm_train.main against the cluster, working in ``tmp_path``; sbatch passes
    this environment on to the tasks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LPPAD_TRAIN_RUNS_FOLDER", raising=False)
    for name, value in training["env"].items():
        monkeypatch.setenv(name, value)
    with cluster.environ_patch():
        yield tmp_path


def submit(capsys, presets: str, extra: list[str]) -> str:
    status, out, err = run_main(capsys, "--presets", presets, "--seeds", "0", "--gpus-per-task", "0",
                                "--mem", "2G", "--time", "10:00", "--", *extra)  # fmt: skip
    assert status == 0, err
    return out.strip()


def task_log(folder: Path, job_id: str, index: int = 0) -> str:
    return (folder / "runs" / "slurm_logs" / f"{job_id}_{index}.out").read_text()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def reference_runs() -> dict[str, Path]:
    """Filled by test_array_job_trains_and_status_reports (uninterrupted runs)."""
    return {}


@pytest.mark.slow
def test_array_job_trains_and_status_reports(capsys, cluster, training, slurm_env, reference_runs):
    job_id = submit(capsys, "zero-repl,repl", training["extra"])
    job_map = json.loads((slurm_env / "runs" / "slurm_jobs.json").read_text())
    assert [(job["job_id"], job["tasks"]) for job in job_map["jobs"]] == [(job_id, [["zero-repl", 0], ["repl", 0]])]
    _, out, _ = run_main(capsys, "--status")  # JAX takes seconds to start and compile
    assert {line.split()[3] for line in out.splitlines()[1:]} <= {"pending", "running"}, out

    cluster.wait_for_job(job_id, timeout=150)
    for index, preset in enumerate(["zero-repl", "repl"]):
        folder = slurm_env / "runs" / f"{preset}_s0"
        log = task_log(slurm_env, job_id, index)
        assert checkpoints.complete_checkpoint_steps(folder) == [FIRST_CHECKPOINT, TRAIN_STEPS], log
        assert "job.py exited with status 0" in log
        reference_runs[preset] = folder

    status, out, _ = run_main(capsys, "--status")
    assert status == 0
    rows = [line.split()[:5] for line in out.splitlines()[1:]]
    assert rows == [["zero-repl", "0", str(TRAIN_STEPS), "finished", f"{job_id}_0"],
                    ["repl", "0", str(TRAIN_STEPS), "finished", f"{job_id}_1"]]  # fmt: skip
    # Finished runs are not submitted again.
    status, _, err = run_main(capsys, "--presets", "zero-repl,repl", "--seeds", "0", "--", *training["extra"])
    assert status == 0 and "nothing to submit" in err


@pytest.mark.slow
def test_time_limit_warning_checkpoints_requeues_and_resumes_exactly(
    capsys, cluster, training, slurm_env, reference_runs
):
    """USR1 to the batch shell, as Slurm sends it before the time limit: the trainer writes a
    checkpoint mid-run and exits, the task requeues itself and finishes from that checkpoint
    with the parameters of the uninterrupted run."""
    if "zero-repl" not in reference_runs:
        pytest.skip("needs the uninterrupted run of test_array_job_trains_and_status_reports")
    job_id = submit(capsys, "zero-repl", training["extra"])
    folder = slurm_env / "runs" / "zero-repl_s0"

    # The trainer catches the signals from just before its step-0 test loss on; signalling
    # right after that row appears lands before the last step even on a fast machine.
    def step_0_tested() -> bool:
        path = folder / "test_history.csv"
        return path.exists() and len(path.read_text().splitlines()) >= 2

    wait_for(step_0_tested, 120, "step-0 test loss")
    cluster.run(["scancel", "--batch", "--signal=USR1", f"{job_id}_0"])
    cluster.wait_for_job(job_id, timeout=150)

    log = task_log(slurm_env, job_id)
    stopped = re.search(r"job.py: stopped by SIGUSR1 at step (\d+); checkpoint written", log)
    assert stopped, log
    interrupted_at = int(stopped[1])
    assert 1 <= interrupted_at < TRAIN_STEPS
    assert checkpoints.complete_checkpoint_steps(folder) == sorted({interrupted_at, FIRST_CHECKPOINT, TRAIN_STEPS})
    assert "job.py exited with status 138" in log  # 128 + SIGUSR1, then the task requeued itself
    assert "restart 1" in log
    assert f"Resuming from {folder.relative_to(slurm_env) / f'{interrupted_at:08d}'}" in log
    assert log.strip().splitlines()[-1].startswith("slurm_train: job.py exited with status 0")
    reference = reference_runs["zero-repl"]
    final = f"{TRAIN_STEPS:08d}"
    for name in ("model.eqx", "model_state.eqx", "opt_state.eqx"):
        assert (folder / final / name).read_bytes() == (reference / final / name).read_bytes()
    assert (folder / "train_history.csv").read_text() == (reference / "train_history.csv").read_text()
    assert (folder / "test_history.csv").read_text() == (reference / "test_history.csv").read_text()
