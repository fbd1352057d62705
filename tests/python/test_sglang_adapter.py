"""processfork.sglang against SGLang 0.5.23's real HiCache interfaces and a real daemon.

- conformance: a subclass of the real HiCacheStorage with the base's signatures, loaded by
  the real StorageBackendFactory ("dynamic");
- the zero-copy and flat data paths for every MHA host layout, across processes, checked
  byte for byte against the host pool and against ProcessFork's page layout;
- keys: SGLang's own get_hash_str equals ProcessFork's prefix keys; pages SGLang stored are
  reused by Client.branch(tokens), snapshotted and forked;
- failures: a killed daemon gives misses and failed stores, never an exception; reconnect;
- the /processfork routes over real HTTP (uvicorn on 127.0.0.1, an ephemeral port);
- GPU (skipped without CUDA): the same data path with a CUDA pool.

Host pools are built by _sglang_host.HostPool, with the exact tensor shapes of SGLang's
MHATokenToKVPoolHost (see that module for why the real class cannot be built here).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import torch

import processfork
from conftest import restart_daemon, start_cuda_daemon, start_daemon, stop_daemon

from _fence_spy import record_fences_and_seals
from _sglang_host import (
    LAYOUTS,
    NAMESPACE,
    HostPool,
    chain_keys,
    dynamic_extra,
    geometry_string,
    storage_config,
)
from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageExtraInfo,
    PoolName,
    PoolTransfer,
)
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

from processfork.sglang import ProcessForkStorage
from processfork.sglang._config import read_settings
from processfork.sglang._launch import route_socket, split_args

HERE = Path(__file__).parent
L, H, D, P = 3, 2, 8, 4          # layers, kv heads, head_dim, page_size (all distinct)
DTYPE = torch.bfloat16
PAGES = 8                        # host pool pages
GEOMETRY = geometry_string(L, H, D, DTYPE, P)

@pytest.fixture(scope="module")
def pf() -> Iterator:
    with tempfile.TemporaryDirectory(prefix="pfsg-") as tmp:
        d = start_daemon(Path(tmp), geometry=GEOMETRY)
        yield d
        stop_daemon(d)


@pytest.fixture
def pf_private() -> Iterator:
    with tempfile.TemporaryDirectory(prefix="pfsg-") as tmp:
        d = start_daemon(Path(tmp), geometry=GEOMETRY)
        d.where = Path(tmp)
        yield d
        if d.proc.poll() is None:
            stop_daemon(d)


def make_storage(socket: str, layout: str = "page_first", **extra) -> ProcessForkStorage:
    return ProcessForkStorage(storage_config(dynamic_extra(socket, **extra), layout=layout), {})


def attached(socket: str, layout: str = "page_first", seed: int = 0, **extra):
    pool = HostPool(layout, L, H, D, P, PAGES, DTYPE)
    if seed:
        pool.fill_random(seed)
    s = make_storage(socket, layout, **extra)
    s.register_mem_pool_host(pool)
    return s, pool


_token_seed = [1000]


def fresh_tokens(n_pages: int) -> List[int]:
    """Token ids no other test uses (so keys never collide across tests)."""
    _token_seed[0] += 1
    base = _token_seed[0] * 100_000
    return [base + i for i in range(n_pages * P)]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


# ---- 1. conformance ------------------------------------------------------------------------
def test_subclass_of_real_base_with_identical_signatures():
    assert issubclass(ProcessForkStorage, HiCacheStorage)
    assert not getattr(ProcessForkStorage, "__abstractmethods__", None)
    overridden = [n for n, v in vars(ProcessForkStorage).items()
                  if callable(v) and not n.startswith("__") and hasattr(HiCacheStorage, n)]
    # every storage method SGLang's controllers call is implemented here
    for name in ("register_mem_pool_host", "register_mem_host_pool_v2", "on_host_pools_registered",
                 "batch_get_v1", "batch_set_v1", "get", "batch_get", "set", "batch_set", "exists",
                 "batch_exists", "batch_exists_v2", "batch_get_v2", "batch_set_v2", "clear"):
        assert name in overridden, name
    for name in overridden:
        ours = inspect.signature(getattr(ProcessForkStorage, name)).parameters.values()
        base = inspect.signature(getattr(HiCacheStorage, name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in ours] == \
               [(p.name, p.kind, p.default) for p in base], name


def test_factory_constructor_call_shape():
    # backend_factory.py _create_dynamic_backend: backend_class(storage_config, kwargs)
    params = list(inspect.signature(ProcessForkStorage.__init__).parameters)
    assert params[:3] == ["self", "storage_config", "kwargs"]


# ---- 2. loading through SGLang's factory ---------------------------------------------------
def test_loaded_by_the_real_factory_dynamic(pf):
    cfg = storage_config({k: v for k, v in dynamic_extra(pf.socket).items() if k != "interface_v1"})
    backend = StorageBackendFactory.create_backend("dynamic", cfg, None)
    try:
        assert type(backend) is ProcessForkStorage
        # the controller reads interface_v1 from this dict after the factory returns
        assert cfg.extra_config["interface_v1"] == 1
    finally:
        backend.close()


def test_factory_reports_unreachable_daemon(tmp_path):
    sock = str(tmp_path / "nobody.sock")
    with pytest.raises(ConnectionError, match="nobody.sock"):
        StorageBackendFactory.create_backend("dynamic", storage_config(dynamic_extra(sock)), None)


# ---- settings ------------------------------------------------------------------------------
def test_settings_socket_per_rank_and_validation(monkeypatch):
    monkeypatch.delenv("PROCESSFORK_SOCKET", raising=False)
    cfg = storage_config(tp_rank=3, tp_size=4)
    assert read_settings({"socket": "/run/pf/tp{tp_rank}.sock"}, cfg).socket == "/run/pf/tp3.sock"
    with pytest.raises(ValueError, match=r"\{tp_rank\}"):
        read_settings({"socket": "/run/pf/shared.sock"}, cfg)
    with pytest.raises(ValueError, match="each shard needs its own daemon"):
        read_settings({}, storage_config(tp_size=2))
    monkeypatch.setenv("PROCESSFORK_SOCKET", "/run/pf/r{tp_rank}.sock")
    assert read_settings({}, cfg).socket == "/run/pf/r3.sock"
    monkeypatch.delenv("PROCESSFORK_SOCKET")
    assert read_settings({}, storage_config()).socket is None
    pp = storage_config(pp_rank=1, pp_size=2)
    with pytest.raises(ValueError, match=r"\{pp_rank\}"):
        read_settings({"socket": "/run/pf/x.sock"}, pp)
    assert read_settings({"socket": "/s{pp_rank}"}, pp).socket == "/s1"
    with pytest.raises(ValueError, match="placeholder"):
        read_settings({"socket": "/s{rank}"}, cfg)
    for bad in ({"timeout_ms": 0}, {"timeout_ms": "5"}, {"timeout_ms": True},
                {"reconnect_interval_s": -1}, {"socket": 5}):
        with pytest.raises(ValueError):
            read_settings({"socket": "/s{tp_rank}", **bad}, cfg)
    s = read_settings({"socket": "/s", "timeout_ms": 250, "reconnect_interval_s": 0}, storage_config())
    assert (s.socket, s.timeout_ms, s.reconnect_interval_s) == ("/s", 250, 0.0)


def test_mla_and_split_heads_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="MLA"):
        ProcessForkStorage(storage_config(dynamic_extra(str(tmp_path / "x")), is_mla=True), {})
    cfg = storage_config(dynamic_extra(str(tmp_path / "x")))
    cfg.should_split_heads = True
    with pytest.raises(ValueError, match="split-head"):
        ProcessForkStorage(cfg, {})


# ---- register_mem_pool_host: geometry ------------------------------------------------------
def test_geometry_mismatch_is_a_clear_error(pf):
    s = make_storage(pf.socket)
    try:
        for pool, what in ((HostPool("page_first", L + 1, H, D, P, PAGES, DTYPE), "layers"),
                           (HostPool("page_first", L, H * 2, D, P, PAGES, DTYPE), "kv_heads"),
                           (HostPool("page_first", L, H, D * 2, P, PAGES, DTYPE), "head_dim"),
                           (HostPool("page_first", L, H, D, P * 2, PAGES, DTYPE), "page_tokens"),
                           (HostPool("page_first", L, H, D, P, PAGES, torch.float16), "dtype")):
            with pytest.raises(ValueError, match=what) as e:
                s.register_mem_pool_host(pool)
            # the hint is a --geometry the CLI accepts for this host pool
            pf_dtype = "fp16" if pool.dtype == torch.float16 else "bf16"
            assert (f"--geometry layers={pool.layer_num},kv_heads={pool.head_num},"
                    f"head_dim={pool.head_dim},dtype={pf_dtype},page_tokens={pool.page_size}"
                    in str(e.value)), str(e.value)
        mla = HostPool("page_first", L, H, D, P, PAGES, DTYPE)
        mla.kv_lora_rank = 512
        with pytest.raises(ValueError, match="MLA"):
            s.register_mem_pool_host(mla)
        odd = HostPool("page_first", L, H, D, P, PAGES, DTYPE)
        odd.layout = "page_unified"
        with pytest.raises(ValueError, match="page_unified"):
            s.register_mem_pool_host(odd)
        s.register_mem_host_pool_v2(odd, PoolName.SWA)
        with pytest.raises(ValueError, match="swa"):
            s.on_host_pools_registered()
    finally:
        s.close()


# ---- 3. data path --------------------------------------------------------------------------
def _check_pool_pages(client: processfork.Client, keys: List[str], host: HostPool,
                      host_pages: List[int]) -> None:
    """ProcessFork's pages under ``keys`` hold the host pages in the pool's layout
    [layer][K|V][token][head][head_dim], checked row by row with direct indexing."""
    pages = client.lookup_keys(keys, hold=True, namespace=NAMESPACE)
    try:
        assert len(pages) == len(keys)
        for page, hp in zip(pages, host_pages):
            view = client.page_torch(page)
            for l in range(L):
                for kv in range(2):
                    for slot in range(P):
                        for h in range(H):
                            assert torch.equal(bits(view[l, kv, slot, h]),
                                               bits(host.row(kv, l, hp * P + slot, h))), \
                                (page, l, kv, slot, h)
    finally:
        client.release_pages(pages)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_copy_set_then_get_in_another_process(pf, layout, tmp_path):
    s, a = attached(pf.socket, layout, seed=11)
    try:
        keys = chain_keys(fresh_tokens(3), P)
        src_pages = [5, 1, 6]                        # not in order, not contiguous
        assert s.batch_set_v1(keys, a.indices(src_pages)) == [True, True, True]
        assert s.batch_exists(keys) == 3
        with pf.connect() as c:
            _check_pool_pages(c, keys, a, src_pages)
        dst_pages = [2, 7, 0]
        spec = {"socket": pf.socket, "layout": layout, "layers": L, "heads": H, "head_dim": D,
                "page_size": P, "pages": PAGES, "dtype": "bfloat16", "keys": keys,
                "host_pages": dst_pages}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        out = tmp_path / "out.pt"
        r = subprocess.run([sys.executable, str(HERE / "_sglang_reader.py"),
                            str(tmp_path / "spec.json"), str(out)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        got = torch.load(out)
        assert got["results"] == [True, True, True]
        b = HostPool(layout, L, H, D, P, PAGES, DTYPE)
        b.kv_buffer.copy_(got["kv_buffer"])
        for sp, dp in zip(src_pages, dst_pages):
            assert a.page_equal(b, sp, dp)
        untouched = [p for p in range(PAGES) if p not in dst_pages]
        zero = HostPool(layout, L, H, D, P, PAGES, DTYPE)
        for p in untouched:
            assert b.page_equal(zero, p, p), f"host page {p} was written"
    finally:
        s.close()


def test_leading_run_stops_at_a_missing_key(pf):
    s, a = attached(pf.socket, "page_first_direct", seed=12)
    try:
        keys = chain_keys(fresh_tokens(3), P)
        assert s.batch_set_v1(keys, a.indices([0, 1, 2])) == [True] * 3
        missing = chain_keys(fresh_tokens(1), P)[0]
        probe = [keys[0], missing, keys[2]]
        assert s.batch_exists(probe) == 1
        assert s.exists(keys[2]) and not s.exists(missing)
        assert s.batch_exists([missing] + keys) == 0
        b = HostPool("page_first_direct", L, H, D, P, PAGES, DTYPE)
        s2 = make_storage(pf.socket, "page_first_direct")
        s2.register_mem_pool_host(b)
        try:
            assert s2.batch_get_v1(probe, b.indices([4, 5, 6])) == [True, False, False]
            assert a.page_equal(b, 0, 4)
            zero = HostPool("page_first_direct", L, H, D, P, PAGES, DTYPE)
            assert b.page_equal(zero, 5, 5) and b.page_equal(zero, 6, 6)
        finally:
            s2.close()
        # storing again: the present run is skipped, the result is still all True
        assert s.batch_set_v1(keys, a.indices([0, 1, 2])) == [True] * 3
    finally:
        s.close()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flat_page_path(pf, layout):
    s, a = attached(pf.socket, layout, seed=13)
    b = HostPool(layout, L, H, D, P, PAGES, DTYPE)
    try:
        keys = chain_keys(fresh_tokens(3), P)
        # the controller's generic path: get_data_page(host_index) -> batch_set
        values = [a.get_data_page(p * P) for p in (3, 4)]
        assert s.batch_set(keys[:2], values) is True
        assert s.set(keys[2], a.get_data_page(7 * P)) is True
        with pf.connect() as c:
            _check_pool_pages(c, keys, a, [3, 4, 7])
        # get_dummy_flat_data_page targets -> set_from_flat_data_page
        got = s.batch_get(keys, [b.get_dummy_flat_data_page() for _ in keys])
        assert all(isinstance(t, torch.Tensor) for t in got)
        for t, dst in zip(got, (0, 1, 2)):
            b.set_from_flat_data_page(dst * P, t)
        for sp, dp in zip((3, 4, 7), (0, 1, 2)):
            assert a.page_equal(b, sp, dp)
        one = s.get(keys[1], b.get_dummy_flat_data_page())
        assert torch.equal(bits(one), bits(a.get_data_page(4 * P)))
        assert torch.equal(bits(s.get(keys[1])), bits(a.get_data_page(4 * P)))
        missing = chain_keys(fresh_tokens(1), P)[0]
        assert s.get(missing, b.get_dummy_flat_data_page()) is None
        assert s.batch_get([keys[0], missing], None)[1] is None
        # a page stored through the zero-copy path reads back through the flat one
        k2 = chain_keys(fresh_tokens(1), P)
        assert s.batch_set_v1(k2, a.indices([6])) == [True]
        assert torch.equal(bits(s.get(k2[0])), bits(a.get_data_page(6 * P)))
        # wrong-sized values are refused, not written
        assert s.set(chain_keys(fresh_tokens(1), P)[0], torch.zeros(3, dtype=DTYPE)) is False
    finally:
        s.close()


def test_v2_kv_pool_and_bad_indices(pf):
    s, a = attached(pf.socket, "layer_first", seed=14)
    b = HostPool("layer_first", L, H, D, P, PAGES, DTYPE)
    try:
        keys = chain_keys(fresh_tokens(2), P)
        r = s.batch_set_v2([PoolTransfer(name=PoolName.KV, host_indices=a.indices([1, 2]), keys=keys)])
        assert r[PoolName.KV] == [True, True]
        res = s.batch_exists_v2(keys)
        assert res.kv_hit_pages == 2 and res.restorable_prefix_pages == [1, 2]
        side = PoolTransfer(name=PoolName.MAMBA, keys=keys[-1:])
        assert s.batch_exists_v2(keys, [side]).kv_hit_pages == 0
        s2 = make_storage(pf.socket, "layer_first")
        s2.register_mem_pool_host(b)
        try:
            got = s2.batch_get_v2([PoolTransfer(name=PoolName.KV, host_indices=b.indices([5, 6]),
                                                keys=keys), side])
            assert got[PoolName.KV] == [True, True] and got[PoolName.MAMBA] == [False]
            assert a.page_equal(b, 1, 5) and a.page_equal(b, 2, 6)
            # indices that are not whole aligned pages: refused, nothing written
            bad = b.indices([3, 4]) + 1
            assert s2.batch_get_v1(keys, bad) == [False, False]
            assert s2.batch_get_v1(keys, b.indices([3])) == [False, False]
        finally:
            s2.close()
    finally:
        s.close()


# ---- 4. keys -------------------------------------------------------------------------------
def _sglang_hash(tokens: List[int], prior=None):
    """SGLang's own page hashes (mem_cache/utils.py get_hash_str, a JIT-built C++ extension),
    or the reason it cannot be built here."""
    try:
        from sglang.srt.mem_cache.utils import get_hash_str
        return get_hash_str(tokens, prior, page_size=P), ""
    except Exception as e:  # noqa: BLE001 -- the extension needs a compiler and OpenSSL headers
        return None, f"SGLang's native get_hash_str cannot be built here: {e}"


def _keys_as_sglang_makes_them(tokens: List[int]) -> List[str]:
    keys, _ = _sglang_hash(tokens)
    return keys if keys is not None else chain_keys(tokens, P)


def test_sglang_page_hashes_are_processfork_prefix_keys():
    tokens = fresh_tokens(3) + [7, 7]
    theirs, why = _sglang_hash(tokens)
    if theirs is None:
        pytest.skip(why)
    # SGLang also hashes a trailing partial page; it only ever stores whole pages (its
    # prefetch and backup spans are page aligned), and only whole pages have prefix keys.
    assert len(theirs) == 4
    assert theirs[:3] == chain_keys(tokens, P)
    assert _sglang_hash(tokens[2 * P:3 * P], theirs[1])[0] == [theirs[2]]


def test_pages_sglang_stored_are_reused_snapshotted_and_forked(pf):
    s, a = attached(pf.socket, "page_first", seed=15)
    try:
        tokens = fresh_tokens(3)
        keys = _keys_as_sglang_makes_them(tokens)
        # two backup batches, the second chained with prefix_keys as SGLang passes them
        assert s.batch_set_v1(keys[:1], a.indices([2])) == [True]
        assert s.batch_set_v1(keys[1:], a.indices([3, 4]),
                              HiCacheStorageExtraInfo(prefix_keys=keys[:1])) == [True, True]
        with pf.connect() as c:
            b = c.branch(tokens + [1, 2], namespace=NAMESPACE)
            assert b.reused_tokens == 3 * P
            v = c.view(b)
            stored = c.lookup_keys(keys, hold=False, namespace=NAMESPACE)
            assert v.pages[:3] == stored
            snap = c.snapshot(b)
            assert (snap.n_tokens, snap.n_pages) == (3 * P, 3)
            kids = c.fork(snap.cid, 2)
            for k in kids:
                assert c.view(k).pages == stored
            _check_pool_pages(c, keys, a, [2, 3, 4])
    finally:
        s.close()


def test_any_key_string_is_a_key(pf):
    """HiCacheStorage types keys as str: every string is stored and found, by every path.
    Page hashes (64 lowercase hex digits) are prefix keys as they are; any other string is
    SHA-256 of a domain-separated encoding (docs/adapter-sglang.md "Keys")."""
    from processfork.sglang._keys import prefix_key, prefix_keys

    odd = ["", "\u00fcnic\u00f8de-\u9875-\U0001f600", "k" * 100_000, "A" * 64, "\ud800"]
    s, a = attached(pf.socket, "page_first", seed=21)
    b = HostPool("page_first", L, H, D, P, PAGES, DTYPE)
    s2 = make_storage(pf.socket, "page_first")
    s2.register_mem_pool_host(b)
    try:
        # zero copy, chained after a parent that is not a page hash either
        parent = "parent of the odd keys"
        assert s.batch_set_v1(odd, a.indices([0, 1, 2, 3, 4]),
                              HiCacheStorageExtraInfo(prefix_keys=[parent])) == [True] * 5
        assert s.batch_exists(odd) == 5 and all(s.exists(k) for k in odd)
        assert s2.batch_get_v1(odd, b.indices([3, 4, 5, 6, 7])) == [True] * 5
        for src, dst in zip((0, 1, 2, 3, 4), (3, 4, 5, 6, 7)):
            assert a.page_equal(b, src, dst)
        # the flat path
        assert s.set("flat key \u2603", a.get_data_page(5 * P)) is True
        assert torch.equal(bits(s2.get("flat key \u2603")), bits(a.get_data_page(5 * P)))
        # the daemon holds them under the documented prefix keys
        expect = [hashlib.sha256(b"processfork-sglang-key-v1\x00" + k.encode("utf-8", "surrogatepass"))
                  .hexdigest() for k in odd]
        assert prefix_keys(odd) == expect
        with pf.connect() as c:
            assert len(c.lookup_keys(expect, hold=False, namespace=s.namespace)) == 5
        # a page hash is its own prefix key; its uppercase spelling is just another string
        real = chain_keys(fresh_tokens(1), P)[0]
        assert prefix_key(real) == real and prefix_key(real.upper()) != real
        assert not s.exists(real) and not s.exists(odd[1] + "x")
    finally:
        s2.close()
        s.close()


def test_a_key_that_is_not_a_str_is_a_logged_miss(pf, caplog):
    """Not a str: refused, logged under SGLang's logger hierarchy, every call misses."""
    s, a = attached(pf.socket, "page_first", seed=22)
    try:
        caplog.set_level("WARNING", logger="sglang")
        assert s.batch_set_v1([b"bytes"], a.indices([0])) == [False]
        assert s.batch_exists([7]) == 0
        assert s.batch_get_v1([None], a.indices([0])) == [False]
        ours = [r for r in caplog.records if "must be a str" in r.getMessage()]
        assert ours and {r.name for r in ours} == {"sglang.srt.mem_cache.storage.processfork"}
        assert all(r.levelname == "WARNING" for r in ours)
    finally:
        s.close()


