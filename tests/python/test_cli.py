"""The console script / `python -m processfork` run the bundled CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import processfork

README = Path(__file__).resolve().parents[2] / "README.md"


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


def _cli_json(daemon, *args: str, ok: bool = True) -> dict:
    """Runs the CLI the daemon fixture runs (``$PF_CLI`` or the bundled one) with ``--json``."""
    cli = os.environ.get("PF_CLI") or processfork.cli_path()
    out = subprocess.run([cli, "--socket", daemon.socket, "--json", *args],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode == 0) == ok, (args, out.returncode, out.stdout, out.stderr)
    return json.loads(out.stdout)


def test_readme_quick_start_forks_a_named_snapshot_by_its_name(daemon):
    """The README's quick start, with the real CLI against a real daemon: a snapshot taken
    with ``--name ctx`` is forked, logged and checked out as ``ctx``. Then the name moves
    with the next snapshot under it, and the ref guards its snapshot's pin."""
    readme = README.read_text()
    for line in ("branch create 1 2 3 | jq .branch", "snapshot $id --name ctx",
                 "fork ctx -n 12", "log ctx"):
        assert line in readme, line  # the commands this test runs are the README's
    made: list[int] = []
    try:
        b = _cli_json(daemon, "branch", "create", "1", "2", "3")["branch"]
        made.append(b)
        snap = _cli_json(daemon, "snapshot", str(b), "--name", "ctx")
        assert snap["cid"].startswith("sha256:") and snap["name"] == "ctx"
        forked = _cli_json(daemon, "fork", "ctx", "-n", "12")
        made += forked["branches"]
        assert len(forked["branches"]) == 12 and forked["source"] == snap["cid"]
        assert _cli_json(daemon, "log", "ctx")["entries"][0]["cid"] == snap["cid"]
        assert _cli_json(daemon, "refs", "get", "ctx")["cid"] == snap["cid"]

        # a later snapshot under the same name moves it (the branch now holds more)
        with daemon.connect() as c:
            grown = c.fork(snap["cid"], 1)[0]
            c.append(grown, [4, 5, 6, 7, 8])
            c.detach(grown)
        made.append(grown.id)
        later = _cli_json(daemon, "snapshot", str(grown.id), "--name", "ctx")
        assert later["cid"] != snap["cid"] and later["n_tokens"] == snap["n_tokens"] + 5
        co = _cli_json(daemon, "checkout", "ctx")
        made.append(co["branch"])
        assert co["cid"] == later["cid"]
        _cli_json(daemon, "unpin", snap["cid"])  # no ref names the first one any more
        err = _cli_json(daemon, "unpin", later["cid"], ok=False)  # ctx names this one
        assert err["error"]["code"] == "PF_CONFLICT"
        err = _cli_json(daemon, "snapshot", str(b), "--name", "not a ref", ok=False)
        assert err["error"]["code"] == "PF_INVALID_ARGUMENT"
        _cli_json(daemon, "refs", "delete", "ctx")
        _cli_json(daemon, "unpin", later["cid"])
    finally:
        for branch in made:
            _cli_json(daemon, "branch", "delete", str(branch))
