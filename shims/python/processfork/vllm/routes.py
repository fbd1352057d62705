"""``/v1/processfork/*``: snapshot, fork, checkout, merge, log and diff on vLLM's server.

The routes are the shared ones (:mod:`processfork._integration.routes`, which has the
table of bodies and answers) under ``/v1/processfork``, the daemon's own spelling
(docs/http.md), with vLLM's name for token ids: ``{"prompt_token_ids": [...]}`` names a
snapshot by the prompt's tokens instead of a branch. vLLM's requests have no ProcessFork
branch of their own; the connector stores each prompt's whole blocks as pages in the
daemon's prefix index, and the route opens a branch on those tokens (reusing the stored
pages, no copy), snapshots it and frees it. Checkout answers the snapshot's
``prompt_token_ids`` and commits its pages into the prefix index: the next vLLM request
whose prompt starts with them loads that KV instead of recomputing it. Merge's
``recompute_tokens`` are the tokens to send to vLLM after the merged prefix.

Errors: :mod:`processfork._integration.errors` (400, 401, 404, 409 -- a branch of another
session --, 413, 503 -- no daemon --, 507, else 500).
"""
from __future__ import annotations

from typing import Callable, Optional

from fastapi import APIRouter

from processfork._integration.routes import build_router as _build_router
from processfork._integration.session import Session

__all__ = ["build_router", "ROUTE_PREFIX"]

ROUTE_PREFIX = "/v1/processfork"


def build_router(session: Callable[[], Session],
                 namespace: Callable[[], Optional[bytes]] = lambda: None) -> APIRouter:
    """The ``/v1/processfork`` routes over the session ``session`` returns (it raises
    ``processfork.Unavailable`` -> 503 when the routes have no daemon to use). Snapshots
    of token ids look them up in ``namespace()``: the connector's namespace of requests
    without LoRA, cache salt or prompt embeds (vllm/_namespace.py)."""
    return _build_router(
        ROUTE_PREFIX, session, tokens_field="prompt_token_ids", namespace=namespace,
        not_cached_hint="has vLLM served this prompt with the ProcessFork connector?")
