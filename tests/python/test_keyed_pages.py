"""Keyed pages (docs/python.md "Keyed pages") against real daemons.

Keys are computed here with hashlib exactly as DESIGN §4 (and SGLang HiCache's
``get_hash_str``) define them; the tests prove the daemon agrees: pages published under
those keys are reused by ``branch(tokens)``, and pages committed by a branch are found
by those keys. Another process reads published bytes through its own mapping; holds block
eviction and end with the session (also when the process is killed); every malformed
argument raises InvalidArgument before any round trip, and refused requests change nothing.
"""
from __future__ import annotations

import hashlib
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import processfork
from conftest import start_daemon, stop_daemon

CHILD = Path(__file__).with_name("_keyed_child.py")


def page_key(tokens: list[int], parent: str | None) -> str:
    """DESIGN §4: SHA-256(parent key bytes || token ids as uint32 little-endian)."""
    h = hashlib.sha256()
    if parent is not None:
        h.update(bytes.fromhex(parent))
    h.update(struct.pack(f"<{len(tokens)}I", *tokens))
    return h.hexdigest()


def chain_keys(tokens: list[int], page_tokens: int, parent: str | None = None) -> list[str]:
    keys = []
    for i in range(len(tokens) // page_tokens):
        parent = page_key(tokens[i * page_tokens:(i + 1) * page_tokens], parent)
        keys.append(parent)
    return keys


def fill(c: processfork.Client, page: int, seed: int) -> np.ndarray:
    """Writes a seed-determined pattern into a page through this process's view."""
    info = c.pool()
    data = np.random.default_rng(seed).integers(0, 60000, size=info.page_shape)
    view = c.page(page)
    view[...] = data.astype(info.numpy_dtype)
    return view.copy()


def eventually(pred, timeout: float = 10.0) -> bool:
    """The daemon ends a lease when it sees the connection close, asynchronously."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def fresh(private_daemon):
    """A client of a daemon of this test's own (the prefix index starts empty)."""
    with private_daemon.connect() as c:
        yield c


def test_hashlib_keys_equal_the_daemons(fresh):
    c = fresh
    pt = c.pool().page_tokens
    tokens = list(range(500, 500 + 3 * pt))
    keys = chain_keys(tokens, pt)
    pages = c.alloc_pages(3)
    assert len(set(pages)) == 3
    written = [fill(c, p, seed=i) for i, p in enumerate(pages)]
    assert c.publish_pages(keys, pages) == 3

    # A page published under the key of tokens T is reused by branch(T).
    extra = [7, 8, 9]
    b = c.branch(tokens + extra)
    assert b.reused_tokens == 3 * pt
    v = c.view(b, tokens=True)
    assert v.pages == pages
    assert v.tokens == tokens
    for p, want in zip(v.pages, written):
        np.testing.assert_array_equal(c.page(p), want)
    # ... snapshotted with the right tokens, and forked like any other branch.
    c.append(b, extra)
    snap = c.snapshot(b)
    assert c.manifest(snap.cid)["tokens"] == tokens + extra
    kids = c.fork(snap.cid, 2)
    assert all(c.view(k).pages[:3] == pages for k in kids)

    # The other direction: pages a branch commits are found by the hashlib keys.
    other = list(range(9000, 9000 + 2 * pt))
    ob = c.branch()
    c.append(ob, other)
    c.commit(ob)
    assert c.lookup_keys(chain_keys(other, pt), hold=False) == c.view(ob).pages


def test_publish_in_pieces_chains_through_parent_key(fresh):
    c = fresh
    pt = c.pool().page_tokens
    tokens = list(range(1, 1 + 4 * pt))
    keys = chain_keys(tokens, pt)
    pages = c.alloc_pages(4)
    assert c.publish_pages(keys[:2], pages[:2]) == 2
    assert c.publish_pages(keys[2:], pages[2:], parent_key=keys[1]) == 2
    assert c.lookup_keys(keys, hold=False) == pages
    assert c.branch(tokens).reused_tokens == 4 * pt
    # The longest LEADING run only.
    assert c.lookup_keys([keys[0], page_key([1] * pt, None), keys[2]], hold=False) == [pages[0]]
    assert c.lookup_keys([], hold=False) == []


def test_existing_key_keeps_its_page(fresh):
    c = fresh
    pt = c.pool().page_tokens
    keys = chain_keys(list(range(3 * pt)), pt)
    first = c.alloc_pages(3)
    assert c.publish_pages(keys, first) == 3
    used = c.stats().used_pages
    second = c.alloc_pages(3)
    assert c.stats().used_pages == used + 3
    assert c.publish_pages(keys, second) == 0
    assert c.stats().used_pages == used  # the new pages were released
    assert c.lookup_keys(keys, hold=False) == first


def test_another_process_reads_published_bytes(fresh, private_daemon):
    c = fresh
    pt = c.pool().page_tokens
    keys = chain_keys(list(range(40, 40 + 2 * pt)), pt)
    pages = c.alloc_pages(2)
    digests = [hashlib.sha256(fill(c, p, seed=10 + i).tobytes()).hexdigest()
               for i, p in enumerate(pages)]
    c.publish_pages(keys, pages)
    out = subprocess.run([sys.executable, str(CHILD), private_daemon.socket, "read", *keys],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split("\n")
    seen = [line.split() for line in out if line.startswith("PAGE")]
    assert [int(s[1]) for s in seen] == pages
    assert [s[2] for s in seen] == digests
    assert "DONE" in out


def test_holds_block_eviction_and_end_with_the_session(fresh, private_daemon):
    c = fresh
    pt = c.pool().page_tokens
    keys = chain_keys(list(range(3 * pt)), pt)
    c.publish_pages(keys, c.alloc_pages(3))
    with private_daemon.connect() as reader:
        held = reader.lookup_keys(keys)  # hold=True by default
        assert len(held) == 3
        assert c.gc(drop_cache=True).evicted_pages == 0
        assert c.lookup_keys(keys, hold=False) == held
        reader.release_pages(held[2:])
        assert c.gc(drop_cache=True).evicted_pages == 1  # only the released leaf
        # close() ends the remaining holds
    assert eventually(lambda: c.stats().cached_pages == 2)
    assert c.gc(drop_cache=True).evicted_pages == 2
    assert c.stats().used_pages == 0


def test_killed_process_leaks_no_hold(fresh, private_daemon):
    c = fresh
    pt = c.pool().page_tokens
    keys = chain_keys(list(range(100, 100 + 2 * pt)), pt)
    c.publish_pages(keys, c.alloc_pages(2))
    child = subprocess.Popen([sys.executable, str(CHILD), private_daemon.socket, "hold", *keys],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["READY", "4"]
        assert c.stats().used_pages == 4
        assert c.gc(drop_cache=True).evicted_pages == 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert eventually(lambda: c.stats().used_pages == 2)
    assert c.stats().cached_pages == 2
    assert c.gc(drop_cache=True).evicted_pages == 2


def test_out_of_pages_allocates_nothing():
    with tempfile.TemporaryDirectory(prefix="pfpy-") as tmp:
        d = start_daemon(Path(tmp), capacity="2MiB", chunk="2MiB")
        try:
            with d.connect() as c:
                cap = c.pool().capacity_pages
                got = c.alloc_pages(cap - 1)
                with pytest.raises(processfork.OutOfMemory):
                    c.alloc_pages(2)
                assert c.stats().used_pages == cap - 1
                c.release_pages(got)
                assert c.stats().used_pages == 0
        finally:
            stop_daemon(d)


BAD_KEYS = [
    ["A" * 64],            # uppercase
    ["a" * 63],            # short
    ["a" * 65],            # long
    ["g" * 64],            # not hex
    [" " + "a" * 63],      # whitespace (bytes.fromhex would accept it)
    [b"a" * 32],           # bytes, not str
    [None],
    "a" * 64,              # a single str, not a sequence of keys
]


@pytest.mark.parametrize("keys", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_malformed_keys_raise_before_any_round_trip(daemon, keys):
    c = daemon.connect()
    c.close()  # a round trip would raise Unavailable: these must not get that far
    with pytest.raises(processfork.InvalidArgument):
        c.lookup_keys(keys)
    with pytest.raises(processfork.InvalidArgument):
        c.publish_pages(keys, [0] * (len(keys) if isinstance(keys, list) else 1))


def test_bad_arguments_raise_before_any_round_trip(daemon):
    c = daemon.connect()
    c.close()
    k = "ab" * 32
    for call in (lambda: c.publish_pages([k, k[::-1]], [1]),           # more keys than pages
                 lambda: c.publish_pages([k], [1, 2]),                 # more pages than keys
                 lambda: c.publish_pages([k], [-1]),
                 lambda: c.publish_pages([k], [True]),
                 lambda: c.publish_pages([k], [1], parent_key="xyz"),
                 lambda: c.release_pages([2**32]),
                 lambda: c.alloc_pages(-1),
                 lambda: c.alloc_pages(True),
                 lambda: c.alloc_pages(1.0),
                 lambda: c.lookup_keys([k], hold=1)):
        with pytest.raises(processfork.InvalidArgument):
            call()


def test_refused_requests_change_nothing(fresh, private_daemon):
    c = fresh
    pt = c.pool().page_tokens
    keys = chain_keys(list(range(2 * pt)), pt)
    pages = c.alloc_pages(2)
    with private_daemon.connect() as other:
        foreign = other.alloc_pages(1)
        before = c.stats()
        with pytest.raises(processfork.InvalidArgument, match="not held"):
            c.publish_pages(keys[:1], foreign)                  # another session's page
        with pytest.raises(processfork.InvalidArgument):
            c.publish_pages(keys, [pages[0], pages[0]])          # a page twice
        with pytest.raises(processfork.InvalidArgument):
            c.publish_pages([keys[0], keys[0]], pages)           # a key twice
        with pytest.raises(processfork.InvalidArgument):
            c.release_pages(foreign)
        with pytest.raises(processfork.InvalidArgument):
            c.release_pages([pages[0], pages[0]])                # held once, released twice
        assert c.stats() == before
        assert c.lookup_keys(keys, hold=False) == []
        assert c.publish_pages(keys, pages) == 2
        with pytest.raises(processfork.InvalidArgument):
            c.publish_pages(keys, pages)                         # double publish
        held = c.lookup_keys(keys)
        with pytest.raises(processfork.InvalidArgument, match="sealed"):
            c.publish_pages([page_key([5] * pt, None)], held[:1])  # a looked-up page
        c.release_pages(held)
        assert c.lookup_keys(keys, hold=False) == pages
