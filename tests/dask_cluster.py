"""A real Dask cluster on 127.0.0.1 for tests: ``dask scheduler`` and ``dask worker``
processes started here and stopped after, each by its own process object.

Set up as docs/superresolve.md tells users to: the scheduler runs without this repository
(no ``PYTHONPATH``, a folder of its own as its working directory), so a task that needs project
code on the scheduler fails here as it would there; the workers import this repository and the
tests folder (the user models of tests/test_tiling.py live in a test module). The workers run
in a folder of their own by default, so that a path sent relative to the client's folder would
not be found there. With ``tls``, every process speaks TLS with certificates from
:func:`make_tls_files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
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


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A certificate authority's certificate and one certificate with its key, signed by it
    (PEM files), for every process of a test cluster, as a site might issue them."""

    ca_file: Path
    cert: Path
    key: Path

    def dask_options(self) -> list[str]:
        """The ``dask scheduler`` / ``dask worker`` options (superresolve.py's too)."""
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


NODE_EXTENSIONS = """basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_tls_files(folder: Path) -> TlsFiles:
    """A self-signed certificate authority and one certificate signed by it, made by the
    ``openssl`` commands of docs/superresolve.md (Dask checks the chain, not host names)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS tests need the openssl command"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.ext").write_text(NODE_EXTENSIONS)
    for command in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=my cluster CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=my cluster", "-keyout", "node.key", "-out", "node.csr"],
        [
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "node.ext",
            "-out",
            "node.pem",
        ],
    ):
        subprocess.run([openssl, *command], cwd=folder, check=True, capture_output=True)
    return TlsFiles(folder / "ca.pem", folder / "node.pem", folder / "node.key")


@contextlib.contextmanager
def dask_cluster(
    folder: Path, workers: int = 2, worker_cwd: Path | None = None, tls: TlsFiles | None = None
) -> Iterator[str]:
    """Start a scheduler and ``workers`` single-thread workers; yields the scheduler address."""
    port = free_port()
    protocol = "tls" if tls else "tcp"
    address = f"{protocol}://127.0.0.1:{port}"
    tls_options = tls.dask_options() if tls else []
    scheduler_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    worker_env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        JAX_PLATFORMS="cpu",
        XLA_PYTHON_CLIENT_PREALLOCATE="false",
    )
    scheduler_cwd = folder / "scheduler_cwd"
    worker_cwd = worker_cwd or folder / "workers_cwd"
    for cwd in (scheduler_cwd, worker_cwd):
        cwd.mkdir(parents=True, exist_ok=True)
    with open(folder / "dask.log", "w") as log:
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--protocol",
                    protocol,
                    "--no-dashboard",
                    *tls_options,
                ],
                env=scheduler_env,
                cwd=scheduler_cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ]
        try:
            for i in range(workers):
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "dask",
                            "worker",
                            address,
                            "--nthreads",
                            "1",
                            "--no-dashboard",
                            "--host",
                            "127.0.0.1",
                            "--name",
                            f"w{i}",
                            "--local-directory",
                            str(folder / f"w{i}"),
                            *tls_options,
                        ],
                        env=worker_env,
                        cwd=worker_cwd,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            from dask.distributed import Client

            with Client(address, timeout="60s", security=client_security(tls)) as client:
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


def client_security(tls: TlsFiles | None):
    """What a test's own ``distributed.Client`` of the cluster needs (None: plain TCP)."""
    if tls is None:
        return None
    from distributed import Security

    return Security(
        tls_ca_file=str(tls.ca_file),
        tls_client_cert=str(tls.cert),
        tls_client_key=str(tls.key),
        require_encryption=True,
    )
