"""One daemon session for an engine adapter, with the one reconnect policy they all use.

Engines call their adapter from hot paths (vLLM's scheduler and workers on every step,
SGLang's HiCache threads, HTTP routes); a daemon that is down or restarting must turn into
cache misses and 503s, never into exceptions in the engine or a stalled loop. The policy:

- **Lazy**: nothing connects before the first use (:meth:`Session.connect_now` connects at
  start-up, ignoring the wait below, so that a misconfiguration stops the engine there).
- **Checked**: every new client is passed to ``on_connect`` (e.g. a pool geometry check)
  before it is handed out; when that raises, the client is closed and the error raised.
- **Reconnected underneath**: a ``processfork.Client`` reconnects by itself to a daemon
  restarted on the same socket (its ``generation`` counts that; docs/python.md "Daemon
  restarts"). The session notices when it hands the client out, when
  :attr:`Session.generation` is read and in :meth:`drop`, and bumps the generation
  without closing the client: no retry wait, the engine
  goes on with the new daemon at once.
- **Dropped on loss**: a caller whose call failed because the session died
  (:func:`session_lost`) calls :meth:`Session.drop`; everything the session held
  (branches, page holds) died with it in the daemon (leases end with their connection), so
  :attr:`Session.generation` counts sessions (and reconnections) for callers that keep
  such state. A client that already reconnected is not dropped.
- **Throttled**: after a drop or a failed connection attempt (daemon unreachable, or
  refused by ``on_connect``), no new attempt is made for ``retry_interval_s``; until then
  :meth:`Session.client` raises ``Unavailable`` at once (:meth:`Session.get` returns
  None). ``0`` retries on the next call.
- **Closed for good** by :meth:`Session.close`.

Sharing: by default one client serves every thread (a ``processfork.Client`` serializes its
requests; the session is thread-safe). ``per_thread=True`` gives each thread its own client
(``threading.local``) so threads do not wait on each other and page holds belong to the
thread that took them (SGLang's HiCache threads); :meth:`Session.drop` then drops only the
calling thread's client, and :meth:`Session.close` closes every thread's.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Optional

import processfork

__all__ = ["Session", "session_lost"]


def session_lost(error: BaseException) -> bool:
    """Whether a failed call means its session is dead (daemon gone or timed out, or the
    byte stream out of step): the caller should :meth:`Session.drop` it (which keeps a
    client that reconnected by itself). A ``StaleHandle`` is not a loss: the client works;
    the caller's state is of an earlier generation."""
    return isinstance(error, (processfork.Unavailable, processfork.ProtocolError))


def _close_quietly(client: processfork.Client) -> None:
    try:
        client.close()
    except processfork.Error:
        pass


