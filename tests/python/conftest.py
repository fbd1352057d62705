"""Fixtures for the processfork package's tests: a real daemon run as a subprocess.

The CLI binary comes from $PF_CLI, else the one bundled with the installed package
(processfork.cli_path()). Daemons default to the host device, tiny geometry, 64 MiB, HTTP off.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

import processfork


class Daemon:
    def __init__(self, proc: subprocess.Popen, socket: str, log: Path) -> None:
        self.proc = proc
        self.socket = socket
        self.log = log

    def connect(self, **kw) -> processfork.Client:
        return processfork.connect(self.socket, **kw)

    @property
    def token(self) -> str | None:
        """The bearer token for the daemon's HTTP port (``Authorization: Bearer <token>``):
        the ``<socket>.token`` file it writes when serving HTTP with auth (the default), else
        None (docs/daemon.md, Security). The client library needs none: it speaks the socket."""
        path = Path(self.socket + ".token")
        return path.read_text().strip() if path.exists() else None


def start_daemon(where: Path, geometry: str = "tiny", capacity: str = "64MiB",
                 chunk: str = "2MiB", http: str = "off", device: str = "host",
                 extra: tuple[str, ...] = ()) -> Daemon:
    """Starts `processfork serve` on ``device`` ("host" or "cuda:N") in ``where`` and waits
    until it is ready. ``geometry``: a preset or "layers=..,kv_heads=..,head_dim=..,dtype=..,
    page_tokens=.." (docs/cli.md); ``http``: "off" or "127.0.0.1:PORT"; ``extra``: more
    flags (e.g. ``("--store", dir)``). A ready file left by a killed daemon is removed
    first; the log is appended to, so a restarted daemon keeps its predecessor's."""
    sock = where / "pf.sock"
    ready = where / "ready"
    log = where / "daemon.log"
    ready.unlink(missing_ok=True)
    cli = os.environ.get("PF_CLI") or processfork.cli_path()
    cmd = [cli, "serve", "--device", device, "--geometry", geometry,
           "--capacity", capacity, "--chunk", chunk, "--socket", str(sock), "--http", http,
           "--ready-file", str(ready), *extra]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"daemon did not start ({cmd}):\n{log.read_text()}")
        time.sleep(0.02)
    return Daemon(proc, str(sock), log)


def start_cuda_daemon(where: Path, geometry: str, capacity: str = "256MiB") -> Daemon:
    """A daemon serving a cuda:0 pool, for the GPU tests. The CLI is $PF_CLI, else the one
    bundled with the installed package: a PF_CUDA=ON build's (perf/gpu_python_check.sh
    stages one and sets $PF_CLI) serves CUDA pools, the CPU wheel's does not — then the
    test skips, saying so; with $PF_CLI set a daemon that does not start fails the test."""
    sock, ready, log = where / "pf.sock", where / "ready", where / "daemon.log"
    cmd = [os.environ.get("PF_CLI") or processfork.cli_path(), "serve", "--device", "cuda:0",
           "--geometry", geometry, "--capacity", capacity, "--chunk", "2MiB", "--socket",
           str(sock), "--http", "off", "--ready-file", str(ready)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            text = log.read_text()
            if not os.environ.get("PF_CLI"):
                pytest.skip("the installed processfork CLI cannot serve cuda:0 (a CPU wheel; "
                            "run perf/gpu_python_check.sh, or set PF_CLI "
                            f"to a PF_CUDA=ON build): {text.strip()[-300:]}")
            pytest.fail(f"CUDA daemon did not start ({cmd}):\n{text}")
        time.sleep(0.05)
    return Daemon(proc, str(sock), log)


def stop_daemon(d: Daemon) -> None:
    d.proc.terminate()
    try:
        d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()


def restart_daemon(d: Daemon, sig: int = signal.SIGTERM, geometry: str = "tiny",
                   capacity: str = "64MiB") -> Daemon:
    """Stops ``d`` with ``sig`` (SIGTERM: the clean shutdown; SIGKILL: a crash) and starts a
    new daemon on the same socket (waiting for its own ready file, never sleeping)."""
    d.proc.send_signal(sig)
    d.proc.wait(timeout=30)
    where = Path(d.socket).parent
    (where / "ready").unlink(missing_ok=True)
    return start_daemon(where, geometry=geometry, capacity=capacity)


@contextlib.contextmanager
def daemon_in_tempdir(geometry: str = "tiny", prefix: str = "pfpy-") -> Iterator[Daemon]:
    """A daemon (start_daemon) in its own temporary directory, stopped on leaving."""
    # A short directory: Unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        d = start_daemon(Path(tmp), geometry=geometry)
        try:
            yield d
        finally:
            stop_daemon(d)


@pytest.fixture(scope="session")
def daemon():
    with daemon_in_tempdir() as d:
        yield d


@pytest.fixture
def private_daemon():
    """A daemon of the test's own (for tests that stop or disturb it)."""
    with daemon_in_tempdir() as d:
        yield d


@pytest.fixture
def client(daemon):
    with daemon.connect() as c:
        yield c
