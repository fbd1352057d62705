"""Pages of 32 and 128 tokens through a real daemon: vLLM's CPU backend needs a block size
that is a multiple of 32 (128 by default), and a ProcessFork page is one engine block.

The daemon serves Llama-3-8B's KV geometry (32 layers, 8 KV heads, head_dim 128, bf16) as
``llama-3-8b:32`` and ``llama-3-8b:128`` (4 MiB and 16 MiB pages) over 24 MiB chunks, so
that 16 MiB pages straddle chunk boundaries. KV goes in and out through the client's layout
copies from engine tensors in vLLM's per-layer ``(2, blocks, block_size, H, D)`` layout, is
compared bit for bit, and is read back by another process from the snapshot's CID.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import processfork
from conftest import start_daemon, stop_daemon

torch = pytest.importorskip("torch", reason="torch is not installed")

LAYERS, HEADS, DIM = 32, 8, 128


@pytest.fixture(scope="module", params=[32, 128], ids=lambda pt: f"page_tokens_{pt}")
def big_daemon(request):
    with tempfile.TemporaryDirectory(prefix="pfbs-") as tmp:
        d = start_daemon(Path(tmp), geometry=f"llama-3-8b:{request.param}", capacity="256MiB",
                         chunk="24MiB")
        yield d, request.param
        stop_daemon(d)


def engine_tensors(blocks: int, block_size: int, seed: int | None) -> list[torch.Tensor]:
    """Per-layer KV caches in vLLM's (2, blocks, block_size, H, D) layout, random or zero."""
    if seed is None:
        return [torch.zeros(2, blocks, block_size, HEADS, DIM, dtype=torch.bfloat16)
                for _ in range(LAYERS)]
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, blocks, block_size, HEADS, DIM, generator=g).to(torch.bfloat16)
            for _ in range(LAYERS)]


def layout_of(tensors: list[torch.Tensor]) -> processfork.KVLayout:
    return processfork.KVLayout.from_torch([t[0] for t in tensors], [t[1] for t in tensors],
                                           block_axis=0, token_axis=1, head_axis=2)


def block_runs(pages: list[int], n_tokens: int, page_tokens: int, first_block: int = 0):
    """(page, first_slot, engine_token, count) runs: page i <-> engine block first_block + i."""
    return [(p, 0, (first_block + i) * page_tokens, min(page_tokens, n_tokens - i * page_tokens))
            for i, p in enumerate(pages) if i * page_tokens < n_tokens]


def same_tokens(a: list[torch.Tensor], b: list[torch.Tensor], n_tokens: int,
                a_block: int = 0, b_block: int = 0) -> bool:
    """Whether tokens [0, n_tokens) at engine block a_block of ``a`` equal those at b_block of
    ``b``, in every layer, K and V."""
    for x, y in zip(a, b):
        bs = x.shape[2]
        fx = x.reshape(2, -1, HEADS, DIM)[:, a_block * bs:a_block * bs + n_tokens]
        fy = y.reshape(2, -1, HEADS, DIM)[:, b_block * bs:b_block * bs + n_tokens]
        if not torch.equal(fx, fy):
            return False
    return True


def test_pool_reports_the_block_size_and_page_bytes(big_daemon):
    d, pt = big_daemon
    with d.connect() as c:
        info = c.pool()
        assert (info.layers, info.kv_heads, info.head_dim, info.dtype, info.page_tokens) == \
            (LAYERS, HEADS, DIM, "bf16", pt)
        assert info.page_bytes == LAYERS * 2 * HEADS * DIM * 2 * pt  # 128 KiB per token
        assert info.page_shape == (LAYERS, 2, pt, HEADS, DIM)
        assert info.capacity_pages == (256 << 20) // info.page_bytes


