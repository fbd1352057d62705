"""Every call of the processfork package against a real daemon (docs/python.md)."""
from __future__ import annotations

import numpy as np
import pytest

import processfork
from processfork import Branch


def toks(n: int, start: int = 1) -> list[int]:
    return list(range(start, start + n))


def test_module_metadata():
    assert processfork.__version__
    assert processfork.MAX_FORK >= 1
    assert issubclass(processfork.NotFound, processfork.Error)


def test_pool_info_stats_health(client):
    info = client.pool()
    assert info.backend == "host" and info.device == "host" and not info.device_memory
    assert info.page_tokens > 0 and info.layers > 0
    itemsize = info.numpy_dtype.itemsize
    assert info.page_bytes == int(np.prod(info.page_shape)) * itemsize
    assert info.capacity_bytes >= 64 << 20 or info.capacity_pages > 0
    assert info.lease > 0 and info.daemon_pid > 0
    s = client.stats()
    assert s.capacity_pages >= s.used_pages and s.page_bytes == info.page_bytes
    assert client.health()["status"]
    assert isinstance(client.pool_json(), dict)
    m = client.mapping()
    assert m["attached"] and m["base"] != 0
    client.attach()
    assert "lease=" in repr(client)


def test_branch_append_view_commit_truncate_free(client):
    pt = client.pool().page_tokens
    n = 2 * pt + 3
    b = client.branch()
    assert isinstance(b, Branch) and b.id > 0 and b.n_tokens == 0 and b.reused_tokens == 0
    runs = client.append(b, toks(n))
    assert sum(r.count for r in runs) == n
    assert [r.first_token for r in runs] == list(np.cumsum([0] + [r.count for r in runs[:-1]]))
    assert all(0 <= r.first_slot < pt and r.first_slot + r.count <= pt for r in runs)
    v = client.view(b, tokens=True)
    assert v.id == b.id and v.n_tokens == n and v.n_pages == 3 and v.tokens == toks(n)
    assert v.owner == client.pool().lease
    assert v.fill_in_last_page == 3
    assert set(v.pages) == {r.page for r in runs}
    more = client.append_ex(b.id, np.arange(5, dtype=np.uint32))  # int ids and arrays work
    assert more.first_token == n and sum(r.count for r in more.runs) == 5
    client.commit(b)
    client.truncate(b, pt)
    assert client.view(b).n_tokens == pt
    assert any(x.branch == b.id and x.owner == client.pool().lease for x in client.branches())
    client.free(b)
    with pytest.raises(processfork.NotFound):
        client.view(b)


def test_view_wait_pages_and_ready_pages(client):
    """ABI 1.6 / protocol 3.4: view(b, wait_pages=k) returns once the first k pages are
    readable and says how many are (ready_pages). Appended branches and checkouts of
    resident snapshots have every page readable: any wait answers the same page ids as a
    plain view, with ready_pages == n_pages."""
    assert client.pool().protocol >= (3, 4)
    pt = client.pool().page_tokens
    b = client.branch()
    client.append(b, toks(2 * pt + 1, start=40))
    full = client.view(b, tokens=True)
    assert full.n_pages == 3 and full.ready_pages == 3
    co = client.checkout(client.snapshot(b).cid)
    for branch in (b, co):
        for wait in (0, 1, 3, 4, 2**32, 2**64 - 1, np.uint64(2), None):
            v = client.view(branch, tokens=True, wait_pages=wait)
            assert v.ready_pages == v.n_pages == 3, wait
            assert v.pages == full.pages and v.tokens == full.tokens == toks(2 * pt + 1, 40)
    assert client.view(b, wait_pages=0).tokens is None
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(processfork.InvalidArgument):
            client.view(b, wait_pages=bad)  # type: ignore[arg-type]
    with pytest.raises(processfork.NotFound):
        client.view(987654321, wait_pages=0)
    # Built by hand (as before 1.6): ready_pages is optional and last.
    manual = processfork.BranchView(1, 0, 0, 0, 0, [])
    assert manual.ready_pages is None and manual.tokens is None


