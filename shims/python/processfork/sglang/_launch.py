"""``python -m processfork.sglang``: SGLang's HTTP server with the /processfork routes.

Usage::

    python -m processfork.sglang [--processfork-socket PATH] [--processfork-timeout-ms N] \
        [--processfork-no-routes] <every `sglang serve` / `python -m sglang.launch_server` argument>

It does what ``python -m sglang.launch_server`` does -- load SGLang's plugins, parse the
server arguments, ``run_server`` -- after adding the routes of :mod:`processfork.sglang.routes`
to SGLang's module-level FastAPI ``app``. The routes talk to the daemon named by
``--processfork-socket``, else by ``"socket"`` in ``--hicache-storage-backend-extra-config``,
else ``$PROCESSFORK_SOCKET`` / the default socket. They need ONE daemon, so a deployment
sharded over tensor / pipeline ranks (one daemon per shard) is refused: run plain
``sglang serve`` there (the storage backend works the same) or pass
``--processfork-no-routes``.

Limit: with ``--tokenizer-worker-num`` > 1 SGLang's tokenizer workers re-import
``http_server`` and serve its ``app`` without these routes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List, Optional, Sequence, Tuple


def split_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """Our own options and the rest (SGLang's)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--processfork-socket", default=None)
    p.add_argument("--processfork-timeout-ms", type=int, default=10_000)
    p.add_argument("--processfork-no-routes", action="store_true")
    return p.parse_known_args(list(argv))


def _extra_config(raw: Optional[str]) -> dict:
    if not raw:
        return {}
    if raw.startswith("@"):
        path = raw[1:]
        if not path.lower().endswith(".json"):
            return {}  # TOML/YAML: name the socket with --processfork-socket
        with open(path) as f:
            raw = f.read()
    cfg = json.loads(raw)
    return cfg if isinstance(cfg, dict) else {}


def route_socket(server_args: Any, explicit: Optional[str]) -> Optional[str]:
    """The daemon the routes use.

    Raises:
        SystemExit: a sharded deployment (several daemons) without --processfork-no-routes.
    """
    tp = int(getattr(server_args, "tp_size", 1) or 1)
    pp = int(getattr(server_args, "pp_size", 1) or 1)
    if tp * pp > 1:
        raise SystemExit(
            f"processfork.sglang: tp_size={tp}, pp_size={pp}: each shard has its own ProcessFork "
            "daemon, and the /processfork routes need one. Use --processfork-no-routes (or "
            "plain `sglang serve`); snapshot through each rank's daemon instead.")
    if explicit:
        return explicit
    template = _extra_config(getattr(server_args, "hicache_storage_backend_extra_config", None)).get(
        "socket") or os.environ.get("PROCESSFORK_SOCKET")
    if template:
        return template.format(tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, dp_rank=0,
                               attn_cp_rank=0)
    return None


def route_namespace(server_args: Any) -> Optional[bytes]:
    """The prefix-index namespace the server's HiCache backend stores in
    (``_config.storage_namespace``: ``model_fingerprint`` of the backend's extra config, else
    the served model's fingerprint), so a snapshot by ``input_ids`` finds the pages SGLang
    stored."""
    from types import SimpleNamespace

    from processfork.sglang._config import storage_namespace

    extra = _extra_config(getattr(server_args, "hicache_storage_backend_extra_config", None))
    name = (getattr(server_args, "served_model_name", None)
            or getattr(server_args, "model_path", None))
    return storage_namespace(SimpleNamespace(model_fingerprint=extra.get("model_fingerprint")),
                             SimpleNamespace(model_name=name))


def main(argv: Optional[Sequence[str]] = None) -> None:
    ours, rest = split_args(sys.argv[1:] if argv is None else argv)

    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    load_plugins()
    server_args = prepare_server_args(rest)
    if not ours.processfork_no_routes:
        socket = route_socket(server_args, ours.processfork_socket)
        import sglang.srt.entrypoints.http_server as http_server

        from processfork.sglang.routes import mount

        def tokenizer() -> Any:
            state = http_server.get_global_state()
            return getattr(getattr(state, "tokenizer_manager", None), "tokenizer", None)

        mount(http_server.app, socket, ours.processfork_timeout_ms, tokenizer,
              namespace=route_namespace(server_args))

    from sglang.launch_server import run_server

    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)
