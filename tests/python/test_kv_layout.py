"""KV layout copies (Client.kv_store / kv_load, KVLayout) against a real daemon.

Engine tensors are laid out as the engines lay them out (vLLM FlashAttention per layer
(2, blocks, block_size, H, D); transformers per layer (1, H, seq, D); SGLang's host pool
"layer_first" (2, layers, size, H, D)); the expected page bytes come from NumPy indexing
of the page-first layout [layer][K|V][slot][head][dim], independent of the copy kernel.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import processfork
from conftest import start_daemon, stop_daemon

L, H, D, P = 3, 2, 8, 4
GEOMETRY = f"layers={L},kv_heads={H},head_dim={D},dtype=fp32,page_tokens={P}"


@pytest.fixture(scope="module")
def kv_daemon():
    with tempfile.TemporaryDirectory(prefix="pfkv-") as tmp:
        d = start_daemon(Path(tmp), geometry=GEOMETRY)
        yield d
        stop_daemon(d)


@pytest.fixture
def kv(kv_daemon):
    with kv_daemon.connect() as c:
        yield c


def runs_of(write_runs, engine_offset=0):
    return [(r.page, r.first_slot, engine_offset + r.first_token, r.count) for r in write_runs]


def page_rows(c, write_runs):
    """Token-ordered page rows: array [layers, 2, tokens, H, D] read back through views."""
    parts = [c.page(r.page)[:, :, r.first_slot:r.first_slot + r.count] for r in write_runs]
    return np.concatenate(parts, axis=2)


def test_vllm_flash_layout_store_and_load(kv):
    rng = np.random.default_rng(1)
    blocks, bs = 4, 4
    engine = [rng.standard_normal((2, blocks, bs, H, D)).astype(np.float32) for _ in range(L)]
    layout = processfork.KVLayout.from_numpy([t[0] for t in engine], [t[1] for t in engine],
                                             block_axis=0, token_axis=1, head_axis=2)
    assert (layout.block_tokens, layout.token_stride, layout.head_stride) == (bs, H * D * 4, D * 4)
    assert layout.capacity_tokens == blocks * bs
    b = kv.branch()
    wr = kv.append(b, range(100, 109))  # 9 tokens: pages of 4, 4, 1
    moved = kv.kv_store(layout, runs_of(wr, engine_offset=bs))  # engine tokens 4..12
    assert moved == 9 * L * 2 * H * D * 4
    flat = [t.reshape(2, blocks * bs, H, D) for t in engine]
    want = np.stack([f[:, bs:bs + 9] for f in flat])  # [L, 2, 9, H, D]
    np.testing.assert_array_equal(page_rows(kv, wr), want)

    # Load into another engine's tensors at other blocks, one layer at a time.
    other = [np.zeros((2, blocks, bs, H, D), np.float32) for _ in range(L)]
    lay2 = processfork.KVLayout.from_numpy([t[0] for t in other], [t[1] for t in other],
                                           block_axis=0, token_axis=1, head_axis=2)
    for layer in range(L):
        kv.kv_load(lay2, runs_of(wr, engine_offset=2), layers=range(layer, layer + 1))
    for layer in range(L):
        got = other[layer].reshape(2, blocks * bs, H, D)
        np.testing.assert_array_equal(got[:, 2:11], flat[layer][:, bs:bs + 9])
        assert not got[:, :2].any() and not got[:, 11:].any()


def test_transformers_layout_heads_not_adjacent(kv):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    seq = 7
    g = torch.Generator().manual_seed(3)
    k = [torch.randn(1, H, seq, D, generator=g) for _ in range(L)]
    v = [torch.randn(1, H, seq, D, generator=g) for _ in range(L)]
    layout = processfork.KVLayout.from_torch(k, v, token_axis=2, head_axis=1)
    assert layout.head_stride == seq * D * 4 and layout.token_stride == D * 4
    b = kv.branch()
    wr = kv.append(b, range(seq))
    kv.kv_store(layout, runs_of(wr))
    rows = page_rows(kv, wr)  # [L, 2, seq, H, D]
    for layer in range(L):
        np.testing.assert_array_equal(rows[layer, 0], k[layer][0].permute(1, 0, 2).numpy())
        np.testing.assert_array_equal(rows[layer, 1], v[layer][0].permute(1, 0, 2).numpy())
    k2 = [torch.zeros_like(t) for t in k]
    v2 = [torch.zeros_like(t) for t in v]
    kv.kv_load(processfork.KVLayout.from_torch(k2, v2, token_axis=2, head_axis=1), runs_of(wr))
    assert all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2))


def test_sglang_layer_first_host_pool(kv):
    # SGLang MHATokenToKVPoolHost "layer_first": one buffer (2, layers, size, H, D).
    size = 12
    rng = np.random.default_rng(5)
    buf = rng.standard_normal((2, L, size, H, D)).astype(np.float32)
    layout = processfork.KVLayout.from_numpy([buf[0, l] for l in range(L)],
                                             [buf[1, l] for l in range(L)],
                                             token_axis=0, head_axis=1)
    b = kv.branch()
    wr = kv.append(b, range(8))
    kv.kv_store(layout, runs_of(wr, engine_offset=4))
    rows = page_rows(kv, wr)
    np.testing.assert_array_equal(rows, np.transpose(buf[:, :, 4:12], (1, 0, 2, 3, 4)))


def test_pages_written_by_kv_store_are_seen_by_another_process(kv, kv_daemon):
    rng = np.random.default_rng(9)
    engine = [rng.standard_normal((2, 2, 4, H, D)).astype(np.float32) for _ in range(L)]
    layout = processfork.KVLayout.from_numpy([t[0] for t in engine], [t[1] for t in engine],
                                             block_axis=0, token_axis=1, head_axis=2)
    b = kv.branch()
    wr = kv.append(b, range(500, 508))
    kv.kv_store(layout, runs_of(wr))
    snap = kv.snapshot(b)
    # The child checks out the snapshot, loads it into its own (2, blocks, 4, H, D) tensors
    # and prints them; nothing but the snapshot's CID crosses the process boundary.
    child = (
        "import sys, numpy as np, processfork\n"
        "with processfork.connect(sys.argv[1]) as c:\n"
        "    b = c.checkout(sys.argv[2])\n"
        "    v = c.view(b)\n"
        f"    eng = [np.zeros((2, 2, 4, {H}, {D}), np.float32) for _ in range({L})]\n"
        "    lay = processfork.KVLayout.from_numpy([t[0] for t in eng], [t[1] for t in eng],\n"
        "                                          block_axis=0, token_axis=1, head_axis=2)\n"
        "    runs = [(p, 0, 4 * i, 4) for i, p in enumerate(v.pages)]\n"
        "    c.kv_load(lay, runs)\n"
        "    sys.stdout.buffer.write(np.stack(eng).tobytes())\n")
    out = subprocess.run([sys.executable, "-c", child, kv_daemon.socket, snap.cid],
                         check=True, capture_output=True, timeout=60).stdout
    got = np.frombuffer(out, np.float32).reshape(L, 2, 2, 4, H, D)
    np.testing.assert_array_equal(got, np.stack(engine))


def test_bad_layouts_and_runs_raise_and_change_nothing(kv, tmp_path):
    engine = [np.ones((2, 2, 4, H, D), np.float32) for _ in range(L)]
    layout = processfork.KVLayout.from_numpy([t[0] for t in engine], [t[1] for t in engine],
                                             block_axis=0, token_axis=1, head_axis=2)
    b = kv.branch()
    wr = kv.append(b, range(4))
    page = kv.page(wr[0].page)
    page[...] = 5.0
    good = runs_of(wr)
    bad_cases = {
        "slots past the page": [(wr[0].page, 3, 0, 2)],
        "engine tokens past the tensors": [(wr[0].page, 0, 7, 2)],
        "page beyond the pool": [(1 << 30, 0, 0, 1)],
        "negative token": [(wr[0].page, 0, -1, 1)],
        "runs of 3 columns": np.zeros((1, 3), np.int64),
    }
    for what, runs in bad_cases.items():
        with pytest.raises(processfork.InvalidArgument):
            kv.kv_store(layout, runs)
        assert (page == 5.0).all(), what
    with pytest.raises(processfork.InvalidArgument):
        kv.kv_store(layout, good, layers=range(0, L + 1))
    with pytest.raises(processfork.InvalidArgument):
        kv.kv_store(layout, good, layers=range(0, L, 2))
    two_layers = processfork.KVLayout.from_numpy([engine[0][0]] * 2, [engine[0][1]] * 2,
                                                 block_axis=0, token_axis=1, head_axis=2)
    with pytest.raises(processfork.InvalidArgument, match="layers"):
        kv.kv_store(two_layers, good)
    halves = [t.astype(np.float16) for t in engine]
    fp16 = processfork.KVLayout.from_numpy([t[0] for t in halves], [t[1] for t in halves],
                                           block_axis=0, token_axis=1, head_axis=2)
    with pytest.raises(processfork.InvalidArgument, match="dtype"):
        kv.kv_store(fp16, good)
    with pytest.raises(processfork.InvalidArgument):
        processfork.KVLayout.from_numpy([engine[0][0]], [engine[0][1]], block_axis=0,
                                        token_axis=1, head_axis=3)  # head_dim axis
    with pytest.raises(processfork.InvalidArgument):
        processfork.KVLayout.from_numpy([engine[0]], [engine[0]], token_axis=1, head_axis=3)
    with pytest.raises(TypeError):
        kv.kv_store("not a layout", good)
    assert (page == 5.0).all()
    assert kv.kv_store(layout, []) == 0
    # The well-formed store works after all of that.
    assert kv.kv_store(layout, good) > 0
    assert (page == 1.0).all()


def test_cuda_tensors_on_a_host_pool_are_unsupported(kv):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the device-mismatch check needs a CUDA tensor")
    t = [torch.zeros(2, 2, 4, H, D, device="cuda") for _ in range(L)]
    layout = processfork.KVLayout.from_torch([x[0] for x in t], [x[1] for x in t],
                                             block_axis=0, token_axis=1, head_axis=2)
    b = kv.branch()
    wr = kv.append(b, range(4))
    with pytest.raises(processfork.Unsupported):
        kv.kv_store(layout, runs_of(wr))


def test_closed_client_raises(kv_daemon):
    c = kv_daemon.connect()
    engine = [np.ones((2, 1, 4, H, D), np.float32) for _ in range(L)]
    layout = processfork.KVLayout.from_numpy([t[0] for t in engine], [t[1] for t in engine],
                                             block_axis=0, token_axis=1, head_axis=2)
    c.close()
    with pytest.raises(processfork.Unavailable):
        c.kv_store(layout, [(0, 0, 0, 1)])
