"""One lazily (re)connected daemon session, for code that must never fail its host.

vLLM's scheduler and workers call the connector on every step; a daemon that is down
or restarting must turn into cache misses, not exceptions. A :class:`Link` hands out
its :class:`processfork.Client` while the session is healthy, and ``None`` from the
moment a call failed (:meth:`Link.drop`) until ``retry_interval_s`` has passed, when
the next :meth:`Link.get` connects again. Everything the old session held (branches,
page holds) died with it in the daemon (leases end with their connection).

Not thread-safe: each connector role uses its link from one thread (vLLM's scheduler
loop, or a worker's execute loop).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import processfork

__all__ = ["Link"]

logger = logging.getLogger("processfork.vllm")


class Link:
    """A daemon session that reconnects after failures.

    Args:
        socket: the daemon's socket (None: the library's default).
        timeout_ms: per round trip.
        retry_interval_s: how long to wait after a failure before reconnecting.
        on_connect: called with each new client before it is handed out (e.g. a
            geometry check); a ValueError it raises disables the link for good and is
            re-raised on the first connection only (start-up), logged afterwards.
    """

    def __init__(self, socket: str | None, timeout_ms: int, retry_interval_s: float,
                 on_connect: Callable[[processfork.Client], None] | None = None) -> None:
        self.socket = socket
        self._timeout_ms = timeout_ms
        self._retry = retry_interval_s
        self._on_connect = on_connect
        self._client: processfork.Client | None = None
        self._next_try = 0.0
        self._disabled: str | None = None
        self.generation = 0  # bumped on every new session: state of older ones is gone

    @property
    def where(self) -> str:
        return self.socket or "the default socket"

    def connect_now(self) -> processfork.Client | None:
        """First connection, at start-up: a configuration error (ValueError from
        ``on_connect``) propagates so vLLM refuses to start; an unreachable daemon is
        logged and retried later."""
        try:
            return self._open(raise_config_errors=True)
        except processfork.Error as e:
            self._fail(e)
            return None

    def get(self) -> processfork.Client | None:
        """The live client, or None while the daemon is unreachable (or the link is
        disabled). Never raises."""
        if self._client is not None:
            return self._client
        if self._disabled is not None or time.monotonic() < self._next_try:
            return None
        try:
            return self._open(raise_config_errors=False)
        except processfork.Error as e:
            self._fail(e)
            return None

    def drop(self, error: BaseException) -> None:
        """Ends the session after a failed call; the next :meth:`get` after the retry
        interval reconnects."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except processfork.Error:
                pass
        self._fail(error)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except processfork.Error:
                pass

    def _open(self, raise_config_errors: bool) -> processfork.Client | None:
        client = processfork.connect(self.socket, self._timeout_ms)
        if self._on_connect is not None:
            try:
                self._on_connect(client)
            except ValueError as e:
                client.close()
                self._disabled = str(e)
                if raise_config_errors:
                    raise
                logger.error("ProcessFork disabled: %s", e)
                return None
        self._client = client
        self.generation += 1
        logger.info("ProcessFork: connected to %s (lease %d)", self.where, client.pool().lease)
        return client

    def _fail(self, error: BaseException) -> None:
        self._next_try = time.monotonic() + self._retry
        logger.warning("ProcessFork daemon at %s unavailable (%s); serving cache misses, "
                       "retrying in %.1f s", self.where, error, self._retry)
