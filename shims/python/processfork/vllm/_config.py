"""Connector settings, read from vLLM's ``kv_connector_extra_config``.

Every key is optional::

    --kv-transfer-config '{"kv_connector": "ProcessForkConnector",
                           "kv_connector_module_path": "processfork.vllm",
                           "kv_role": "kv_both",
                           "kv_connector_extra_config": {
                               "socket": "/run/pf/tp{tp_rank}.sock",
                               "timeout_ms": 2000,
                               "retry_interval_s": 5.0,
                               "model_fingerprint": "..."}}'

``socket``: the daemon's Unix socket, or a template with ``{tp_rank}`` and/or
``{pp_rank}``. Each tensor-parallel rank holds only its own KV heads (and each
pipeline stage only its own layers), so with TP or PP > 1 every rank needs a daemon
whose geometry matches that rank's share; the template names one socket per rank.
Unset: ``$PROCESSFORK_SOCKET``, else the daemon's default socket.

``timeout_ms``: bound on every daemon round trip (the scheduler waits on it).

``retry_interval_s``: after the daemon was unreachable, how long the connector serves
cache misses before it tries to reconnect.

``model_fingerprint``: a string that stands for the model's weights in every request's
prefix-index namespace (_namespace.py). Unset: ``processfork.model_fingerprint`` of the
model directory (hashed once at start-up), or the model's name and revision when the
model is not a local directory. Engines share pages only under equal fingerprints.
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ConnectorSettings", "RankAddress"]

_PLACEHOLDERS = frozenset({"tp_rank", "pp_rank"})


@dataclass(frozen=True)
class RankAddress:
    """One worker rank of the engine: (tensor-parallel rank, pipeline stage)."""
    tp_rank: int
    pp_rank: int


@dataclass(frozen=True)
class ConnectorSettings:
    """Parsed ``kv_connector_extra_config`` (see the module docstring)."""
    socket: str | None
    timeout_ms: int
    retry_interval_s: float
    model_fingerprint: str | None = None

    @classmethod
    def from_extra_config(cls, extra: Mapping[str, Any] | None) -> "ConnectorSettings":
        """Validates and parses the connector's extra config.

        Raises:
            ValueError: an unknown key, a wrong type, or a socket template with a
                placeholder other than ``{tp_rank}`` / ``{pp_rank}``.
        """
        extra = dict(extra or {})
        known = {"socket", "timeout_ms", "retry_interval_s", "model_fingerprint"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(f"ProcessForkConnector: unknown kv_connector_extra_config keys "
                             f"{unknown}; known keys: {sorted(known)}")
        socket = extra.get("socket", os.environ.get("PROCESSFORK_SOCKET") or None)
        if socket is not None and (not isinstance(socket, str) or not socket):
            raise ValueError(f"ProcessForkConnector: 'socket' must be a non-empty string, "
                             f"got {socket!r}")
        if socket is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(socket) if f is not None}
            bad = sorted(fields - _PLACEHOLDERS)
            if bad:
                raise ValueError(f"ProcessForkConnector: socket template {socket!r} uses "
                                 f"{bad}; only {{tp_rank}} and {{pp_rank}} are defined")
        timeout_ms = extra.get("timeout_ms", 2000)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError(f"ProcessForkConnector: 'timeout_ms' must be a positive int, "
                             f"got {timeout_ms!r}")
        retry = extra.get("retry_interval_s", 5.0)
        if isinstance(retry, bool) or not isinstance(retry, (int, float)) or retry < 0:
            raise ValueError(f"ProcessForkConnector: 'retry_interval_s' must be a number "
                             f">= 0, got {retry!r}")
        fingerprint = extra.get("model_fingerprint")
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise ValueError(f"ProcessForkConnector: 'model_fingerprint' must be a non-empty "
                             f"string, got {fingerprint!r}")
        return cls(socket, timeout_ms, float(retry), fingerprint)

    @property
    def per_rank(self) -> bool:
        """True when the socket is a template naming one daemon per rank."""
        return self.socket is not None and "{" in self.socket

    def check_parallelism(self, tp_size: int, pp_size: int) -> None:
        """Raises ValueError when several ranks would share one daemon: their KV shares
        (heads, layers) differ, so one pool geometry cannot hold them all."""
        s = self.socket or ""
        if tp_size > 1 and "{tp_rank}" not in s:
            raise ValueError(
                f"ProcessForkConnector: tensor_parallel_size={tp_size} needs one daemon per "
                f"TP rank (each rank holds its own KV heads); set "
                f"kv_connector_extra_config.socket to a template with {{tp_rank}}, e.g. "
                f"'/run/processfork/tp{{tp_rank}}.sock'")
        if pp_size > 1 and "{pp_rank}" not in s:
            raise ValueError(
                f"ProcessForkConnector: pipeline_parallel_size={pp_size} needs one daemon "
                f"per pipeline stage (each stage holds its own layers); add {{pp_rank}} to "
                f"kv_connector_extra_config.socket")

    def socket_for(self, rank: RankAddress) -> str | None:
        """The socket of ``rank``'s daemon (None: the client library's default)."""
        if self.socket is None:
            return None
        return self.socket.format(tp_rank=rank.tp_rank, pp_rank=rank.pp_rank)
