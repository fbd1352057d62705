"""Page views: NumPy arrays and DLPack over the mapped pool, shared across processes."""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import processfork

sys.path.insert(0, str(Path(__file__).parent))
from _writer_child import pattern  # noqa: E402


def test_page_view_shape_dtype_zero_copy(client):
    info = client.pool()
    b = client.branch()
    runs = client.append(b, range(info.page_tokens + 1))
    p = runs[0].page
    a = client.page(p)
    assert isinstance(a, np.ndarray)
    assert a.shape == info.page_shape and a.dtype == info.numpy_dtype
    assert a.nbytes == info.page_bytes and a.flags.writeable and a.flags.c_contiguous
    assert a.ctypes.data == client.page_ptr(p) == client.mapping()["base"] + p * info.page_bytes
    a[...] = 0
    a[1, 0, 2, 0, :] = 7  # layer 1, K, slot 2, head 0
    # the same bytes through the raw pointer (docs: slot s of layer l, half h at
    # ((l*2+h)*page_tokens+s)*kv_heads*head_dim elements)
    row = info.kv_heads * info.head_dim
    off = ((1 * 2 + 0) * info.page_tokens + 2) * row * a.itemsize
    raw = (ctypes.c_char * a.itemsize).from_address(client.page_ptr(p) + off).raw
    assert np.frombuffer(raw, dtype=a.dtype)[0] == 7
    # a second view of the same page sees it; the array keeps the client object alive
    assert client.page(p)[1, 0, 2, 0, 0] == 7


def test_page_dlpack_cpu(client):
    info = client.pool()
    b = client.branch()
    runs = client.append(b, range(3))
    v = client.page_view(runs[0].page)
    assert v.__dlpack_device__() == (1, 0)  # kDLCPU
    assert v.shape == info.page_shape and v.dtype == info.dtype
    arr = np.from_dlpack(v)
    assert arr.shape == info.page_shape and arr.ctypes.data == v.ptr
    arr[...] = 3
    assert (client.page(runs[0].page) == 3).all()
    assert "PageView(" in repr(v)


def test_page_torch(client):
    pytest.importorskip("torch", reason="torch is not installed")
    b = client.branch()
    runs = client.append(b, range(3))
    t = client.page_torch(runs[0].page)
    assert tuple(t.shape) == client.pool().page_shape and t.device.type == "cpu"
    assert t.data_ptr() == client.page_ptr(runs[0].page)
    t.fill_(0)
    t[0, 1, 0, 0, 0] = 1
    assert client.page(runs[0].page).view(np.uint8).any()


def test_page_out_of_range(client):
    with pytest.raises(processfork.InvalidArgument):
        client.page(client.pool().capacity_pages + 10)


def test_another_process_writes_are_seen(daemon, client):
    """A second process writes its branch's pages through its own view; this process
    sees the bytes live through a (read-only) view it made before the write, and after the child
    snapshots, a checkout here holds the same pages with identical bytes."""
    info = client.pool()
    n_tokens = 2 * info.page_tokens + 1
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_writer_child.py"), daemon.socket,
         str(n_tokens)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        words = child.stdout.readline().split()
        assert words and words[0] == "PAGES", words
        pages = [int(w) for w in words[2:]]
        assert len(pages) == 3
        views = [client.page(p) for p in pages]  # made before the child writes
        # the child's exclusive pages: read-only here (only their branch's holder writes)
        assert not any(v.flags.writeable for v in views)
        child.stdin.write("WRITE 42\n")
        child.stdin.flush()
        words = child.stdout.readline().split()
        assert words and words[0] == "DONE", words
        cid = words[1]
        for k, v in enumerate(views):
            np.testing.assert_array_equal(v, pattern(info.page_shape, info.numpy_dtype, 42, k))
        b = client.checkout(cid)
        assert sorted(client.view(b).pages) == pages
        for k, p in enumerate(pages):
            assert client.page(p).tobytes() == pattern(info.page_shape, info.numpy_dtype, 42,
                                                        k).tobytes()
        child.stdin.write("EXIT\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # the child's branch went with its session, its snapshot stays
    assert client.ref_get("child-42") == cid