class Session:
    """A daemon session that connects lazily and reconnects after a loss (see the module
    docstring for the policy).

    Args:
        socket: the daemon's socket (None: ``$PROCESSFORK_SOCKET``, else the default).
        timeout_ms: per round trip.
        retry_interval_s: after a loss or a failed attempt, how long before the next one.
        on_connect: called with each new client before it is handed out; raises to refuse
            it (a ``ValueError`` for a configuration mismatch).
        per_thread: one client per thread instead of one shared by all.
        logger: where connections, losses and refusals are logged (None: not logged).
    """

    def __init__(self, socket: Optional[str], timeout_ms: int, retry_interval_s: float,
                 on_connect: Optional[Callable[[processfork.Client], None]] = None, *,
                 per_thread: bool = False, logger: Optional[logging.Logger] = None) -> None:
        self.socket = socket
        self.timeout_ms = timeout_ms
        self.retry_interval_s = retry_interval_s
        self._on_connect = on_connect
        self._per_thread = per_thread
        self._logger = logger
        self._lock = threading.RLock()  # guards what follows; held while connecting a shared one
        self._shared: Optional[processfork.Client] = None   # per_thread=False
        self._local = threading.local()                     # per_thread=True: .client
        self._clients: List[processfork.Client] = []        # every live client
        self._next_attempt = 0.0  # monotonic time before which no connection is tried
        self._closed = False
        self._generation = 0  # see the generation property

    @property
    def generation(self) -> int:
        """Bumped on every new client and every reconnection of one (noticed here, when a
        client is handed out, and in :meth:`drop`): what an earlier generation held is
        gone."""
        c = self._raw_current()
        if c is not None:
            self._noticed_reconnect(c)
        return self._generation

    @property
    def where(self) -> str:
        return self.socket or "the default socket"

    # ---- handing out clients ---------------------------------------------------------
    def connect_now(self) -> processfork.Client:
        """Connects (this thread, when per thread) now, whatever the retry wait: for
        start-up. Raises what connecting or ``on_connect`` raises."""
        c = self._current()
        if c is not None:
            return c
        if self._per_thread:
            return self._open(at_startup=True)
        with self._lock:
            return self._current() or self._open(at_startup=True)

    def client(self) -> processfork.Client:
        """The live client, connecting when there is none and the retry wait is over.

        Raises:
            processfork.Unavailable: closed, within the retry wait after a loss, or the
                daemon is unreachable.
            Exception: what ``on_connect`` raises (e.g. a geometry mismatch).
        """
        c = self._current()
        if c is not None:
            return c
        if self._per_thread:
            with self._lock:
                self._may_connect()
            return self._open()
        with self._lock:
            c = self._current()  # another thread may have connected meanwhile
            if c is not None:
                return c
            self._may_connect()
            return self._open()

    def get(self) -> Optional[processfork.Client]:
        """:meth:`client`, or None where it raises (logged, given a logger): for callers
        that must never fail."""
        if self._current() is None and (self._closed or time.monotonic() < self._next_attempt):
            return None  # without building an exception, on every engine step
        try:
            return self.client()
        except Exception:  # noqa: BLE001 -- _open logged it
            return None

    # ---- losing them -----------------------------------------------------------------
    def drop(self, error: Optional[BaseException] = None,
             client: Optional[processfork.Client] = None) -> None:
        """Ends the (calling thread's) session after a call on it failed with ``error``;
        the next attempt waits ``retry_interval_s``. ``client``: the one that failed; when
        it is no longer the current one (already replaced), nothing happens. Without a
        current client (the failure was the connection itself) nothing happens either."""
        if isinstance(error, processfork.StaleHandle):
            return  # the caller's handle is of an earlier daemon; the session is fine
        with self._lock:
            c = self._raw_current()
            if c is None or (client is not None and client is not c):
                return
            if self._noticed_reconnect(c):
                return  # the client reconnected by itself: the session lives on
            if self._per_thread:
                self._local.client = None
            else:
                self._shared = None
            if c in self._clients:
                self._clients.remove(c)
            self._next_attempt = max(self._next_attempt,
                                     time.monotonic() + self.retry_interval_s)
        _close_quietly(c)
        if self._logger is not None:
            self._logger.warning("ProcessFork daemon at %s lost (%s); reconnecting in %.1f s",
                                 self.where, error, self.retry_interval_s)

    def close(self) -> None:
        """Closes every client (idempotent); later calls get ``Unavailable``. Call when no
        other call on a client of this session runs."""
        with self._lock:
            self._closed = True
            clients, self._clients, self._shared = self._clients, [], None
        for c in clients:
            _close_quietly(c)

    # ---- internals -------------------------------------------------------------------
    def _raw_current(self) -> Optional[processfork.Client]:
        c = getattr(self._local, "client", None) if self._per_thread else self._shared
        return c if c is not None and not c.closed else None

    def _current(self) -> Optional[processfork.Client]:
        c = self._raw_current()
        if c is not None:
            self._noticed_reconnect(c)
        return c

    def _noticed_reconnect(self, c: processfork.Client) -> bool:
        """True (and :attr:`generation` bumped, once per reconnection) when ``c``
        reconnected to a restarted daemon since the session last looked."""
        g = c.generation
        if g == getattr(c, "_pf_session_generation", g):
            return False
        with self._lock:
            if getattr(c, "_pf_session_generation", g) == g:
                return False  # another thread noticed it first
            c._pf_session_generation = g
            self._generation += 1
        if self._logger is not None:
            self._logger.warning("ProcessFork daemon at %s restarted; the client reconnected "
                                 "(lease %d, boot epoch %d)", self.where, c.pool().lease,
                                 c.pool().boot_epoch)
        return True

    def _may_connect(self) -> None:
        """Raises Unavailable when closed or within the retry wait (lock held)."""
        if self._closed:
            raise processfork.Unavailable("the ProcessFork session is closed")
        now = time.monotonic()
        if now < self._next_attempt:
            raise processfork.Unavailable(
                f"ProcessFork daemon at {self.where} was lost; next reconnect attempt in "
                f"{self._next_attempt - now:.1f}s")

    def _failed(self, error: BaseException, refused: bool, log: bool) -> None:
        with self._lock:
            self._next_attempt = time.monotonic() + self.retry_interval_s
        if self._logger is None or not log:
            return
        if refused:
            self._logger.error("ProcessFork daemon at %s refused: %s; retrying in %.1f s",
                               self.where, error, self.retry_interval_s)
        else:
            self._logger.warning("ProcessFork daemon at %s unavailable (%s); retrying in "
                                 "%.1f s", self.where, error, self.retry_interval_s)

    def _open(self, at_startup: bool = False) -> processfork.Client:
        """Connects and checks a new client (under the lock when shared: one connects,
        the other threads wait for it; per thread, threads connect in parallel)."""
        try:
            c = processfork.connect(self.socket, self.timeout_ms)
        except processfork.Error as e:
            self._failed(e, refused=False, log=True)
            raise
        try:
            if self._on_connect is not None:
                self._on_connect(c)
        except BaseException as e:
            _close_quietly(c)
            # a refusal raised at start-up is the caller's to report
            self._failed(e, refused=not isinstance(e, processfork.Error),
                         log=not at_startup or isinstance(e, processfork.Error))
            raise
        with self._lock:
            if self._closed:
                _close_quietly(c)
                raise processfork.Unavailable("the ProcessFork session is closed")
            self._clients.append(c)
            c._pf_session_generation = c.generation
            self._generation += 1
            if self._per_thread:
                self._local.client = c
            else:
                self._shared = c
        if self._logger is not None:
            self._logger.info("ProcessFork: connected to %s (lease %d)", self.where,
                              c.pool().lease)
        return c