def test_prefix_reuse(client):
    pt = client.pool().page_tokens
    prompt = toks(2 * pt + 1, start=5000)
    a = client.branch()
    client.append(a, prompt)
    client.commit(a)
    b = client.branch(prompt)
    assert b.reused_tokens == 2 * pt and b.n_tokens == 2 * pt
    assert client.view(b).pages == client.view(a).pages[:2]
    client.append(b, prompt[b.reused_tokens:])
    assert client.view(b).n_tokens == len(prompt)


def test_snapshot_fork_checkout_log_diff_merge(client):
    pt = client.pool().page_tokens
    base = client.branch()
    client.append(base, toks(pt + 2, start=7000))
    snap = client.snapshot(base, name="py-base")
    assert snap.cid.startswith("sha256:") and snap.n_tokens == pt + 2 and snap.n_pages == 2
    assert snap.created
    again = client.snapshot(base)
    assert again.cid == snap.cid and not again.created
    assert client.ref_get("py-base") == snap.cid  # the snapshot's name is a ref

    kids = client.fork(snap.cid, 3)
    assert len(kids) == 3 and len({k.id for k in kids}) == 3
    assert all(k.n_tokens == pt + 2 and k.cid == snap.cid for k in kids)
    from_branch = client.fork(base, 1)
    assert from_branch[0].n_tokens == pt + 2 and from_branch[0].cid == ""
    via_ref = client.fork("py-base", 1)
    assert via_ref[0].cid == snap.cid

    co = client.checkout("py-base")
    assert co.cid == snap.cid and co.n_tokens == pt + 2
    assert client.view(co).pages == client.view(base).pages  # shared, no copy

    # two children diverge; snapshot both; merge one into the other
    client.append(kids[0], toks(3, start=9000))
    client.append(kids[1], toks(4, start=9100))
    s0 = client.snapshot(kids[0])
    s1 = client.snapshot(kids[1])
    log = client.log(s0.cid)
    assert log[0].cid == s0.cid and any(e.cid == snap.cid for e in log)
    assert log[0].parents == [snap.cid] and log[0].n_tokens == pt + 5 and log[0].known
    d = client.diff(kids[0], kids[1])
    assert d.common_tokens == pt + 2 and isinstance(d.shared_pages, list)
    assert client.diff(s0.cid, kids[0]).common_tokens == pt + 5
    m = client.merge(s1.cid, s0.cid)
    assert isinstance(m.branch, Branch) and m.cid.startswith("sha256:")
    assert m.base == snap.cid and not m.fast_forward
    assert m.common_tokens == pt + 2
    assert client.view(m.branch).n_tokens + len(m.recompute_tokens) >= pt + 2
    ff = client.merge(s0.cid, snap.cid)  # into an ancestor: fast-forward
    assert ff.fast_forward and ff.cid == s0.cid and ff.recompute_tokens == []

    man = client.manifest(snap.cid)
    assert isinstance(man, dict)
    assert any(e.cid == snap.cid and e.n_tokens == snap.n_tokens for e in client.snapshots())


def test_snapshot_name_is_a_ref_that_moves(client):
    """A named snapshot sets the ref ``name`` (checkout/fork take it); the next snapshot
    under that name moves it, git-branch-like; the old snapshot stays pinned until unpinned,
    which the ref blocks while it names it. A name that is not a ref name is refused."""
    b = client.branch()
    client.append(b, toks(3, start=600))
    s1 = client.snapshot(b, name="py-moving")
    assert client.ref_get("py-moving") == s1.cid
    assert client.checkout("py-moving").cid == s1.cid
    with pytest.raises(processfork.Conflict):
        client.unpin(s1.cid)
    client.append(b, toks(2, start=700))
    s2 = client.snapshot(b, name="py-moving")
    assert s2.cid != s1.cid and client.ref_get("py-moving") == s2.cid
    assert [k.cid for k in client.fork("py-moving", 2)] == [s2.cid, s2.cid]
    client.unpin(s1.cid)  # no ref names it any more
    for bad in ("has space", "-dash", "x" * 256):
        with pytest.raises(processfork.InvalidArgument, match="ref name"):
            client.snapshot(b, name=bad)
    assert client.ref_get("py-moving") == s2.cid
    client.ref_delete("py-moving")
    client.unpin(s2.cid)


