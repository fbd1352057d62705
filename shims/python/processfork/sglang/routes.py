"""``/processfork/{snapshot,fork,checkout,merge}`` for SGLang's HTTP server (FastAPI).

SGLang 0.5.23 serves a module-level FastAPI ``app`` (sglang/srt/entrypoints/http_server.py)
and has no hook that adds routes to it, so this module provides a router and
``python -m processfork.sglang`` mounts it before launching the server (``__main__.py``).

Semantics (docs/adapter-sglang.md):

``POST /processfork/snapshot`` ``{"input_ids": [...] | "text": "...", "name"?: str}``
    A branch over those tokens reuses the pages SGLang's HiCache stored for them (by page
    hash == prefix key), is snapshotted and freed (the snapshot pins the pages).
    201 ``{cid, n_tokens, n_pages, created, name, requested_tokens}``; ``n_tokens`` counts
    the whole cached pages found (<= requested). 404 when no page is cached. ``text`` is
    tokenized with the server's tokenizer (``tokenizer.encode(text)``, as SGLang does for
    ``/generate``) when the router was given one, else 400: send ``input_ids``.
``POST /processfork/fork`` ``{"cid": str | "branch": int, "n": 1..1024}``
    201 ``{branches: [ids], source: cid | null}``; the branches are detached (they outlive
    this server's session, until deleted through the daemon).
``POST /processfork/checkout`` ``{"cid": str}`` (a CID or ref name)
    A branch at the snapshot whose full pages are put back in the daemon's prefix index
    under their keys (``commit``), so SGLang's next request with those tokens finds them
    in L3. 201 ``{branch, cid, n_tokens}``; the branch is detached.
``POST /processfork/merge`` ``{"from": cid | branch, "into": cid | branch}``
    201 ``{outcome: "fast-forward" | "three-way", branch, cid, base, common_tokens,
    recompute_tokens}``; the result branch is detached.

Errors (DESIGN §6): ``{"error": {"code", "message"}}`` -- 400 ``invalid_argument``,
404 ``not_found``, 409 ``conflict``, 413 ``payload_too_large``, 507 ``out_of_memory``,
503 ``unavailable`` (no daemon), 500 ``internal``. A bad request changes nothing.

Daemon calls block, so handlers run them in Starlette's thread pool, never on SGLang's
event loop. The router holds one daemon session (connected on first use, reconnected
after a loss); its requests are serialized by the client.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import processfork

logger = logging.getLogger(__name__)

__all__ = ["MAX_BODY_BYTES", "make_router", "mount", "router"]

MAX_BODY_BYTES = 64 * 1024 * 1024  # a 1M-token prompt as JSON fits
_UINT32 = 1 << 32

TokenizerProvider = Callable[[], Any]


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


_PF_ERRORS: Tuple[Tuple[type, int, str], ...] = (
    (processfork.InvalidArgument, 400, "invalid_argument"),
    (processfork.NotFound, 404, "not_found"),
    (processfork.Conflict, 409, "conflict"),
    (processfork.OutOfMemory, 507, "out_of_memory"),
    (processfork.Unavailable, 503, "unavailable"),
    (processfork.Unsupported, 400, "unsupported"),
)


class _Session:
    """The router's daemon session (lazy, reconnecting, thread-safe)."""

    def __init__(self, socket: Optional[str], timeout_ms: int) -> None:
        self.socket, self.timeout_ms = socket, timeout_ms
        self._lock = threading.Lock()
        self._client: Optional[processfork.Client] = None

    def client(self) -> processfork.Client:
        with self._lock:
            if self._client is None or self._client.closed:
                self._client = processfork.connect(self.socket, self.timeout_ms)
            return self._client

    def lost(self) -> None:
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            try:
                c.close()
            except processfork.Error:
                pass

    def close(self) -> None:
        self.lost()


# ---- request validation ---------------------------------------------------------------
def _field_str(body: Dict[str, Any], name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        raise _HttpError(400, "invalid_argument", f"field '{name}' must be a non-empty string")
    return v


def _source(body: Dict[str, Any], name: str) -> Union[str, int]:
    v = body.get(name)
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    raise _HttpError(400, "invalid_argument",
                     f"field '{name}' must be a CID or ref name (string) or a branch id (int)")


def _tokens(body: Dict[str, Any], tokenizer: Optional[TokenizerProvider]) -> List[int]:
    has_ids, has_text = "input_ids" in body, "text" in body
    if has_ids == has_text:
        raise _HttpError(400, "invalid_argument", "give exactly one of 'input_ids' or 'text'")
    if has_ids:
        ids = body["input_ids"]
        if (not isinstance(ids, list) or not ids or
                not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _UINT32
                        for t in ids)):
            raise _HttpError(400, "invalid_argument",
                             "field 'input_ids' must be a non-empty list of token ids (uint32)")
        return ids
    text = body["text"]
    if not isinstance(text, str) or not text:
        raise _HttpError(400, "invalid_argument", "field 'text' must be a non-empty string")
    tok = tokenizer() if tokenizer is not None else None
    if tok is None:
        raise _HttpError(400, "invalid_argument",
                         "this server has no tokenizer for the route; send 'input_ids'")
    ids = list(tok.encode(text))
    if not ids:
        raise _HttpError(400, "invalid_argument", "'text' tokenizes to no tokens")
    return ids


def _n(body: Dict[str, Any]) -> int:
    n = body.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= processfork.MAX_FORK:
        raise _HttpError(400, "invalid_argument",
                         f"field 'n' must be an integer in 1..{processfork.MAX_FORK}")
    return n


