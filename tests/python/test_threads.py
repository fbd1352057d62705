"""The GIL is released while a call waits for the daemon."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import processfork


def _wait_until_stopped(pid: int) -> None:
    """Returns once every thread of process ``pid`` is stopped (state T in /proc).

    ``kill(SIGSTOP)`` returns before the group stop is complete: each thread stops only when
    it next passes through the kernel's signal handling, so a daemon thread already running
    (on the other core, say, woken by a request) could still answer one. Waiting for every
    thread's state removes that race; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 60
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    # "pid (comm) S ...": the state follows the last ')' (comm may hold one)
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        if states and all(s in ("T", "t") for s in states):
            return
        assert time.monotonic() < deadline, f"daemon {pid} did not stop: {states}"
        os.sched_yield()


def test_gil_released_while_blocked(private_daemon):
    """Stop the daemon, so a round trip cannot finish; a thread makes one. This thread
    then runs Python code (a counter) and only afterwards resumes the daemon. The call
    can succeed only if this thread ran while the other was inside it, i.e. with the GIL
    released. No timing thresholds: the counter proves progress, success proves order."""
    c = private_daemon.connect(timeout_ms=60_000)
    caller_in_call = threading.Event()
    result: dict[str, object] = {}

    def blocking_call() -> None:
        caller_in_call.set()
        try:
            result["stats"] = c.stats()  # blocks until the daemon runs again
        except processfork.Error as e:  # pragma: no cover - reported below
            result["error"] = e

    os.kill(private_daemon.proc.pid, signal.SIGSTOP)
    try:
        _wait_until_stopped(private_daemon.proc.pid)
        t = threading.Thread(target=blocking_call)
        t.start()
        caller_in_call.wait()
        # wait until the other thread's Python frame sits in the call (no deadline needed)
        while True:
            frame = sys._current_frames().get(t.ident)
            if frame is not None and frame.f_code.co_name == "stats":
                break
            if not t.is_alive():
                break
        counter = 0
        while counter < 200_000:
            counter += 1
        still_blocked = t.is_alive() and "stats" not in result
    finally:
        os.kill(private_daemon.proc.pid, signal.SIGCONT)
    t.join(timeout=120)
    assert not t.is_alive()
    assert counter == 200_000
    assert still_blocked, "the call returned while the daemon was stopped"
    assert "error" not in result, result.get("error")
    assert isinstance(result["stats"], processfork.PoolStats)
    c.close()


def test_threads_share_a_client(client):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(20):
                b = client.branch()
                client.append(b, range(k, k + 5))
                assert client.view(b).n_tokens == 5
                client.free(b)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
