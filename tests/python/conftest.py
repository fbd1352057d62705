"""Fixtures for the processfork package's tests: a real daemon run as a subprocess.

The CLI binary comes from $PF_CLI, else the one bundled with the installed package
(processfork.cli_path()). Each daemon is host-only, tiny geometry, 64 MiB, HTTP off.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import processfork


class Daemon:
    def __init__(self, proc: subprocess.Popen, socket: str, log: Path) -> None:
        self.proc = proc
        self.socket = socket
        self.log = log

    def connect(self, **kw) -> processfork.Client:
        return processfork.connect(self.socket, **kw)


def start_daemon(where: Path) -> Daemon:
    sock = where / "pf.sock"
    ready = where / "ready"
    log = where / "daemon.log"
    cmd = [processfork.cli_path(), "serve", "--device", "host", "--geometry", "tiny",
           "--capacity", "64MiB", "--chunk", "2MiB", "--socket", str(sock), "--http", "off",
           "--ready-file", str(ready)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"daemon did not start ({cmd}):\n{log.read_text()}")
        time.sleep(0.02)
    return Daemon(proc, str(sock), log)


def stop_daemon(d: Daemon) -> None:
    d.proc.terminate()
    try:
        d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()


@pytest.fixture(scope="session")
def daemon():
    # A short directory: Unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="pfpy-") as tmp:
        d = start_daemon(Path(tmp))
        yield d
        stop_daemon(d)


@pytest.fixture
def private_daemon():
    """A daemon of the test's own (for tests that stop or disturb it)."""
    with tempfile.TemporaryDirectory(prefix="pfpy-") as tmp:
        d = start_daemon(Path(tmp))
        yield d
        stop_daemon(d)


@pytest.fixture
def client(daemon):
    with daemon.connect() as c:
        yield c