def test_kv_round_trip_fork_checkout_and_prefix_hit(big_daemon):
    d, pt = big_daemon
    n = 2 * pt + pt // 2  # the last page half full
    tokens = list(range(3000, 3000 + n))
    engine = engine_tensors(blocks=4, block_size=pt, seed=pt)
    with d.connect() as c:
        b = c.branch()
        # Two appends: the second starts inside the first page (its write runs cross pages).
        runs = c.append(b, tokens[:pt // 2]) + c.append(b, tokens[pt // 2:])
        assert [r.count for r in runs] == [pt // 2, pt - pt // 2, pt, pt // 2]
        # Engine blocks 1.. hold the tokens (block 0 is another request's).
        c.kv_store(layout_of(engine), [(r.page, r.first_slot, pt + r.first_token, r.count)
                                       for r in runs])
        c.commit(b)
        view = c.view(b)
        assert view.n_tokens == n and view.n_pages == 3
        snap = c.snapshot(b)
        assert (snap.n_tokens, snap.n_pages) == (n, 3)

        # The pages hold the engine's bytes: load them back into other blocks.
        back = engine_tensors(blocks=4, block_size=pt, seed=None)
        c.kv_load(layout_of(back), block_runs(view.pages, n, pt, first_block=1))
        assert same_tokens(back, engine, n, a_block=1, b_block=1)
        assert not same_tokens(back, engine_tensors(4, pt, seed=pt + 1), n, 1, 1)  # can fail

        # Fork: a child's append copies only the shared half-full page.
        kids = c.fork(snap.cid, 2)
        res = c.append_ex(kids[0], range(7000, 7000 + pt // 2 + 1))
        assert res.copied_page
        kid_view = c.view(kids[0])
        assert kid_view.pages[:2] == view.pages[:2] and kid_view.pages[2] != view.pages[2]
        assert c.view(kids[1]).pages == view.pages
        kid_back = engine_tensors(blocks=4, block_size=pt, seed=None)
        c.kv_load(layout_of(kid_back), block_runs(kid_view.pages, n, pt))
        assert same_tokens(kid_back, engine, n, a_block=0, b_block=1)

        co = c.checkout(snap.cid)
        assert c.view(co).pages == view.pages

        # Prefix reuse ends at a page boundary: two pages' worth of tokens reuses both pages,
        # one token less reuses one.
        hit = c.branch(tokens[:2 * pt])
        assert c.view(hit).n_tokens == 2 * pt and c.view(hit).pages == view.pages[:2]
        short = c.branch(tokens[:2 * pt - 1])
        assert c.view(short).n_tokens == pt and c.view(short).pages == view.pages[:1]

    # Another process checks the snapshot out and loads it into its own tensors.
    child = (
        "import hashlib, sys, torch, processfork\n"
        f"pt, n = {pt}, {n}\n"
        "with processfork.connect(sys.argv[1]) as c:\n"
        "    v = c.view(c.checkout(sys.argv[2]))\n"
        f"    eng = [torch.zeros(2, 3, pt, {HEADS}, {DIM}, dtype=torch.bfloat16) "
        f"for _ in range({LAYERS})]\n"
        "    lay = processfork.KVLayout.from_torch([t[0] for t in eng], [t[1] for t in eng],\n"
        "                                          block_axis=0, token_axis=1, head_axis=2)\n"
        "    c.kv_load(lay, [(p, 0, i * pt, min(pt, n - i * pt)) for i, p in enumerate(v.pages)])\n"
        "    h = hashlib.sha256()\n"
        "    for t in eng:\n"
        "        h.update(t.reshape(2, -1).view(torch.int16)[:, :n * "
        f"{HEADS * DIM}].contiguous().numpy().tobytes())\n"
        "    print(h.hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", child, d.socket, snap.cid], check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    want = hashlib.sha256()
    for t in engine:
        want.update(t[:, 1:].reshape(2, -1).view(torch.int16)[:, :n * HEADS * DIM]
                    .contiguous().numpy().tobytes())
    assert out == want.hexdigest()
