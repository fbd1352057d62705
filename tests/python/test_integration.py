"""processfork._integration: the session, error map and routes the engine adapters share.

Engine-free (the adapters' own tests, test_vllm_adapter.py and test_sglang_adapter.py, run
them inside vLLM and SGLang); daemons are real (`processfork serve`, conftest.py).
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import pytest

import processfork
from conftest import start_daemon, stop_daemon
from processfork._integration import Session, session_lost
from processfork._integration.errors import HttpError, bad_request, http_error, too_large


@pytest.fixture
def pf():
    """A daemon of the test's own, in a directory a restarted one can reuse."""
    with tempfile.TemporaryDirectory(prefix="pfi-") as tmp:
        d = start_daemon(Path(tmp))
        d.where = Path(tmp)
        yield d
        if d.proc.poll() is None:
            stop_daemon(d)


def _restart(d):
    stop_daemon(d)
    (d.where / "ready").unlink(missing_ok=True)
    return start_daemon(d.where)


# ---- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,status,code", [
    (processfork.InvalidArgument, 400, "invalid_argument"),
    (processfork.Unsupported, 400, "unsupported"),
    (processfork.PermissionDenied, 401, "unauthorized"),
    (processfork.NotFound, 404, "not_found"),
    (processfork.Conflict, 409, "conflict"),
    (processfork.AlreadyExists, 409, "conflict"),
    (processfork.Unavailable, 503, "unavailable"),
    (processfork.OutOfMemory, 507, "out_of_memory"),
    (processfork.DataCorrupt, 500, "data_corrupt"),
    (processfork.SystemFailure, 500, "internal"),
    (processfork.ProtocolError, 500, "internal"),
    (processfork.DriverError, 500, "internal"),
    (processfork.InternalError, 500, "internal"),
    (processfork.Error, 500, "internal"),
])
def test_error_map(cls, status, code):
    e = http_error(cls("what happened"))
    assert (e.status, e.code, e.message) == (status, code, "what happened")
    assert e.body() == {"error": {"code": code, "message": "what happened"}}
    assert http_error(cls()).message  # never an empty message


def test_request_errors():
    assert bad_request("x").body() == {"error": {"code": "invalid_argument", "message": "x"}}
    assert (bad_request("x").status, too_large(10).status, too_large(10).code) == \
        (400, 413, "payload_too_large")
    assert isinstance(too_large(1), HttpError)


def test_session_lost():
    assert session_lost(processfork.Unavailable("gone"))
    assert session_lost(processfork.ProtocolError("out of step"))
    assert not session_lost(processfork.NotFound("x"))
    assert not session_lost(ValueError("x"))


# ---- session -----------------------------------------------------------------------------
def test_session_is_lazy_and_throttles_an_unreachable_daemon(tmp_path):
    s = Session(str(tmp_path / "nobody.sock"), 500, retry_interval_s=3600)
    assert s.generation == 0 and s.where.endswith("nobody.sock")
    with pytest.raises(processfork.Unavailable):
        s.client()                      # tried, failed
    t0 = time.monotonic()
    with pytest.raises(processfork.Unavailable, match="next reconnect attempt"):
        s.client()                      # within the wait: not tried
    assert s.get() is None and time.monotonic() - t0 < 1
    with pytest.raises(processfork.Unavailable):
        s.connect_now()                 # start-up ignores the wait, and still fails
    s.close()


def test_session_reconnects_after_a_drop(pf):
    s = Session(pf.socket, 2000, retry_interval_s=0)
    c1 = s.client()
    assert s.client() is c1 and s.get() is c1 and s.generation == 1
    s.drop(processfork.Unavailable("lost"))
    assert c1.closed
    c2 = s.client()
    assert c2 is not c1 and s.generation == 2
    s.drop(processfork.Unavailable("stale"), c1)  # a failure of a replaced client: no-op
    assert s.client() is c2 and not c2.closed
    s.drop()                                       # nothing held -> nothing happens
    s.drop()
    assert s.client() is not c2 and s.generation == 3
    s.close()


def test_session_keeps_a_client_that_reconnected_to_a_restarted_daemon(pf):
    s = Session(pf.socket, 2000, retry_interval_s=60)
    c = s.client()
    b = c.branch()
    d2 = _restart(pf)
    try:
        with pytest.raises(processfork.StaleHandle) as stale:
            s.client().free(b)            # the client reconnects; the old branch is refused
        assert not session_lost(stale.value)
        s.drop(stale.value)               # a stale handle is not a loss: no-op
        assert s.generation == 2 and c.generation == 1
        assert s.get() is c and not c.closed   # no retry wait
        assert c.stats().used_pages == 0
    finally:
        s.close()
        stop_daemon(d2)


