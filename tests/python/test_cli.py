"""The console script / `python -m processfork` run the bundled CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import processfork


def test_cli_path_exists():
    assert os.access(processfork.cli_path(), os.X_OK)


def test_python_m_status(daemon):
    out = subprocess.run([sys.executable, "-m", "processfork", "--socket", daemon.socket,
                          "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "host" in out.stdout


def test_python_m_serve_help():
    out = subprocess.run([sys.executable, "-m", "processfork", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert "usage: processfork serve" in out.stdout + out.stderr


def test_console_script(daemon):
    exe = shutil.which("processfork", path=os.path.dirname(sys.executable))
    if exe is None:
        import pytest
        pytest.skip("console script not installed next to this interpreter")
    out = subprocess.run([exe, "--socket", daemon.socket, "--json", "status"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_python_m_serve_runs_a_daemon():
    """`python -m processfork serve ...` is the daemon: connect to it, then stop it."""
    import tempfile
    import time
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="pfpy-") as tmp:
        sock, ready = Path(tmp) / "s.sock", Path(tmp) / "ready"
        proc = subprocess.Popen(
            [sys.executable, "-m", "processfork", "serve", "--device", "host", "--geometry",
             "tiny", "--capacity", "8MiB", "--chunk", "2MiB", "--socket", str(sock), "--http",
             "off", "--ready-file", str(ready)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.02)
            with processfork.connect(str(sock)) as c:
                assert c.pool().daemon_pid == proc.pid  # exec'd: the same process
        finally:
            proc.terminate()
            proc.wait(timeout=10)
