"""``/processfork/*`` (snapshot, fork, checkout, merge, log, diff) for SGLang's HTTP server.

SGLang 0.5.23 serves a module-level FastAPI ``app`` (sglang/srt/entrypoints/http_server.py)
and has no hook that adds routes to it, so this module provides a router and
``python -m processfork.sglang`` mounts it before launching the server (``__main__.py``).

The routes are the shared ones (:mod:`processfork._integration.routes`, which has the
table of bodies and answers) under ``/processfork``, the daemon's SGLang spelling
(DESIGN §6), with SGLang's name for token ids: ``{"input_ids": [...]}``, or ``{"text":
"..."}`` tokenized with the server's tokenizer (``tokenizer.encode(text)``, as SGLang does
for ``/generate``) when the router was given one. A snapshot of tokens reuses the pages
SGLang's HiCache stored for them (by page hash == prefix key); its ``n_tokens`` counts the
whole cached pages found (<= ``requested_tokens``), none is a 404. Checkout puts the
snapshot's full pages back in the daemon's prefix index under their keys, so SGLang's next
request with those tokens (the answer's ``input_ids``) finds them in L3.

Errors: :mod:`processfork._integration.errors` (400, 401, 404, 409, 413 -- a body over
64 MiB --, 503 -- no daemon --, 507, else 500). The router holds one daemon session
(connected on first use, reconnected on the request after a loss).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import APIRouter

import processfork
from processfork._integration.routes import MAX_BODY_BYTES, build_router
from processfork._integration.session import Session

__all__ = ["MAX_BODY_BYTES", "make_router", "mount", "router"]

TokenizerProvider = Callable[[], Any]


def make_router(socket: Optional[str] = None, timeout_ms: int = processfork.DEFAULT_TIMEOUT_MS,
                tokenizer: Optional[TokenizerProvider] = None, prefix: str = "",
                namespace: Optional[bytes] = None) -> APIRouter:
    """A router serving the routes under ``{prefix}/processfork`` against the daemon at
    ``socket`` (None: ``$PROCESSFORK_SOCKET`` or the default socket). ``tokenizer``
    returns the server's tokenizer (or None) when a request sends ``text``. ``namespace``:
    the HiCache backend's prefix-index namespace (``ProcessForkStorage.namespace``), in
    which snapshots of token ids find the pages the backend stored; None: the default
    namespace. The router's session is closed by ``router.processfork_session.close()``."""
    session = Session(socket, timeout_ms, retry_interval_s=0.0)
    r = build_router(
        prefix + "/processfork", lambda: session, tokens_field="input_ids", tokenizer=tokenizer,
        not_cached_hint="run them through the server first (HiCache stores pages in the "
                        "background)",
        namespace=lambda: namespace)
    r.processfork_session = session  # type: ignore[attr-defined]
    return r


def mount(app: Any, socket: Optional[str] = None,
          timeout_ms: int = processfork.DEFAULT_TIMEOUT_MS,
          tokenizer: Optional[TokenizerProvider] = None,
          namespace: Optional[bytes] = None) -> APIRouter:
    """Adds the routes to a FastAPI ``app`` (SGLang's ``http_server.app``); returns the
    router. SGLang sets ORJSON route classes on its routers; these routes parse their body
    themselves, so the default class is kept."""
    r = make_router(socket, timeout_ms, tokenizer, namespace=namespace)
    app.include_router(r)
    return r


router = make_router()
"""The routes against ``$PROCESSFORK_SOCKET`` or the default socket, without a tokenizer."""
