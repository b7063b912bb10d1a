"""A throw-away single-node Slurm cluster on this machine, for tests/test_slurm_train.py.

``SlurmCluster().start()`` starts munged (with a freshly generated key), slurmctld and
slurmd, all configured to keep their sockets, state, logs and pid files in a new temporary
folder and to listen on free ports, so the cluster neither needs nor disturbs a system-wide
Slurm or MUNGE. ``stop()`` cancels what is still queued, stops exactly the daemons it started
(by their pid files) and removes the folder. Clients find the cluster through ``SLURM_CONF``:
use ``cluster.env`` for subprocesses, or ``cluster.environ_patch()`` for in-process calls.

Requires root (slurmd launches jobs as their owner) and Debian's ``slurm-wlm`` and ``munge``
(``.ci/install_slurm.sh``); ``missing_requirements()`` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
# Requeued jobs wait this long (Slurm's default is 120 s) before they may start again.
CRED_EXPIRE_SECONDS = 10


def _find(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN_DIRS))


def missing_requirements() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [program for program in DAEMONS + CLIENTS if _find(program) is None]
    if missing:
        return f"Slurm/MUNGE not installed (missing {', '.join(missing)}); run .ci/install_slurm.sh as root"
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (slurmd starts jobs as their owner)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    """One node with this machine's CPUs and part of its memory, one partition ``test``."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: munged wants every folder above its socket to be
        # traversable by all users, and pytest's base folder is private.
        self.folder = Path(tempfile.mkdtemp(prefix="lppad-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.munge_socket = self.folder / "munge.socket"
        self.started: list[str] = []  # daemons started, in order

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus what Slurm clients need to reach this cluster."""
        return {**os.environ, **self._client_env()}

    def _client_env(self) -> dict[str, str]:
        path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
        return {"SLURM_CONF": str(self.conf), "PATH": path}

    @contextlib.contextmanager
    def environ_patch(self) -> Iterator[None]:
        """Point in-process Slurm client calls (subprocesses of this process) at the cluster."""
        saved = {name: os.environ.get(name) for name in self._client_env()}
        os.environ.update(self._client_env())
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def pid_file(self, daemon: str) -> Path:
        return self.folder / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.folder / "log" / f"{daemon}.log"

    # ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Start the daemons and wait until the node accepts jobs."""
        self.folder.chmod(0o755)  # traversable for munged's socket check; the key stays private
        for name in ("log", "ctld_state", "slurmd_spool"):
            (self.folder / name).mkdir(exist_ok=True)
        try:
            self._start_munged()
            self._write_slurm_conf()
            self._run_daemon("slurmctld", [_find("slurmctld"), "-f", str(self.conf)])
            self._run_daemon("slurmd", [_find("slurmd"), "-f", str(self.conf), "-N", self.node])
            self._wait_until_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munged(self) -> None:
        key = self.folder / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        self._run_daemon(
            "munged",
            [
                _find("munged"),
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.pid_file('munged')}",
                f"--log-file={self.log_file('munged')}",
                f"--seed-file={self.folder / 'munged.seed'}",
            ],
        )

    def _write_slurm_conf(self) -> None:
        user = "root"
        memory = min(16_000, _memory_mb() // 2)
        settings = {
            "ClusterName": "lppadtest",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmUser": user,
            "SlurmdUser": user,
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket},cred_expire={CRED_EXPIRE_SECONDS}",
            "StateSaveLocation": self.folder / "ctld_state",
            "SlurmdSpoolDir": self.folder / "slurmd_spool",
            "SlurmctldPidFile": self.pid_file("slurmctld"),
            "SlurmdPidFile": self.pid_file("slurmd"),
            "SlurmctldLogFile": self.log_file("slurmctld"),
            "SlurmdLogFile": self.log_file("slurmd"),
            # Plain process tracking and no task binding: no cgroups needed (containers, CI).
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=2,bf_interval=2",  # requeued jobs restart promptly
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU_Memory",
            "ReturnToService": 2,
            "KillWait": 30,
        }
        lines = [f"{name}={value}" for name, value in settings.items()]
        lines.append(f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN")
        lines.append(f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _run_daemon(self, name: str, command: list[str]) -> None:
        """Start a daemon that forks into the background and writes its pid file."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} did not start: {done.stderr.strip()} {self._log_tail(name)}")
        self.started.append(name)
        deadline = time.monotonic() + 20
        while not self._pid(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} wrote no pid file {self.pid_file(name)} {self._log_tail(name)}")
            time.sleep(0.1)

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            done = self.run(["sinfo", "--noheader", "--format=%T"], check=False)
            state = done.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout} s (state {state!r}) {self._log_tail('slurmd')}")

    def _log_tail(self, daemon: str, lines: int = 5) -> str:
        try:
            return "| log: " + " / ".join(self.log_file(daemon).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------------------------------

    def run(self, command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, check=check, **kwargs)

    def job_states(self, job_id: str) -> dict[str, str]:
        """``{"jobid_index": state}`` of the queued tasks of array job ``job_id``."""
        done = self.run(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%i %T"], check=False)
        return dict(line.split() for line in done.stdout.splitlines() if line.strip())

    def wait_for_job(self, job_id: str, timeout: float) -> None:
        """Wait until array job ``job_id`` has left the queue; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.job_states(job_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still queued after {timeout} s: {self.job_states(job_id)}")
            time.sleep(1.0)

    def _pid(self, daemon: str) -> int | None:
        try:
            return int(self.pid_file(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons this object started and remove its folder."""
        if "slurmctld" in self.started:
            self.run(["scancel", "--full", f"--user={os.getuid()}"], check=False)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                done = self.run(["squeue", "--noheader"], check=False)
                if done.returncode != 0 or not done.stdout.strip():
                    break
                time.sleep(0.5)
        pids = [pid for pid in map(self._pid, reversed(self.started)) if pid is not None]
        _terminate(pids)
        self.started.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _terminate(pids: list[int], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL to those still there after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _exists(pid)]
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