# ---- operations (run in a worker thread) ----------------------------------------------
def _do_snapshot(c: processfork.Client, tokens: List[int], name: Optional[str]) -> Dict[str, Any]:
    b = c.branch(tokens)
    try:
        if b.reused_tokens == 0:
            raise _HttpError(
                404, "not_found",
                f"no cached KV for these tokens: none of their whole pages "
                f"({c.pool().page_tokens} tokens each) is in the daemon's prefix index; run them "
                "through the server first (HiCache stores pages in the background)")
        s = c.snapshot(b, name=name)
    finally:
        c.free(b)
    return {"cid": s.cid, "n_tokens": s.n_tokens, "n_pages": s.n_pages, "created": s.created,
            "name": name, "requested_tokens": len(tokens)}


def _do_fork(c: processfork.Client, source: Union[str, int], n: int) -> Dict[str, Any]:
    kids = c.fork(source, n)
    for k in kids:
        c.detach(k)
    return {"branches": [k.id for k in kids], "source": kids[0].cid or None if kids else None}


def _do_checkout(c: processfork.Client, cid: str) -> Dict[str, Any]:
    b = c.checkout(cid)
    try:
        c.commit(b)  # puts the snapshot's full pages back in the prefix index by key
        c.detach(b)
    except BaseException:
        c.free(b)
        raise
    return {"branch": b.id, "cid": b.cid, "n_tokens": b.n_tokens}


def _do_merge(c: processfork.Client, from_: Union[str, int], into: Union[str, int]) -> Dict[str, Any]:
    r = c.merge(from_, into)
    c.detach(r.branch)
    return {"outcome": "fast-forward" if r.fast_forward else "three-way", "branch": r.branch.id,
            "cid": r.cid, "base": r.base or None, "common_tokens": r.common_tokens,
            "recompute_tokens": list(r.recompute_tokens)}


def make_router(socket: Optional[str] = None, timeout_ms: int = processfork.DEFAULT_TIMEOUT_MS,
                tokenizer: Optional[TokenizerProvider] = None, prefix: str = "") -> APIRouter:
    """A router serving the four routes against the daemon at ``socket`` (None:
    ``$PROCESSFORK_SOCKET`` or the default socket). ``tokenizer`` returns the server's
    tokenizer (or None) when a request sends ``text``. The router's session is closed by
    ``router.processfork_session.close()``."""
    session = _Session(socket, timeout_ms)
    r = APIRouter(prefix=prefix)
    r.processfork_session = session  # type: ignore[attr-defined]

    async def call(request: Request, op: Callable[[Dict[str, Any]], Tuple[Callable, tuple]]) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, "payload_too_large", f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw) if raw else None
        except ValueError as e:
            return _error(400, "invalid_argument", f"malformed JSON: {e}")
        if not isinstance(body, dict):
            return _error(400, "invalid_argument", "the body must be a JSON object")
        try:
            fn, args = op(body)

            def run() -> Dict[str, Any]:
                return fn(session.client(), *args)

            return JSONResponse(await run_in_threadpool(run), status_code=201)
        except _HttpError as e:
            return _error(e.status, e.code, e.message)
        except processfork.Error as e:
            if isinstance(e, processfork.Unavailable):
                session.lost()
            for cls, status, code in _PF_ERRORS:
                if isinstance(e, cls):
                    return _error(status, code, str(e))
            logger.exception("processfork route %s failed", request.url.path)
            return _error(500, "internal", str(e))

    @r.post("/processfork/snapshot", status_code=201)
    async def snapshot(request: Request) -> JSONResponse:
        def op(body: Dict[str, Any]) -> Tuple[Callable, tuple]:
            name = body.get("name")
            if name is not None and not isinstance(name, str):
                raise _HttpError(400, "invalid_argument", "field 'name' must be a string")
            return _do_snapshot, (_tokens(body, tokenizer), name)
        return await call(request, op)

    @r.post("/processfork/fork", status_code=201)
    async def fork(request: Request) -> JSONResponse:
        def op(body: Dict[str, Any]) -> Tuple[Callable, tuple]:
            if ("cid" in body) == ("branch" in body):
                raise _HttpError(400, "invalid_argument", "give exactly one of 'cid' or 'branch'")
            if "cid" in body:
                src: Union[str, int] = _field_str(body, "cid")
            else:
                v = body["branch"]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise _HttpError(400, "invalid_argument", "field 'branch' must be a branch id (int)")
                src = v
            return _do_fork, (src, _n(body))
        return await call(request, op)

    @r.post("/processfork/checkout", status_code=201)
    async def checkout(request: Request) -> JSONResponse:
        return await call(request, lambda body: (_do_checkout, (_field_str(body, "cid"),)))

    @r.post("/processfork/merge", status_code=201)
    async def merge(request: Request) -> JSONResponse:
        return await call(request, lambda body: (_do_merge, (_source(body, "from"),
                                                             _source(body, "into"))))

    return r


def mount(app: Any, socket: Optional[str] = None,
          timeout_ms: int = processfork.DEFAULT_TIMEOUT_MS,
          tokenizer: Optional[TokenizerProvider] = None) -> APIRouter:
    """Adds the routes to a FastAPI ``app`` (SGLang's ``http_server.app``); returns the
    router. SGLang sets ORJSON route classes on its routers; these routes parse their body
    themselves, so the default class is kept."""
    r = make_router(socket, timeout_ms, tokenizer)
    app.include_router(r)
    return r


router = make_router()
"""The routes against ``$PROCESSFORK_SOCKET`` or the default socket, without a tokenizer."""
