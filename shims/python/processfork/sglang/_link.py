"""Per-thread sessions with one ProcessFork daemon, with reconnect after a loss.

DESIGN: SGLang's HiCache controller calls the storage backend from several threads at once
(the prefetch thread queries ``batch_exists``, the prefetch IO thread loads, the backup
thread stores). A ``processfork.Client`` serializes its requests, and page holds belong to
the session that took them, so each thread gets its own Client (``threading.local``):
threads do not wait on each other and every hold is released by the session that took it.

When a call fails with ``Unavailable`` (daemon gone, timeout) the thread's client is
dropped. The next call of any thread may reconnect, at most once per
``reconnect_interval_s`` for the whole link; a reconnected client is checked by
``on_connect`` (the pool geometry) before use. Until then calls get ``Unavailable`` at once,
so a dead daemon costs SGLang nothing but misses.

Lifetimes: clients live until :meth:`close` (SGLang calls the backend's ``close`` after it
stopped its storage threads, so no call races it).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional

import processfork


class Link:
    """Connects lazily per thread; see the module docstring."""

    def __init__(self, socket: Optional[str], timeout_ms: int, reconnect_interval_s: float,
                 on_connect: Callable[[processfork.Client], None]) -> None:
        self.socket = socket
        self.timeout_ms = timeout_ms
        self.reconnect_interval_s = reconnect_interval_s
        self._on_connect = on_connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: List[processfork.Client] = []
        self._next_attempt = 0.0  # monotonic time before which no reconnect is tried
        self._closed = False

    def connect_now(self) -> processfork.Client:
        """Connects this thread now (no throttling); raises what ``connect`` raises."""
        return self._open()

    def _open(self) -> processfork.Client:
        c = processfork.connect(self.socket, self.timeout_ms)
        try:
            self._on_connect(c)
        except BaseException:
            c.close()
            raise
        with self._lock:
            if self._closed:
                c.close()
                raise processfork.Unavailable("the ProcessFork storage backend is closed")
            self._clients.append(c)
        self._local.client = c
        return c

    def client(self) -> processfork.Client:
        """This thread's client, connecting (throttled) when it has none.

        Raises:
            processfork.Unavailable: closed, disconnected and within the reconnect interval,
                or the daemon is still unreachable.
            Exception: what ``on_connect`` raises (e.g. a geometry mismatch).
        """
        c = getattr(self._local, "client", None)
        if c is not None and not c.closed:
            return c
        with self._lock:
            if self._closed:
                raise processfork.Unavailable("the ProcessFork storage backend is closed")
            now = time.monotonic()
            if now < self._next_attempt:
                raise processfork.Unavailable(
                    f"ProcessFork daemon at {self.socket or 'the default socket'} was lost; "
                    f"next reconnect attempt in {self._next_attempt - now:.1f}s")
        try:
            return self._open()
        except processfork.Unavailable:
            with self._lock:
                self._next_attempt = time.monotonic() + self.reconnect_interval_s
            raise

    def drop(self) -> None:
        """Forgets this thread's client after it failed with ``Unavailable``."""
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is None:
            return
        with self._lock:
            if c in self._clients:
                self._clients.remove(c)
            self._next_attempt = max(self._next_attempt,
                                     time.monotonic() + self.reconnect_interval_s)
        try:
            c.close()
        except processfork.Error:
            pass

    def close(self) -> None:
        """Closes every thread's client (idempotent). Call when no other call runs."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.close()
            except processfork.Error:
                pass
