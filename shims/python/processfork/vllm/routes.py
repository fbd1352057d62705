"""``/v1/processfork/*``: snapshot, fork, checkout, merge, log and diff on vLLM's server.

The routes speak DESIGN §6 (and the daemon's own HTTP port, docs/http.md) with one
vLLM-specific addition: a snapshot can be named by the prompt's token ids instead of
a branch. vLLM's requests have no ProcessFork branch of their own; the connector
stores each prompt's whole blocks as pages in the daemon's prefix index, so
``{"prompt_token_ids": [...]}`` opens a branch on those tokens (reusing the stored
pages, no copy), snapshots it and frees it.

==============================  =============================================  ======
route                           body -> answer                                 status
==============================  =============================================  ======
POST /v1/processfork/snapshot   ``{prompt_token_ids | branch, name?}`` ->      201
                                ``{cid, created, n_tokens, n_pages, name}``
POST /v1/processfork/fork       ``{cid | branch, n}`` -> ``{branches, source}``  201
POST /v1/processfork/checkout   ``{cid}`` -> ``{branch, cid, n_tokens,``        201
                                ``prompt_token_ids}``
POST /v1/processfork/merge      ``{from, into}`` -> ``{outcome, branch, cid,``  201
                                ``base, common_tokens, recompute_tokens}``
GET  /v1/processfork/log/{cid}  -> ``{entries}``                               200
GET  /v1/processfork/diff?a=&b= -> ``{common_tokens, shared_pages, ...}``       200
==============================  =============================================  ======

Branches these routes create (fork children, checkout and merge results) are
detached, as the daemon does for HTTP-created branches: they live until deleted
(``DELETE /v1/branches/{id}`` on the daemon's port, or ``processfork branch -d``).
Checkout also commits the branch, so its pages are (again) in the prefix index: the
next vLLM request whose prompt starts with ``prompt_token_ids`` loads that KV instead
of recomputing it. Merge's ``recompute_tokens`` are the tokens to send to vLLM after
the merged prefix.

Errors are ``{"error": {"code", "message"}}``: 400 ``invalid_argument``, 404
``not_found``, 409 ``conflict`` (a branch of another session), 503 ``unavailable``
(no daemon), 507 ``out_of_memory``, 500 otherwise. A bad request changes nothing.
"""
from __future__ import annotations

import dataclasses

import json
from typing import Any, Callable, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import processfork

__all__ = ["build_router", "ROUTE_PREFIX"]

ROUTE_PREFIX = "/v1/processfork"
_MAX_FORK = 1024


