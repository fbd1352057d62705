"""The one router factory for the ProcessFork routes an engine's HTTP server mounts.

:func:`build_router` makes a FastAPI ``APIRouter`` with, under its ``prefix``
(``/v1/processfork`` on vLLM, ``/processfork`` on SGLang):

===========================  =======================================================  ======
route                        body -> answer                                           status
===========================  =======================================================  ======
``POST {prefix}/snapshot``   ``{<tokens> | text | branch, name?}`` ->                  201
                             ``{cid, created, n_tokens, n_pages, name}``
                             (+ ``requested_tokens`` when snapshotting tokens)
``POST {prefix}/fork``       ``{cid | branch, n}`` -> ``{branches, source}``            201
``POST {prefix}/checkout``   ``{cid}`` -> ``{branch, cid, n_tokens, <tokens>}``         201
``POST {prefix}/merge``      ``{from, into}`` -> ``{outcome, branch, cid, base,``       201
                             ``common_tokens, recompute_tokens}``
``GET {prefix}/log/{cid}``   -> ``{entries}``                                          200
``GET {prefix}/diff?a=&b=``  -> ``{common_tokens, shared_pages, ...}``                  200
===========================  =======================================================  ======

``<tokens>`` is the engine's name for a prompt's token ids (``tokens_field``:
``prompt_token_ids`` for vLLM, ``input_ids`` for SGLang). A snapshot of tokens opens a
branch on them, which reuses the whole pages the engine's adapter stored in the daemon's
prefix index (no copy), snapshots it and frees it; nothing stored is a 404. ``text`` is
tokenized with the server's tokenizer (``tokenizer().encode(text)``) when the router has
one, else it is a 400. Branches the routes create (fork children, checkout and merge
results) are detached, as the daemon does for HTTP-created branches: they live until
deleted through the daemon. Checkout also commits the branch, so the snapshot's pages are
(again) in the prefix index: the engine's next request with those tokens loads that KV.

Errors: :mod:`processfork._integration.errors`. Requests are validated before any daemon
call, so a bad request is a 400 even without a daemon, and changes nothing. Daemon calls
block, so they run in Starlette's thread pool, never on the server's event loop, on the
client of the :class:`~processfork._integration.session.Session` that ``session`` returns
(a session that died is dropped and reconnected by a later request).
"""
from __future__ import annotations

import dataclasses

import json
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import processfork
from processfork._integration.errors import HttpError, bad_request, http_error, too_large
from processfork._integration.session import Session, session_lost