def test_session_waits_after_a_drop_then_reconnects_to_a_restarted_daemon(pf):
    s = Session(pf.socket, 2000, retry_interval_s=0.5)
    b = s.client().branch()
    stop_daemon(pf)                       # gone, not back within the client's reconnect wait
    with pytest.raises(processfork.Error) as lost:
        s.client().free(b)
    assert session_lost(lost.value)
    s.drop(lost.value)
    assert s.get() is None                # within the wait
    (pf.where / "ready").unlink(missing_ok=True)
    d2 = start_daemon(pf.where)
    try:
        time.sleep(0.6)
        c = s.client()
        assert s.generation == 2 and c.stats().used_pages == 0
    finally:
        s.close()
        stop_daemon(d2)


def test_session_on_connect_refusal(pf):
    seen = []

    def check(c: processfork.Client) -> None:
        seen.append(c)
        if len(seen) < 3:
            raise ValueError("pool does not match")

    s = Session(pf.socket, 2000, retry_interval_s=3600, on_connect=check)
    with pytest.raises(ValueError, match="does not match"):
        s.connect_now()                   # start-up: the refusal is the caller's to raise
    assert seen[-1].closed and s.generation == 0
    with pytest.raises(processfork.Unavailable):
        s.client()                        # a refused pool waits like an unreachable one
    assert s.get() is None
    with pytest.raises(ValueError):
        s.connect_now()
    c = s.connect_now()                   # accepted
    assert c is seen[-1] and s.client() is c and s.generation == 1
    s.close()


def test_session_per_thread_and_close(pf):
    s = Session(pf.socket, 2000, retry_interval_s=0, per_thread=True)
    mine = s.client()
    theirs = []
    barrier = threading.Barrier(2)

    def other() -> None:
        theirs.append(s.client())
        barrier.wait()   # the main thread drops its client here
        barrier.wait()
        theirs.append(s.client())

    t = threading.Thread(target=other)
    t.start()
    barrier.wait()
    assert theirs[0] is not mine and s.client() is mine
    s.drop(processfork.Unavailable("lost"))   # this thread's client only
    barrier.wait()
    t.join()
    assert mine.closed and theirs[1] is theirs[0] and not theirs[0].closed
    again = s.client()
    assert again is not mine
    s.close()
    assert again.closed and theirs[0].closed
    with pytest.raises(processfork.Unavailable, match="closed"):
        s.client()
    assert s.get() is None
    s.close()  # idempotent


