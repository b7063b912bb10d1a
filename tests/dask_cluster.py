"""A real Dask cluster on 127.0.0.1 for tests: ``dask scheduler`` and ``dask worker``
processes started here and stopped after, each by its own process object.

The workers run in a folder of their own (``cwd``), so a path sent relative to the client's
folder would not be found there; they import this repository and the tests folder (the user
models of tests/test_tiling.py live in a test module).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = 2) -> Iterator[str]:
    """Start a scheduler and ``workers`` single-thread workers; yields the scheduler address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), JAX_PLATFORMS="cpu",
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    cwd = folder / "workers_cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    with open(folder / "dask.log", "w") as log:
        processes = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)]
        try:
            for i in range(workers):
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
                     "--host", "127.0.0.1", "--name", f"w{i}", "--local-directory", str(folder / f"w{i}")],
                    env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT))
            from dask.distributed import Client

            with Client(address, timeout="60s") as client:
                client.wait_for_workers(workers, timeout=120)
            yield address
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in reversed(processes):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