# ---- 5. failures ---------------------------------------------------------------------------
def test_killed_daemon_gives_misses_then_reconnects(pf_private, caplog):
    d = pf_private
    s, a = attached(d.socket, "page_first", seed=16, reconnect_interval_s=0, timeout_ms=2000)
    b = HostPool("page_first", L, H, D, P, PAGES, DTYPE)
    try:
        keys = chain_keys(fresh_tokens(2), P)
        assert s.batch_set_v1(keys, a.indices([0, 1])) == [True, True]
        d.proc.kill()
        d.proc.wait()
        caplog.set_level("WARNING")
        assert s.batch_exists(keys) == 0
        assert s.exists(keys[0]) is False
        assert s.batch_get_v1(keys, b.indices([2, 3])) == [False, False]
        assert s.batch_set_v1(keys, a.indices([0, 1])) == [False, False]
        assert s.get(keys[0], b.get_dummy_flat_data_page()) is None
        assert s.batch_get(keys) == [None, None]
        assert s.set(keys[0], a.get_data_page(0)) is False
        assert s.batch_set(keys, [a.get_data_page(0), a.get_data_page(P)]) is False
        s.clear()
        assert any("ProcessFork HiCache" in r.getMessage() for r in caplog.records)
        zero = HostPool("page_first", L, H, D, P, PAGES, DTYPE)
        assert b.page_equal(zero, 2, 2)
        # a new daemon at the same socket: the backend reconnects and works again
        (d.where / "ready").unlink(missing_ok=True)
        d2 = start_daemon(d.where, geometry=GEOMETRY)
        try:
            assert s.batch_set_v1(keys, a.indices([0, 1])) == [True, True]
            assert s.batch_exists(keys) == 2
        finally:
            stop_daemon(d2)
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_daemon_restart_resumes_at_once(pf_private, sig):
    """A daemon restarted on the same socket: the backend (with the default 5 s reconnect
    interval) stores and loads again on its very next calls — the client reconnected by
    itself, the session kept it — with no engine restart and no wait."""
    s, a = attached(pf_private.socket, "page_first", seed=18)
    try:
        assert s.settings.reconnect_interval_s == 5
        keys = chain_keys(fresh_tokens(2), P)
        assert s.batch_set_v1(keys, a.indices([0, 1])) == [True, True]
        generation = s._session.generation
        d2 = restart_daemon(pf_private, sig, geometry=GEOMETRY)
        try:
            assert s.batch_exists(keys) == 0  # what the old daemon held is gone
            assert s._session.generation == generation + 1  # the same client, reconnected
            assert s.batch_set_v1(keys, a.indices([0, 1])) == [True, True]
            assert s.batch_exists(keys) == 2
            assert not a.page_equal(a, 0, 2)
            assert s.batch_get_v1(keys, a.indices([2, 3])) == [True, True]  # into pages 2, 3
            assert a.page_equal(a, 0, 2) and a.page_equal(a, 1, 3)
        finally:
            stop_daemon(d2)
    finally:
        s.close()