class _BadRequest(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _from_error(e: processfork.Error) -> JSONResponse:
    table = {
        processfork.InvalidArgument: (400, "invalid_argument"),
        processfork.NotFound: (404, "not_found"),
        processfork.Conflict: (409, "conflict"),
        processfork.AlreadyExists: (409, "conflict"),
        processfork.OutOfMemory: (507, "out_of_memory"),
        processfork.Unavailable: (503, "unavailable"),
    }
    for cls, (status, code) in table.items():
        if isinstance(e, cls):
            return _error(status, code, e.message or str(e))
    return _error(500, "internal", str(e))


def _int(body: dict[str, Any], key: str) -> int:
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _BadRequest(f"field '{key}' must be an integer")
    return v


def _source(value: Any, key: str) -> int | str:
    """A branch id (int) or a CID / ref name (str)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise _BadRequest(f"field '{key}' must be a branch id or a CID / ref name")
    return value


def _query_source(value: Optional[str], key: str) -> int | str:
    if not value:
        raise _BadRequest(f"query parameter '{key}' is required")
    return int(value) if value.isdecimal() else value


def _tokens(body: dict[str, Any]) -> list[int]:
    t = body["prompt_token_ids"]
    if not isinstance(t, list) or not t or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in t):
        raise _BadRequest("field 'prompt_token_ids' must be a non-empty list of token ids")
    return t


def _one_of(body: dict[str, Any], *keys: str) -> str:
    present = [k for k in keys if k in body]
    if len(present) != 1:
        raise _BadRequest(f"exactly one of {', '.join(repr(k) for k in keys)} is required")
    return present[0]


class _Ops:
    """The blocking half of each route (run in a worker thread)."""

    def __init__(self, client: processfork.Client) -> None:
        self.c = client

    def snapshot(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = _one_of(body, "prompt_token_ids", "branch")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise _BadRequest("field 'name' must be a string")
        if key == "branch":
            snap = self.c.snapshot(_int(body, "branch"), name)
        else:
            tokens = _tokens(body)
            b = self.c.branch(tokens)
            try:
                if b.reused_tokens == 0:
                    raise processfork.NotFound(
                        "the daemon holds no whole page of KV for these tokens (has vLLM "
                        "served this prompt with the ProcessFork connector?)")
                snap = self.c.snapshot(b, name)
            finally:
                self.c.free(b)
        return 201, {"cid": snap.cid, "created": snap.created, "n_tokens": snap.n_tokens,
                     "n_pages": snap.n_pages, "name": name}

    def fork(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = _one_of(body, "cid", "branch")
        source: int | str = _int(body, "branch") if key == "branch" else body["cid"]
        if key == "cid" and (not isinstance(source, str) or not source):
            raise _BadRequest("field 'cid' must be a CID or ref name")
        if "n" not in body:
            raise _BadRequest("field 'n' is required")
        n = _int(body, "n")
        if not 1 <= n <= _MAX_FORK:
            raise _BadRequest(f"field 'n' must be in 1..{_MAX_FORK}")
        kids = self.c.fork(source, n)
        for k in kids:
            self.c.detach(k)
        return 201, {"branches": [k.id for k in kids],
                     "source": (kids[0].cid or None) if kids else None}

    def checkout(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not isinstance(body.get("cid"), str) or not body["cid"]:
            raise _BadRequest("field 'cid' (a CID or ref name) is required")
        b = self.c.checkout(body["cid"])
        try:
            self.c.commit(b)  # the snapshot's pages into the prefix index
            view = self.c.view(b, tokens=True)
            self.c.detach(b)
        except BaseException:
            self.c.free(b)
            raise
        return 201, {"branch": b.id, "cid": b.cid, "n_tokens": view.n_tokens,
                     "prompt_token_ids": list(view.tokens or [])}

    def merge(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for k in ("from", "into"):
            if k not in body:
                raise _BadRequest(f"field '{k}' is required")
        r = self.c.merge(_source(body["from"], "from"), _source(body["into"], "into"))
        self.c.detach(r.branch)
        return 201, {"outcome": "fast-forward" if r.fast_forward else "three-way",
                     "branch": r.branch.id, "cid": r.cid, "base": r.base or None,
                     "common_tokens": r.common_tokens,
                     "recompute_tokens": list(r.recompute_tokens)}

    def log(self, cid: str) -> tuple[int, dict[str, Any]]:
        return 200, {"entries": [dataclasses.asdict(e) for e in self.c.log(cid)]}

    def diff(self, a: int | str, b: int | str) -> tuple[int, dict[str, Any]]:
        return 200, dataclasses.asdict(self.c.diff(a, b))


def build_router(get_client: Callable[[], Optional[processfork.Client]],
                 on_lost: Optional[Callable[[processfork.Error], None]] = None) -> APIRouter:
    """The ``/v1/processfork`` routes over the session ``get_client`` returns (None:
    the daemon is unreachable -> 503). ``on_lost`` is called when a call finds the
    session dead (Unavailable / ProtocolError), e.g. to reconnect. Blocking daemon
    calls run in Starlette's thread pool; the client serializes them."""
    router = APIRouter(prefix=ROUTE_PREFIX, tags=["processfork"])

    async def run(op: str, *args: Any) -> JSONResponse:
        def call() -> JSONResponse:
            try:
                client = get_client()
                if client is None:
                    return _error(503, "unavailable", "the ProcessFork daemon is unreachable")
                status, answer = getattr(_Ops(client), op)(*args)
            except _BadRequest as e:
                return _error(400, "invalid_argument", str(e))
            except processfork.Error as e:
                if on_lost is not None and isinstance(
                        e, (processfork.Unavailable, processfork.ProtocolError)):
                    on_lost(e)
                return _from_error(e)
            return JSONResponse(answer, status_code=status)

        return await run_in_threadpool(call)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise _BadRequest(f"malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        return body

    def post(op: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> JSONResponse:
            try:
                body = await body_of(request)
            except _BadRequest as e:
                return _error(400, "invalid_argument", str(e))
            return await run(op, body)

        handler.__name__ = f"processfork_{op}"
        return handler

    for op in ("snapshot", "fork", "checkout", "merge"):
        router.add_api_route(f"/{op}", post(op), methods=["POST"], status_code=201,
                             name=f"processfork_{op}")

    @router.get("/log/{cid:path}", name="processfork_log")
    async def processfork_log(cid: str) -> JSONResponse:
        return await run("log", cid)

    @router.get("/diff", name="processfork_diff")
    async def processfork_diff(a: Optional[str] = None, b: Optional[str] = None) -> JSONResponse:
        try:
            sa, sb = _query_source(a, "a"), _query_source(b, "b")
        except _BadRequest as e:
            return _error(400, "invalid_argument", str(e))
        return await run("diff", sa, sb)

    return router
