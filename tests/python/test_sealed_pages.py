"""Sealed pages are not writable (DESIGN §8) through the Python package, with real
processes and real mappings: page views of sealed or shared pages are read-only, kv_store
into them raises PermissionDenied and writes nothing (another process reads the original
bytes), and where the page size allows, a stray store through the mapping kills the
storing process with SIGSEGV."""
from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

import processfork
from conftest import daemon_in_tempdir

L, H, D, P = 2, 2, 64, 4  # fp32: 8 KiB pages, whole OS pages
GEOMETRY = f"layers={L},kv_heads={H},head_dim={D},dtype=fp32,page_tokens={P}"

# Run in another process: checks `cid` out and prints the SHA-256 of each of its pages.
READER = """
import hashlib, sys
import processfork
with processfork.connect(sys.argv[1]) as c:
    b = c.checkout(sys.argv[2])
    for p in c.view(b).pages:
        print(hashlib.sha256(c.page(p).tobytes()).hexdigest())
"""


@pytest.fixture(scope="module")
def sealed_daemon():
    with daemon_in_tempdir(GEOMETRY, prefix="pfsl-") as d:
        yield d


@pytest.fixture
def c(sealed_daemon):
    with sealed_daemon.connect() as client:
        yield client


def engine_layout(seed: int, tokens: int = 16):
    """An engine's per-layer K and V buffers [token, head, dim] filled from `seed`."""
    rng = np.random.default_rng(seed)
    k = [rng.standard_normal((tokens, H, D)).astype(np.float32) for _ in range(L)]
    v = [rng.standard_normal((tokens, H, D)).astype(np.float32) for _ in range(L)]
    return processfork.KVLayout.from_numpy(k, v, token_axis=0, head_axis=1), (k, v)


def digests(c, pages):
    return [hashlib.sha256(c.page(p).tobytes()).hexdigest() for p in pages]


def read_in_other_process(daemon, cid):
    out = subprocess.run([sys.executable, "-c", READER, daemon.socket, cid], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return out.split()


def test_views_of_sealed_pages_are_read_only_and_kv_store_refuses_them(sealed_daemon, c):
    b = c.branch()
    runs = c.append(b, range(P + 2))  # a full page and a half-full one
    pages = [r.page for r in runs]
    assert all(c.page_writable(p) for p in pages)
    view = c.page(pages[0])
    assert view.flags.writeable
    view[...] = 1.5  # the session's own exclusive page: writable
    layout, _ = engine_layout(1)
    c.kv_store(layout, [(r.page, r.first_slot, r.first_token, r.count) for r in runs])
    snap = c.snapshot(b)
    before = digests(c, pages)
    assert not any(c.page_writable(p) for p in pages)

    # Views made now are read-only: assignment raises, nothing changes.
    sealed_view = c.page(pages[0])
    assert not sealed_view.flags.writeable
    with pytest.raises(ValueError):
        sealed_view[0, 0, 0, 0, 0] = 9.0
    # The checkout's pages are the snapshot's, shared: read-only too, and kv_store into
    # one raises the package's error, naming the page, and writes nothing.
    co = c.checkout(snap.cid)
    assert c.view(co).pages == pages
    assert not c.page(pages[1]).flags.writeable
    other_layout, _ = engine_layout(2)
    with pytest.raises(processfork.PermissionDenied, match=f"page {pages[1]} "):
        c.kv_store(other_layout, [(pages[1], 2, 0, 2)])
    with pytest.raises(processfork.PermissionDenied):
        c.kv_store(other_layout, [(pages[0], 0, 0, P)])
    assert digests(c, pages) == before
    assert read_in_other_process(sealed_daemon, snap.cid) == before

    # Appending to the checkout copies the shared half-full page: the copy is writable.
    tail = c.append(co, [7])
    assert len(tail) == 1 and tail[0].page not in pages
    assert c.page_writable(tail[0].page) and c.page(tail[0].page).flags.writeable
    c.kv_store(other_layout, [(tail[0].page, tail[0].first_slot, 0, 1)])
    assert digests(c, pages) == before


def test_keyed_pages_writable_until_published(c):
    pages = c.alloc_pages(2)
    assert all(c.page_writable(p) for p in pages)
    c.page(pages[0])[...] = 2.0
    key = hashlib.sha256(b"sealed-pages-test").hexdigest()
    c.publish_pages([key], pages[:1])
    assert not c.page_writable(pages[0]) and not c.page(pages[0]).flags.writeable
    assert c.page_writable(pages[1])
    c.release_pages(pages[1:])
    assert not c.page_writable(pages[1])


def test_stray_store_into_sealed_page_kills_the_storing_process(c):
    b = c.branch()
    runs = c.append(b, range(P))
    page = runs[0].page
    if not c.page_guarded(page):
        pytest.skip(f"the mapping cannot protect {c.pool().page_bytes}-byte pages here (OS page "
                    f"{os.sysconf('SC_PAGESIZE')} bytes, or hugetlb chunks): only the API refuses")
    c.page(page)[...] = 3.0
    c.snapshot(b)
    before = c.page(page).tobytes()
    address = c.page_ptr(page) + 64
    pid = os.fork()
    if pid == 0:  # the child: a raw store past every Python check
        try:
            faulthandler.disable()  # pytest's traceback dump would only be noise here
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            ctypes.memset(address, 0x41, 8)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, status
    assert c.page(page).tobytes() == before