def test_shared_session_connects_once_for_all_threads(pf):
    s = Session(pf.socket, 2000, retry_interval_s=0)
    got = []
    threads = [threading.Thread(target=lambda: got.append(s.client())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(c is got[0] for c in got) and s.generation == 1
    s.close()


# ---- routes ------------------------------------------------------------------------------
class _Tokenizer:
    def encode(self, text: str) -> list:
        return [int(w) for w in text.split()]


def _app(session, **kw):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from processfork._integration.routes import build_router

    app = FastAPI()
    app.include_router(build_router("/x/processfork", lambda: session, tokens_field="ids", **kw))
    return TestClient(app)


def _err(r, status, code):
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"], r.text


def test_routes_validate_before_calling_the_daemon(tmp_path, monkeypatch):
    from processfork._integration import routes

    s = Session(str(tmp_path / "nobody.sock"), 500, retry_interval_s=0)
    http = _app(s)
    u = "/x/processfork"
    for path in ("snapshot", "fork", "checkout", "merge"):
        _err(http.post(f"{u}/{path}", content=b"{not json"), 400, "invalid_argument")
        _err(http.post(f"{u}/{path}", json=[1]), 400, "invalid_argument")
        _err(http.post(f"{u}/{path}", json={}), 400, "invalid_argument")
    _err(http.post(f"{u}/snapshot", json={"ids": [1, 2**32]}), 400, "invalid_argument")
    _err(http.post(f"{u}/snapshot", json={"text": "1 2"}), 400, "invalid_argument")  # no tokenizer
    _err(http.post(f"{u}/snapshot", json={"branch": -1}), 400, "invalid_argument")
    _err(http.post(f"{u}/snapshot", json={"ids": [1], "branch": 1}), 400, "invalid_argument")
    _err(http.post(f"{u}/fork", json={"cid": "x", "n": processfork.MAX_FORK + 1}), 400,
         "invalid_argument")
    _err(http.post(f"{u}/merge", json={"from": True, "into": "a"}), 400, "invalid_argument")
    _err(http.get(f"{u}/diff", params={"b": "x"}), 400, "invalid_argument")
    monkeypatch.setattr(routes, "MAX_BODY_BYTES", 16)
    _err(http.post(f"{u}/checkout", json={"cid": "a" * 32}), 413, "payload_too_large")
    monkeypatch.undo()
    # a valid request: the daemon is unreachable
    _err(http.post(f"{u}/checkout", json={"cid": "main"}), 503, "unavailable")
    _err(http.get(f"{u}/log/main"), 503, "unavailable")
    s.close()


def test_routes_against_a_daemon(pf):
    s = Session(pf.socket, 2000, retry_interval_s=0)
    http = _app(s, tokenizer=lambda: _Tokenizer(), not_cached_hint="store them first")
    u = "/x/processfork"
    with pf.connect() as c:
        page = c.pool().page_tokens
        tokens = list(range(10, 10 + 2 * page + 1))
        b = c.branch(tokens)
        c.append(b, tokens[b.reused_tokens:])
        c.commit(b)
        r = http.post(f"{u}/snapshot", json={"text": " ".join(map(str, tokens)), "name": "t"})
        assert r.status_code == 201, r.text
        snap = r.json()
        assert (snap["n_tokens"], snap["n_pages"], snap["requested_tokens"], snap["name"]) == \
            (2 * page, 2, len(tokens), "t")
        r = http.post(f"{u}/snapshot", json={"ids": [7] * page})
        _err(r, 404, "not_found")
        assert "store them first" in r.json()["error"]["message"]
        _err(http.post(f"{u}/snapshot", json={"branch": b.id}), 409, "conflict")  # not ours
        c.detach(b)   # ownerless: any session may snapshot it
        r = http.post(f"{u}/snapshot", json={"branch": b.id})
        assert r.status_code == 201 and r.json()["n_tokens"] >= 2 * page
        assert "requested_tokens" not in r.json()
        r = http.post(f"{u}/snapshot", json={"ids": tokens[:page + 1]})
        assert r.status_code == 201 and r.json()["n_tokens"] == page
        short = r.json()

        r = http.post(f"{u}/fork", json={"cid": snap["cid"], "n": 2})
        assert r.status_code == 201 and r.json()["source"] == snap["cid"]
        kids = r.json()["branches"]
        r = http.post(f"{u}/checkout", json={"cid": snap["cid"]})
        assert r.status_code == 201 and r.json()["ids"] == tokens[:2 * page]
        co = r.json()["branch"]
        r = http.post(f"{u}/merge", json={"from": snap["cid"], "into": short["cid"]})
        assert r.status_code == 201, r.text
        assert r.json()["outcome"] == "fast-forward" and r.json()["recompute_tokens"] == []
        mg = r.json()["branch"]
        r = http.get(f"{u}/log/{snap['cid']}")
        assert r.status_code == 200 and snap["cid"] in {e["cid"] for e in r.json()["entries"]}
        r = http.get(f"{u}/diff", params={"a": snap["cid"], "b": snap["cid"]})
        assert r.status_code == 200 and r.json()["common_tokens"] == 2 * page
        for k in kids + [co, mg, b.id]:
            c.free(k)

    # the daemon restarts: the session's client reconnects within the next call, which the
    # new daemon answers (it knows no snapshots: 404, not 503)
    d2 = _restart(pf)
    try:
        before = s.generation
        _err(http.get(f"{u}/log/{snap['cid']}"), 404, "not_found")
        assert s.generation == before + 1
    finally:
        stop_daemon(d2)
        s.close()


def test_routes_without_a_session_answer_503():
    def none() -> Session:
        raise processfork.Unavailable("no daemon for these routes")

    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from processfork._integration.routes import build_router

    app = FastAPI()
    app.include_router(build_router("/p", none, tokens_field="ids"))
    http = TestClient(app)
    r = http.post("/p/checkout", content=json.dumps({"cid": "main"}))
    _err(r, 503, "unavailable")
    assert "no daemon for these routes" in r.json()["error"]["message"]