__all__ = ["MAX_BODY_BYTES", "build_router"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a 1M-token prompt as JSON fits
_UINT32 = 1 << 32

Body = Dict[str, Any]
Answer = Tuple[int, Dict[str, Any]]
Source = Union[str, int]


# ---- request validation (on the event loop; raises HttpError) ----------------------------
def _one_of(body: Body, *keys: str) -> str:
    present = [k for k in keys if k in body]
    if len(present) != 1:
        raise bad_request("give exactly one of " + " or ".join(repr(k) for k in keys))
    return present[0]


def _string(body: Body, key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise bad_request(f"field '{key}' must be a non-empty string (a CID or ref name)")
    return v


def _branch_id(body: Body, key: str) -> int:
    v = body.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise bad_request(f"field '{key}' must be a branch id (int)")
    return v


def _source(body: Body, key: str) -> Source:
    """A CID or ref name (str) or a branch id (int)."""
    v = body.get(key)
    if (isinstance(v, str) and v) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise bad_request(f"field '{key}' must be a CID or ref name (string) or a branch id (int)")


def _query_source(value: Optional[str], key: str) -> Source:
    if not value:
        raise bad_request(f"query parameter '{key}' is required")
    return int(value) if value.isdecimal() else value


def _n(body: Body) -> int:
    n = body.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= processfork.MAX_FORK:
        raise bad_request(f"field 'n' must be an integer in 1..{processfork.MAX_FORK}")
    return n


def _name(body: Body) -> Optional[str]:
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise bad_request("field 'name' must be a string")
    return name


def _token_ids(body: Body, key: str) -> List[int]:
    ids = body[key]
    if not isinstance(ids, list) or not ids or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _UINT32 for t in ids):
        raise bad_request(f"field '{key}' must be a non-empty list of token ids (uint32)")
    return ids


def _text_tokens(body: Body, tokenizer: Optional[Callable[[], Any]], tokens_field: str) -> List[int]:
    text = body["text"]
    if not isinstance(text, str) or not text:
        raise bad_request("field 'text' must be a non-empty string")
    tok = tokenizer() if tokenizer is not None else None
    if tok is None:
        raise bad_request(f"this server has no tokenizer for the route; send '{tokens_field}'")
    ids = list(tok.encode(text))
    if not ids:
        raise bad_request("'text' tokenizes to no tokens")
    return ids


# ---- operations (in a worker thread, on the session's client) ----------------------------
def _snapshot_tokens(c: processfork.Client, tokens: List[int], name: Optional[str],
                     hint: str, namespace: Optional[bytes]) -> Answer:
    b = c.branch(tokens, namespace=namespace)
    try:
        if b.reused_tokens == 0:
            raise processfork.NotFound(
                f"no cached KV for these tokens: none of their whole pages "
                f"({c.pool().page_tokens} tokens each) is in the daemon's prefix index; {hint}")
        s = c.snapshot(b, name)
    finally:
        c.free(b)
    return 201, {"cid": s.cid, "created": s.created, "n_tokens": s.n_tokens,
                 "n_pages": s.n_pages, "name": name, "requested_tokens": len(tokens)}


def _snapshot_branch(c: processfork.Client, branch: int, name: Optional[str]) -> Answer:
    s = c.snapshot(branch, name)
    return 201, {"cid": s.cid, "created": s.created, "n_tokens": s.n_tokens,
                 "n_pages": s.n_pages, "name": name}


def _fork(c: processfork.Client, source: Source, n: int) -> Answer:
    kids = c.fork(source, n)
    for k in kids:
        c.detach(k)
    return 201, {"branches": [k.id for k in kids],
                 "source": (kids[0].cid or None) if kids else None}


def _checkout(c: processfork.Client, cid: str, tokens_field: str) -> Answer:
    b = c.checkout(cid)
    try:
        c.commit(b)  # the snapshot's full pages (back) into the prefix index, by key
        view = c.view(b, tokens=True)
        c.detach(b)
    except BaseException:
        c.free(b)
        raise
    return 201, {"branch": b.id, "cid": b.cid, "n_tokens": view.n_tokens,
                 tokens_field: list(view.tokens or [])}


def _merge(c: processfork.Client, from_: Source, into: Source) -> Answer:
    r = c.merge(from_, into)
    c.detach(r.branch)
    return 201, {"outcome": "fast-forward" if r.fast_forward else "three-way",
                 "branch": r.branch.id, "cid": r.cid, "base": r.base or None,
                 "common_tokens": r.common_tokens,
                 "recompute_tokens": list(r.recompute_tokens)}


def _log(c: processfork.Client, cid: str) -> Answer:
    return 200, {"entries": [dataclasses.asdict(e) for e in c.log(cid)]}


def _diff(c: processfork.Client, a: Source, b: Source) -> Answer:
    return 200, dataclasses.asdict(c.diff(a, b))


# ---- the router --------------------------------------------------------------------------
def _respond(e: HttpError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def build_router(prefix: str, session: Callable[[], Session], *, tokens_field: str,
                 tokenizer: Optional[Callable[[], Any]] = None,
                 not_cached_hint: str = "serve the prompt through the engine first",
                 namespace: Callable[[], Optional[bytes]] = lambda: None) -> APIRouter:
    """The routes of the module docstring under ``prefix``.

    Args:
        prefix: the routes' common path, e.g. ``"/v1/processfork"``.
        session: returns the session to call the daemon with, at each request (raises
            ``processfork.Unavailable`` -> 503 when there is none to use).
        tokens_field: the engine's name for token ids in bodies and answers.
        tokenizer: returns the server's tokenizer (or None) for ``text`` bodies.
        not_cached_hint: the end of a 404 for tokens nothing is stored for.
        namespace: returns the prefix-index namespace in which a snapshot of token ids
            looks them up: the engine's (docs/python.md "Namespaces"); None: the default.
    """
    router = APIRouter(prefix=prefix, tags=["processfork"])

    def call(op: Callable[..., Answer], args: tuple) -> Answer:
        s = session()
        c = s.client()
        try:
            return op(c, *args)
        except processfork.Error as e:
            if session_lost(e):
                s.drop(e, c)
            raise

    async def run(request: Request, op: Callable[..., Answer], args: tuple) -> JSONResponse:
        try:
            status, answer = await run_in_threadpool(call, op, args)
        except processfork.Error as e:
            err = http_error(e)
            if err.status == 500:
                logger.exception("processfork route %s failed", request.url.path)
            return _respond(err)
        return JSONResponse(answer, status_code=status)

    def post(name: str, parse: Callable[[Body], Tuple[Callable[..., Answer], tuple]]) -> None:
        async def handler(request: Request) -> JSONResponse:
            raw = await request.body()
            try:
                if len(raw) > MAX_BODY_BYTES:
                    raise too_large(MAX_BODY_BYTES)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError as e:
                    raise bad_request(f"malformed JSON: {e}") from None
                if not isinstance(body, dict):
                    raise bad_request("the body must be a JSON object")
                op, args = parse(body)
            except HttpError as e:
                return _respond(e)
            return await run(request, op, args)

        handler.__name__ = f"processfork_{name}"
        router.add_api_route(f"/{name}", handler, methods=["POST"], status_code=201,
                             name=f"processfork_{name}")

    def snapshot(body: Body) -> Tuple[Callable[..., Answer], tuple]:
        key = _one_of(body, tokens_field, "text", "branch")
        name = _name(body)
        if key == "branch":
            return _snapshot_branch, (_branch_id(body, "branch"), name)
        tokens = (_token_ids(body, key) if key == tokens_field
                  else _text_tokens(body, tokenizer, tokens_field))
        return _snapshot_tokens, (tokens, name, not_cached_hint, namespace())

    def fork(body: Body) -> Tuple[Callable[..., Answer], tuple]:
        key = _one_of(body, "cid", "branch")
        source = _string(body, "cid") if key == "cid" else _branch_id(body, "branch")
        return _fork, (source, _n(body))

    post("snapshot", snapshot)
    post("fork", fork)
    post("checkout", lambda body: (_checkout, (_string(body, "cid"), tokens_field)))
    post("merge", lambda body: (_merge, (_source(body, "from"), _source(body, "into"))))

    @router.get("/log/{cid:path}", name="processfork_log")
    async def processfork_log(request: Request, cid: str) -> JSONResponse:
        return await run(request, _log, (cid,))

    @router.get("/diff", name="processfork_diff")
    async def processfork_diff(request: Request, a: Optional[str] = None,
                               b: Optional[str] = None) -> JSONResponse:
        try:
            args = (_query_source(a, "a"), _query_source(b, "b"))
        except HttpError as e:
            return _respond(e)
        return await run(request, _diff, args)

    return router
