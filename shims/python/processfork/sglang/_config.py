"""Settings of the ProcessFork HiCache backend, read from SGLang's storage config.

SGLang passes ``--hicache-storage-backend-extra-config`` (a JSON object) to the backend as
``HiCacheStorageConfig.extra_config``. The dynamic loader's own keys (``backend_name``,
``module_path``, ``class_name``, ``interface_v1``) live there too; this module reads:

``socket``
    The daemon's Unix socket. May name the rank: ``{tp_rank}``, ``{pp_rank}``,
    ``{dp_rank}``, ``{attn_cp_rank}`` (and ``{tp_size}``, ``{pp_size}``). Default:
    ``$PROCESSFORK_SOCKET`` (same placeholders), else the daemon's default socket.
``timeout_ms``
    Per send/receive to the daemon (default 5000). A stalled daemon costs SGLang's IO
    thread at most this long per call, then the call is a miss.
``reconnect_interval_s``
    After the daemon was lost, how long to wait between reconnect attempts (default 5).
``model_fingerprint``
    A string that stands for the model's weights in the backend's prefix-index namespace
    (see :func:`storage_namespace`); overrides the computed one.

One daemon per shard: with tensor parallelism each rank holds its own kv heads, with
pipeline parallelism its own layers, with attention context parallelism its own slice of
each page -- but SGLang's page hashes are the same on every rank. Ranks that hold different
bytes under the same key must therefore use different daemons, each started with that
rank's geometry; the socket must contain the placeholder of every parallel dimension
larger than one (data-parallel attention replicas hold the same bytes and may share).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import processfork

DEFAULT_TIMEOUT_MS = 5000
DEFAULT_RECONNECT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Settings:
    socket: Optional[str]  # None: the client library's default
    timeout_ms: int
    reconnect_interval_s: float
    model_fingerprint: Optional[str] = None


def _rank_fields(cfg: Any) -> dict:
    return {
        "tp_rank": cfg.tp_rank, "tp_size": cfg.tp_size,
        "pp_rank": cfg.pp_rank, "pp_size": cfg.pp_size,
        "dp_rank": getattr(cfg, "dp_rank", 0),
        "attn_cp_rank": getattr(cfg, "attn_cp_rank", 0),
    }


def resolve_socket(template: Optional[str], cfg: Any) -> Optional[str]:
    """The socket of this rank's daemon (``template`` formatted with the rank fields).

    Raises:
        ValueError: an unknown placeholder, or a template that does not tell the shards
            of this deployment apart.
    """
    fields = _rank_fields(cfg)
    sharded = [(name, size) for name, size in (("tp_rank", cfg.tp_size), ("pp_rank", cfg.pp_size),
                                               ("attn_cp_rank", getattr(cfg, "attn_cp_size", 1)))
               if size and size > 1]
    if template is None:
        if sharded:
            raise ValueError(
                "ProcessFork HiCache backend: this deployment is sharded ("
                + ", ".join(f"{n[:-5]}_size={s}" for n, s in sharded)
                + "); each shard needs its own daemon. Set \"socket\" in "
                "--hicache-storage-backend-extra-config with the placeholders "
                + ", ".join("{" + n + "}" for n, _ in sharded)
                + ", e.g. \"/run/pf/tp{tp_rank}.sock\"")
        return None
    try:
        path = template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"ProcessFork HiCache backend: bad socket template {template!r}: {e}; "
                         f"known placeholders: {', '.join(sorted(fields))}") from e
    for name, _ in sharded:
        if "{" + name + "}" not in template:
            raise ValueError(
                f"ProcessFork HiCache backend: socket {template!r} lacks {{{name}}}, but "
                f"{name[:-5]}_size > 1: every shard would share one daemon and read another "
                "shard's KV under the same page hash. Use one daemon per shard.")
    return path


def read_settings(extra_config: Optional[Mapping[str, Any]], cfg: Any) -> Settings:
    """Parses the backend's settings (see the module docstring).

    Raises:
        ValueError: a setting of the wrong type or range.
    """
    extra = dict(extra_config or {})
    template = extra.get("socket", os.environ.get("PROCESSFORK_SOCKET") or None)
    if template is not None and not isinstance(template, str):
        raise ValueError(f"ProcessFork HiCache backend: \"socket\" must be a string, got {template!r}")
    timeout_ms = extra.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise ValueError(f"ProcessFork HiCache backend: \"timeout_ms\" must be a positive int, got {timeout_ms!r}")
    interval = extra.get("reconnect_interval_s", DEFAULT_RECONNECT_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise ValueError("ProcessFork HiCache backend: \"reconnect_interval_s\" must be a number >= 0, "
                         f"got {interval!r}")
    fingerprint = extra.get("model_fingerprint")
    if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
        raise ValueError("ProcessFork HiCache backend: \"model_fingerprint\" must be a non-empty "
                         f"string, got {fingerprint!r}")
    return Settings(resolve_socket(template, cfg), int(timeout_ms), float(interval), fingerprint)


def storage_namespace(settings: Settings, cfg: Any) -> Optional[bytes]:
    """The prefix-index namespace every lookup and publish of this backend uses:
    ``processfork.namespace(model_fp)``, so pages of other weights (another engine's model
    on the same daemon, with the same KV geometry) are never read.

    ``model_fp`` is ``model_fingerprint`` when set; else ``processfork.model_fingerprint``
    of ``HiCacheStorageConfig.model_name`` when that is a local model directory (SGLang
    passes the served model name, which defaults to ``--model-path``); else the model name
    itself; with no name either, the default namespace. SGLang's page hashes already chain
    its cache salt and LoRA seed (``storage_namespace_seed``), so nothing else is needed.
    """
    fp = settings.model_fingerprint
    name = getattr(cfg, "model_name", None)
    if fp is None and name:
        fp = processfork.model_fingerprint(name) if os.path.isfile(
            os.path.join(name, "config.json")) else name
    return processfork.namespace(fp, None, None, None) if fp is not None else None