def test_daemon_with_another_geometry_after_restart_is_refused(pf_private, caplog):
    d, where = pf_private, pf_private.where
    try:
        s, a = attached(d.socket, "page_first", reconnect_interval_s=0)
    finally:
        stop_daemon(d)
    try:
        (where / "ready").unlink(missing_ok=True)
        d2 = start_daemon(where, geometry=geometry_string(L, H, D, DTYPE, P * 2))
        try:
            caplog.set_level("WARNING")
            keys = chain_keys(fresh_tokens(1), P)
            # the first call finds the old session dead, the next one reconnects and the
            # geometry check refuses the new pool: both are failed stores, no raise
            assert s.batch_set_v1(keys, a.indices([0])) == [False]
            assert s.batch_set_v1(keys, a.indices([0])) == [False]
            assert any("does not match" in r.getMessage() for r in caplog.records)
            assert s.batch_exists(keys) == 0
        finally:
            stop_daemon(d2)
    finally:
        s.close()


# ---- 6. routes over HTTP -------------------------------------------------------------------
class _Server:
    """uvicorn serving a FastAPI app on 127.0.0.1 with an ephemeral port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class _Tokenizer:
    """A word-level tokenizer with the one method the route calls (HF's ``encode``)."""

    def encode(self, text: str) -> List[int]:
        return [int(w) for w in text.split()]


@pytest.fixture(scope="module")
def http(pf):
    from fastapi import FastAPI

    from processfork.sglang.routes import mount

    app = FastAPI()
    router = mount(app, pf.socket, tokenizer=lambda: _Tokenizer(),
                   namespace=NAMESPACE)
    bare = FastAPI()
    from processfork.sglang.routes import make_router
    bare.include_router(make_router(pf.socket, prefix="/bare"))
    app.mount("/notok", bare)
    srv = _Server(app)
    yield srv.url
    srv.close()
    router.processfork_session.close()


def _post(url: str, path: str, body) -> tuple:
    import httpx

    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    r = httpx.post(url + path, content=data, headers={"content-type": "application/json"},
                   timeout=30)
    return r.status_code, r.json()


def _err(resp: tuple, status: int, code: str) -> None:
    assert resp[0] == status, resp
    assert resp[1]["error"]["code"] == code and resp[1]["error"]["message"], resp


def test_routes_validate_requests(http):
    for path in ("snapshot", "fork", "checkout", "merge"):
        _err(_post(http, f"/processfork/{path}", b"{not json"), 400, "invalid_argument")
        _err(_post(http, f"/processfork/{path}", [1, 2]), 400, "invalid_argument")
        _err(_post(http, f"/processfork/{path}", {}), 400, "invalid_argument")
    _err(_post(http, "/processfork/snapshot", {"input_ids": [1, "2"]}), 400, "invalid_argument")
    _err(_post(http, "/processfork/snapshot", {"input_ids": [-1]}), 400, "invalid_argument")
    _err(_post(http, "/processfork/snapshot", {"input_ids": [1], "text": "1"}), 400,
         "invalid_argument")
    _err(_post(http, "/processfork/snapshot", {"input_ids": [1], "name": 3}), 400, "invalid_argument")
    _err(_post(http, "/notok/bare/processfork/snapshot", {"text": "1 2 3"}), 400, "invalid_argument")
    _err(_post(http, "/processfork/fork", {"cid": "x", "n": 0}), 400, "invalid_argument")
    _err(_post(http, "/processfork/fork", {"cid": "x", "n": 1025}), 400, "invalid_argument")
    _err(_post(http, "/processfork/fork", {"cid": "x", "n": True}), 400, "invalid_argument")
    _err(_post(http, "/processfork/fork", {"cid": "x", "branch": 1, "n": 1}), 400, "invalid_argument")
    _err(_post(http, "/processfork/checkout", {"cid": 5}), 400, "invalid_argument")
    _err(_post(http, "/processfork/merge", {"from": "a"}), 400, "invalid_argument")
    _err(_post(http, "/processfork/merge", {"from": 1.5, "into": "b"}), 400, "invalid_argument")


def test_routes_not_found(http):
    _err(_post(http, "/processfork/fork", {"cid": "sha256:" + "0" * 64, "n": 2}), 404, "not_found")
    _err(_post(http, "/processfork/fork", {"cid": "no-such-ref", "n": 2}), 404, "not_found")
    _err(_post(http, "/processfork/checkout", {"cid": "no-such-ref"}), 404, "not_found")
    _err(_post(http, "/processfork/merge", {"from": "no-such-ref", "into": "nope"}), 404, "not_found")
    _err(_post(http, "/processfork/snapshot", {"input_ids": fresh_tokens(2)}), 404, "not_found")


def test_routes_snapshot_fork_checkout_merge(http, pf):
    s, a = attached(pf.socket, "page_first", seed=17)
    try:
        tokens = fresh_tokens(3)
        keys = chain_keys(tokens, P)
        assert s.batch_set_v1(keys, a.indices([0, 1, 2])) == [True] * 3
        st, short = _post(http, "/processfork/snapshot", {"input_ids": tokens[:2 * P] + [5]})
        assert st == 201 and (short["n_tokens"], short["n_pages"]) == (2 * P, 2)
        assert short["requested_tokens"] == 2 * P + 1
        st, full = _post(http, "/processfork/snapshot",
                         {"text": " ".join(map(str, tokens)), "name": "three-pages"})
        assert st == 201 and (full["n_tokens"], full["n_pages"]) == (3 * P, 3)
        assert full["cid"].startswith("sha256:") and full["name"] == "three-pages"
        # the name is a ref (fork takes it); a name that is not a ref name is refused
        _err(_post(http, "/processfork/snapshot", {"input_ids": tokens, "name": "three pages"}),
             400, "invalid_argument")

        st, fk = _post(http, "/processfork/fork", {"cid": "three-pages", "n": 3})
        assert st == 201 and len(fk["branches"]) == 3 and fk["source"] == full["cid"]
        with pf.connect() as c:
            stored = c.lookup_keys(keys, hold=False, namespace=NAMESPACE)
            for bid in fk["branches"]:
                v = c.view(bid)
                assert v.n_tokens == 3 * P and v.pages == stored and v.owner == 0
            st, fb = _post(http, "/processfork/fork", {"branch": fk["branches"][0], "n": 1})
            assert st == 201 and fb["source"] is None and len(fb["branches"]) == 1

            st, co = _post(http, "/processfork/checkout", {"cid": full["cid"]})
            assert st == 201 and co["cid"] == full["cid"] and co["n_tokens"] == 3 * P
            assert c.view(co["branch"]).pages == stored
            # after checkout the snapshot's pages are findable by SGLang's keys
            assert s.batch_exists(keys) == 3

            st, mg = _post(http, "/processfork/merge", {"from": full["cid"], "into": short["cid"]})
            assert st == 201 and mg["outcome"] == "fast-forward" and mg["recompute_tokens"] == []
            assert c.view(mg["branch"]).n_tokens == 3 * P
            for bid in fk["branches"] + fb["branches"] + [co["branch"], mg["branch"]]:
                c.free(bid)
    finally:
        s.close()


def test_routes_conflict_on_another_sessions_branch(http, pf):
    with pf.connect() as c:
        b = c.branch()
        c.append(b, fresh_tokens(1))
        _err(_post(http, "/processfork/fork", {"branch": b.id, "n": 1}), 409, "conflict")
        _err(_post(http, "/processfork/merge", {"from": b.id, "into": b.id}), 409, "conflict")
        assert c.view(b).n_tokens == P                # a failed request changed nothing


def test_route_checkout_makes_a_snapshot_findable_by_sglang_keys(http, pf):
    import numpy as np

    tokens = fresh_tokens(3)
    keys = chain_keys(tokens, P)
    rng = np.random.default_rng(18)
    with pf.connect() as c:
        # KV written by another client and snapshotted without commit: not in the index
        b = c.branch(namespace=NAMESPACE)
        written = {}
        for run in c.append(b, tokens):
            page = c.page(run.page)
            page[...] = rng.integers(0, 1 << 16, size=page.shape, dtype=np.uint16)
            written[run.page] = page.copy()
        snap = c.snapshot(b)
        c.free(b)
        assert c.lookup_keys(keys, hold=False, namespace=NAMESPACE) == []
        st, co = _post(http, "/processfork/checkout", {"cid": snap.cid})
        assert st == 201 and co["n_tokens"] == 3 * P
        snap_pages = c.view(co["branch"]).pages
        assert c.lookup_keys(keys, hold=False, namespace=NAMESPACE) == snap_pages
        c.free(co["branch"])
    # SGLang's next prefetch of those tokens loads the snapshot's bytes from L3
    s, host = attached(pf.socket, "page_head")
    try:
        assert s.batch_get_v1(keys, host.indices([3, 1, 6])) == [True] * 3
        for page, hp in zip(snap_pages, (3, 1, 6)):
            want = torch.from_numpy(written[page].astype(np.int16))
            for l in range(L):
                for kv in range(2):
                    for slot in range(P):
                        for h in range(H):
                            assert torch.equal(bits(host.row(kv, l, hp * P + slot, h)),
                                               want[l, kv, slot, h])
    finally:
        s.close()


def test_routes_unavailable_daemon(tmp_path):
    from fastapi import FastAPI

    from processfork.sglang.routes import make_router

    app = FastAPI()
    app.include_router(make_router(str(tmp_path / "gone.sock"), timeout_ms=500))
    srv = _Server(app)
    try:
        _err(_post(srv.url, "/processfork/checkout", {"cid": "main"}), 503, "unavailable")
        _err(_post(srv.url, "/processfork/fork", {"cid": "main", "n": 0}), 400, "invalid_argument")
    finally:
        srv.close()


# ---- launcher ------------------------------------------------------------------------------
def test_launcher_arguments():
    ours, rest = split_args(["--model-path", "m", "--processfork-socket", "/s.sock",
                             "--enable-hierarchical-cache"])
    assert ours.processfork_socket == "/s.sock" and not ours.processfork_no_routes
    assert rest == ["--model-path", "m", "--enable-hierarchical-cache"]

    from sglang.srt.server_args import prepare_server_args   # SGLang's own argument parser

    extra = json.dumps(dynamic_extra("/run/pf/tp{tp_rank}.sock"))
    args = prepare_server_args(["--model-path", "m", "--enable-hierarchical-cache",
                                "--hicache-storage-backend", "dynamic",
                                "--hicache-storage-backend-extra-config", extra])
    assert route_socket(args, None) == "/run/pf/tp0.sock"
    assert route_socket(args, "/x.sock") == "/x.sock"
    tp2 = prepare_server_args(["--model-path", "m", "--tp-size", "2",
                               "--hicache-storage-backend-extra-config", extra])
    with pytest.raises(SystemExit, match="no-routes"):
        route_socket(tp2, None)


# ---- 7. GPU --------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gpu_cuda_pool_with_pinned_host_pool(layout, tmp_path):
    """SGLang keeps its host pool in pinned CPU memory (mha.py init_kv_buffer: alloc with
    pin_memory); with a CUDA ProcessFork pool the pages cross PCIe both ways."""
    d = start_cuda_daemon(tmp_path, GEOMETRY, capacity="64MiB")
    sock, proc = d.socket, d.proc
    try:
        a = HostPool(layout, L, H, D, P, PAGES, DTYPE)
        a.kv_buffer = a.kv_buffer.pin_memory()
        a.fill_random(21)
        b = HostPool(layout, L, H, D, P, PAGES, DTYPE)
        b.kv_buffer = b.kv_buffer.pin_memory()
        s = make_storage(str(sock), layout)
        s.register_mem_pool_host(a)
        s2 = make_storage(str(sock), layout)
        s2.register_mem_pool_host(b)
        try:
            keys = chain_keys(fresh_tokens(3), P)
            assert s.batch_set_v1(keys, a.indices([4, 0, 2])) == [True] * 3
            assert s2.batch_get_v1(keys, b.indices([1, 3, 5])) == [True] * 3
            for sp, dp in ((4, 1), (0, 3), (2, 5)):
                assert a.page_equal(b, sp, dp)
            got = s2.get(keys[1], b.get_dummy_flat_data_page())
            assert torch.equal(bits(got), bits(a.get_data_page(0)))
        finally:
            s.close()
            s2.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_publish_is_fenced_and_the_fence_is_skipped_for_a_cpu_host_pool(pf, monkeypatch):
    """processfork.h "GPU fences": a backup waits for torch's current stream of the host
    pool's device before publish_pages seals the pages; SGLang's host pool is CPU memory, so
    the fence is skipped (returns False) and the published pages hold the host pool's bytes."""
    import processfork.sglang.storage as storage_mod

    events = record_fences_and_seals(monkeypatch, storage_mod, ("publish_pages",))
    s, a = attached(pf.socket, "page_first", seed=23)
    try:
        keys = chain_keys(fresh_tokens(2), P)
        assert s.batch_set_v1(keys, a.indices([1, 2])) == [True, True]
        assert events == [("fence", "cpu", False), ("publish_pages",)]
        with pf.connect() as c:
            _check_pool_pages(c, keys, a, [1, 2])
    finally:
        s.close()