def test_refs_unpin_gc(client):
    b = client.branch()
    client.append(b, toks(4, start=300))
    s = client.snapshot(b)
    client.ref_set("py-ref", s.cid)
    assert client.ref_get("py-ref") == s.cid
    client.ref_set("py-alias", "py-ref")
    assert client.ref_get("py-alias") == s.cid
    assert processfork.RefEntry("py-ref", s.cid) in client.refs()
    with pytest.raises(processfork.Conflict):
        client.unpin(s.cid)  # a ref names it
    client.ref_delete("py-ref")
    client.ref_delete("py-alias")
    with pytest.raises(processfork.NotFound):
        client.ref_get("py-ref")
    client.unpin(s.cid)
    client.free(b)
    g = client.gc(drop_cache=True)
    assert g.evicted_pages >= 0 and g.released_chunks >= 0
    client.gc()


def test_detach_outlives_connection(daemon):
    with daemon.connect() as a:
        b = a.branch()
        a.append(b, toks(3))
        a.detach(b)
    with daemon.connect() as c:
        v = c.view(b)
        assert v.owner == 0 and v.n_tokens == 3
        c.free(b)
        with pytest.raises(processfork.NotFound):
            c.view(b)


def test_close_frees_branches(daemon):
    with daemon.connect() as a:
        b = a.branch()
    assert a.closed and repr(a) == "Client(closed)"
    with pytest.raises(processfork.Unavailable):
        a.branch()
    with daemon.connect() as c:
        with pytest.raises(processfork.NotFound):
            c.view(b)


def test_errors(daemon, client):
    with pytest.raises(processfork.NotFound) as e:
        client.view(987654321)
    assert e.value.code == 2 and e.value.code_name == "PF_NOT_FOUND" and e.value.message
    assert isinstance(e.value, LookupError)

    b = client.branch()
    client.append(b, toks(2))
    with pytest.raises(processfork.InvalidArgument) as e:
        client.fork(b, 0)
    assert e.value.code == 1 and e.value.code_name == "PF_INVALID_ARGUMENT"
    with pytest.raises(processfork.InvalidArgument):
        client.fork(b, processfork.MAX_FORK + 1)
    with pytest.raises(processfork.InvalidArgument):
        client.truncate(b, 100)  # longer than the branch

    with daemon.connect() as other:
        with pytest.raises(processfork.Conflict) as e:
            other.append(b, toks(1))
        assert e.value.code == 10 and e.value.code_name == "PF_CONFLICT"
        with pytest.raises(processfork.Conflict):
            other.free(b)

    with pytest.raises(processfork.NotFound):
        client.checkout("no-such-ref")
    with pytest.raises(processfork.NotFound):
        client.fork("sha256:" + "0" * 64, 1)
    with pytest.raises(TypeError):
        client.view("not a branch")  # type: ignore[arg-type]
    with pytest.raises(processfork.Unavailable) as e:
        processfork.connect("/nonexistent/pf.sock", timeout_ms=500)
    assert e.value.code == 5
    # the base class catches all of them
    with pytest.raises(processfork.Error):
        client.free(987654321)


def test_out_of_memory(private_daemon):
    with private_daemon.connect() as c:
        per_call = 1024 * c.pool().page_tokens
        b = c.branch()
        with pytest.raises(processfork.OutOfMemory) as e:
            for _ in range(c.pool().capacity_pages // 1024 + 1):
                c.append(b, np.arange(per_call, dtype=np.uint32))
        assert e.value.code == 4 and e.value.code_name == "PF_OUT_OF_MEMORY"
        assert c.stats().free_pages == 0
        c.free(b)
        assert c.stats().free_pages == c.pool().capacity_pages
