"""processfork.vllm against vLLM 0.33's real classes and a real daemon.

The engine around the connector is vLLM's own: VllmConfig, Scheduler (which makes the
SCHEDULER-role connector through KVConnectorFactory and kv_connector_module_path),
the WORKER-role connector from the same factory, and KV tensors laid out by vLLM's
create_kv_cache_views; only the model forward is simulated (_vllm_env.py says how).
Daemons are real (`processfork serve`, host pool) with the model's geometry.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import socket as socketlib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed")
torch = pytest.importorskip("torch", reason="torch is not installed")

import processfork  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _vllm_env import (  # noqa: E402
    BLOCK_SIZE, GEOMETRY, Engine, token_kv, tiny_model_dir, vllm_config)
from _fence_spy import record_fences_and_seals  # noqa: E402
from conftest import start_cuda_daemon, start_daemon, stop_daemon  # noqa: E402

from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # noqa: E402
    KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole)

from processfork.vllm import (  # noqa: E402
    LoadSpec, ProcessForkConnector, ProcessForkConnectorMetadata, SaveSpec)

HERE = Path(__file__).parent
needs_layout = pytest.mark.skipif(
    not hasattr(processfork, "KVLayout") or not hasattr(processfork.Client, "kv_store"),
    reason="the installed processfork has no layout copy API (KVLayout, kv_store/kv_load)")


@pytest.fixture(scope="module")
def model_dir():
    with tempfile.TemporaryDirectory(prefix="pfvllm-") as tmp:
        yield tiny_model_dir(Path(tmp))


@pytest.fixture
def pf():
    """A daemon of this test's own whose geometry is the tiny model's per-rank KV."""
    with tempfile.TemporaryDirectory(prefix="pfv-") as tmp:
        d = start_daemon(Path(tmp), geometry=GEOMETRY)
        yield d
        stop_daemon(d)


def _prompt(n: int, base: int = 100) -> list[int]:
    return list(range(base, base + n))


def _ns(model_dir: str) -> bytes:
    """The namespace the connector saves plain requests of this model in (docs/adapter-vllm.md
    "Namespaces")."""
    return processfork.namespace(processfork.model_fingerprint(model_dir), None, None, None)


def _engine(model_dir: str, socket: str | None, **kw) -> Engine:
    return Engine(model_dir, socket, **kw)


# ---- 1. conformance ------------------------------------------------------------------
def test_subclasses_the_real_base_and_signatures_match():
    assert issubclass(ProcessForkConnector, KVConnectorBase_V1)
    assert issubclass(ProcessForkConnectorMetadata, KVConnectorMetadata)
    assert not ProcessForkConnector.__abstractmethods__  # every abstract method is defined
    overridden = [n for n, f in vars(ProcessForkConnector).items()
                  if inspect.isfunction(f) and hasattr(KVConnectorBase_V1, n)]
    required = {"__init__", "start_load_kv", "wait_for_layer_load", "save_kv_layer",
                "wait_for_save", "get_num_new_matched_tokens", "update_state_after_alloc",
                "build_connector_meta", "request_finished", "register_kv_caches",
                "get_finished", "get_block_ids_with_load_errors"}
    assert required <= set(overridden)
    for name in overridden:
        ours = inspect.signature(getattr(ProcessForkConnector, name)).parameters
        base = inspect.signature(getattr(KVConnectorBase_V1, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
            [(p.name, p.kind, p.default) for p in base.values()], name
    # requires_kv_delivery stays a property, as vLLM reads it
    assert isinstance(inspect.getattr_static(ProcessForkConnector, "requires_kv_delivery"),
                      property)


def test_factory_loads_it_by_module_path_and_by_registered_name(model_dir, pf):
    cfg = vllm_config(model_dir, pf.socket)
    assert KVConnectorFactory.get_connector_class(cfg.kv_transfer_config) is ProcessForkConnector
    # vLLM turns the hybrid KV cache manager off for a connector without SupportsHMA
    assert cfg.scheduler_config.disable_hybrid_kv_cache_manager is True
    from processfork.vllm.plugin import register
    register()
    register()  # idempotent: vLLM may run general plugins more than once
    cfg2 = vllm_config(model_dir, pf.socket, module_path=None)
    assert KVConnectorFactory.get_connector_class(cfg2.kv_transfer_config) \
        is ProcessForkConnector
    from _vllm_env import kv_cache_config
    for role in (KVConnectorRole.SCHEDULER, KVConnectorRole.WORKER):
        c = KVConnectorFactory.create_connector(cfg2, role, kv_cache_config(16))
        assert isinstance(c, ProcessForkConnector) and c.role == role
        assert c.requires_kv_delivery is False
        c.shutdown()


def test_geometry_mismatch_is_a_clear_startup_error(model_dir, private_daemon):
    # the conftest daemon has the "tiny" preset, not the model's KV geometry
    cfg = vllm_config(model_dir, private_daemon.socket)
    from _vllm_env import kv_cache_config
    with pytest.raises(ValueError, match=r"geometry.*page_tokens=4 \(= --block-size\)"):
        KVConnectorFactory.create_connector(cfg, KVConnectorRole.SCHEDULER,
                                            kv_cache_config(16))


def test_bad_extra_config_and_parallelism_are_refused(model_dir, pf):
    from processfork.vllm._config import ConnectorSettings
    with pytest.raises(ValueError, match="unknown kv_connector_extra_config keys"):
        ConnectorSettings.from_extra_config({"sokcet": "/x"})
    with pytest.raises(ValueError, match="only {tp_rank} and {pp_rank}"):
        ConnectorSettings.from_extra_config({"socket": "/x/{rank}.sock"})
    s = ConnectorSettings.from_extra_config({"socket": "/run/pf/tp{tp_rank}-pp{pp_rank}.sock"})
    from processfork.vllm._config import RankAddress
    assert s.socket_for(RankAddress(3, 1)) == "/run/pf/tp3-pp1.sock" and s.per_rank
    with pytest.raises(ValueError, match=r"needs one daemon per TP rank"):
        ConnectorSettings.from_extra_config({"socket": pf.socket}).check_parallelism(2, 1)


# ---- 2/3. the data path and the scheduler/worker flow ----------------------------------
@needs_layout
def test_scheduler_plans_saves_and_worker_publishes_pages(model_dir, pf):
    """Engine A (real Scheduler) prefills an 11-token prompt: the connector plans a save
    of its 2 whole blocks, the worker writes them into pages of its own branch, commits
    them, and the daemon then serves them to any session's lookup, bit-exact."""
    a = _engine(model_dir, pf.socket, seed=7)
    prompt = _prompt(11)
    a.add("a0", prompt)
    out = a.step()
    meta = out.kv_connector_metadata
    assert isinstance(meta, ProcessForkConnectorMetadata) and meta.loads == []
    assert meta.saves == [SaveSpec("a0", 0, prompt[:8], a.block_ids("a0")[:2], True,
                                   _ns(model_dir))]
    assert a.worker._worker.saving() == 0  # last spec: committed and released
    with pf.connect() as c:
        b = c.branch(prompt, namespace=_ns(model_dir))
        assert b.reused_tokens == 8
        pages = c.view(b).pages
        for pos in range(8):
            page = c.page(pages[pos // BLOCK_SIZE])  # [layers, 2, tokens, heads, dim]
            want = token_kv(7, prompt[pos], pos)
            got = torch.from_numpy(page[:, :, pos % BLOCK_SIZE].copy())
            assert torch.equal(got, want), pos
        c.free(b)
    a.finish("a0")
    a.step()
    assert a.connector._scheduler.held_branches() == 0
    a.close()


@needs_layout
@pytest.mark.parametrize("layout_a,layout_b", [("LBNHC", "BLHNC"), ("LBHNC", "LBNHC")])
def test_engine_b_in_another_process_loads_engine_a_blocks(model_dir, pf, layout_a, layout_b):
    a = _engine(model_dir, pf.socket, seed=3, layout=layout_a, kv_role="kv_producer")
    shared = _prompt(11)
    a.add("a0", shared)
    a.step()
    a_blocks = a.block_ids("a0")[:2]
    a.finish("a0")
    a.step()
    a.close()
    prompts = [
        shared + [900, 901],                 # shares 2 pages -> loads 8 tokens
        shared[:4] + [7, 7, 7, 7, 7, 7],     # shares 1 page -> 4
        [5] * 9,                             # shares none -> 0
        shared[:8],                          # all 8 cached, but 1 token must be computed -> 4
    ]
    r = subprocess.run([sys.executable, str(HERE / "_vllm_engine_b.py"), pf.socket, model_dir,
                        "3", layout_b, "cpu", json.dumps(prompts)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    hits = [x["hit"] for x in res["results"]]
    assert hits == [8, 4, 0, 4]
    assert all(x["exact"] for x in res["results"])
    assert res["results"][0]["has_sync_kv_loads"] is True
    assert res["results"][0]["blocks"] != a_blocks  # other block ids, other strides
    assert res["load_errors"] == [] and res["held_branches"] == 0
    with pf.connect() as c:  # everything released: only the prefix index holds pages
        st = c.stats()
        assert st.used_pages == st.cached_pages == 2
        c.gc(drop_cache=True)
        assert c.stats().used_pages == 0


@needs_layout
def test_chunked_prefill_saves_in_chunks_and_a_second_engine_reuses_all(model_dir, pf):
    a = _engine(model_dir, pf.socket, seed=5, max_batched_tokens=8)
    prompt = _prompt(21, base=300)
    a.add("a0", prompt)
    specs = []
    for _ in range(3):
        specs += a.step().kv_connector_metadata.saves
    assert [(s.first_token, len(s.tokens), s.last) for s in specs] == \
        [(0, 8, False), (8, 8, False), (16, 4, True)]
    a.finish("a0")
    a.step()
    assert a.worker._worker.saving() == 0
    b = _engine(model_dir, pf.socket, seed=5, prefix_caching=False)
    b.add("b0", prompt + [1])
    out = b.step()
    assert out.scheduled_new_reqs[0].num_computed_tokens == 20
    (load,) = out.kv_connector_metadata.loads
    assert isinstance(load, LoadSpec) and load.block_ids == b.block_ids("b0")[:5]
    for pos in range(20):
        assert torch.equal(b.slot_kv("b0", pos), token_kv(5, prompt[pos], pos)), pos
    assert b.load_errors == set()
    b.finish("b0")
    b.step()
    a.close()
    b.close()
    with pf.connect() as c:
        c.gc(drop_cache=True)
        assert c.stats().used_pages == 0


@needs_layout
def test_a_request_that_hit_saves_what_follows_the_hit(model_dir, pf):
    """Engine B loads A's 8 tokens, computes 13 more in chunks and saves its new whole
    blocks after the loaded ones (its save starts at token 0, so the worker's branch
    reuses A's pages and appends only B's)."""
    prompt = _prompt(11, base=600)
    _save_prompt(model_dir, pf.socket, prompt, seed=8)
    # 2-token chunks: the first step's computed tokens (8 loaded + 2) end inside the
    # hit's blocks, so the first save comes a step later and must still start at 0
    b = _engine(model_dir, pf.socket, seed=8, prefix_caching=False, max_batched_tokens=2)
    longer = prompt[:8] + _prompt(13, base=700)
    b.add("b0", longer)
    specs, hit = [], None
    for _ in range(7):
        out = b.step()
        if hit is None:
            hit = out.scheduled_new_reqs[0].num_computed_tokens
        specs += out.kv_connector_metadata.saves
    assert hit == 8
    assert [(s.first_token, len(s.tokens)) for s in specs] == [(0, 12), (12, 4), (16, 4)]
    assert [s.last for s in specs] == [False, False, True]
    b.finish("b0")
    b.step()
    b.close()
    with pf.connect() as c:
        br = c.branch(longer, namespace=_ns(model_dir))
        assert br.reused_tokens == 20
        pages = c.view(br).pages
        for pos in range(20):
            page = c.page(pages[pos // BLOCK_SIZE])
            got = torch.from_numpy(page[:, :, pos % BLOCK_SIZE].copy())
            assert torch.equal(got, token_kv(8, longer[pos], pos)), pos
        c.free(br)


@needs_layout
def test_aborted_request_releases_its_save_branch(model_dir, pf):
    a = _engine(model_dir, pf.socket, seed=2, max_batched_tokens=8)
    a.add("a0", _prompt(21))
    a.step()  # first chunk saved, the save branch stays open for the next chunk
    assert a.worker._worker.saving() == 1
    a.finish("a0")
    a.step()  # finished_req_ids reach the worker through get_transfer_results
    assert a.worker._worker.saving() == 0
    assert a.connector._scheduler.held_branches() == 0
    a.close()
    with pf.connect() as c:
        st = c.stats()
        assert st.used_pages == st.cached_pages == 2  # the committed first chunk
        c.gc(drop_cache=True)
        assert c.stats().used_pages == 0


@needs_layout
@pytest.mark.parametrize("block_size", [32, 128])
def test_cpu_backend_block_sizes_save_and_load(model_dir, block_size):
    """vLLM's CPU backend needs a block size that is a multiple of 32 (128 by default): with
    ``--block-size`` 32 or 128 and a daemon of ``page_tokens`` to match, engine A's whole
    blocks of a 2.5-block prompt become pages (chunked over several steps for 128), and
    engine B with a longer prompt loads exactly those blocks, bit-exact; a daemon whose
    page_tokens is 16 is refused, naming the geometry to use."""
    geometry = f"layers=2,kv_heads=2,head_dim=16,dtype=fp16,page_tokens={block_size}"
    prompt = _prompt(2 * block_size + block_size // 2, base=1000)
    with tempfile.TemporaryDirectory(prefix="pfvb-") as tmp:
        d = start_daemon(Path(tmp), geometry=geometry)
        try:
            a = _engine(model_dir, d.socket, seed=11, block_size=block_size)
            a.add("a0", prompt)
            saves = []
            for _ in range(3):  # 256 batched tokens a step: the prompt takes 1 or 2 steps
                saves += a.step().kv_connector_metadata.saves
            assert saves[0].first_token == 0 and saves[-1].last
            assert [t for s in saves for t in s.tokens] == prompt[:2 * block_size]
            a.finish("a0")
            a.step()
            a.close()
            with d.connect() as c:
                assert c.view(c.branch(prompt, namespace=_ns(model_dir))).n_tokens \
                    == 2 * block_size

            b = _engine(model_dir, d.socket, seed=11, block_size=block_size,
                        prefix_caching=False)
            b.add("b0", prompt + [5, 6, 7])
            out = b.step()
            assert out.scheduled_new_reqs[0].num_computed_tokens == 2 * block_size
            (load,) = out.kv_connector_metadata.loads
            assert load.block_ids == b.block_ids("b0")[:2]
            for pos in range(2 * block_size):
                assert torch.equal(b.slot_kv("b0", pos), token_kv(11, prompt[pos], pos)), pos
            assert b.load_errors == set()
            b.finish("b0")
            b.step()
            b.close()
        finally:
            stop_daemon(d)
        (Path(tmp) / "b16").mkdir()
        d = start_daemon(Path(tmp) / "b16",
                         geometry=GEOMETRY.replace("page_tokens=4", "page_tokens=16"))
        try:
            from _vllm_env import kv_cache_config, vllm_config
            cfg = vllm_config(model_dir, d.socket, block_size=block_size)
            with pytest.raises(ValueError, match=rf"page_tokens={block_size} \(= --block-size\)"
                               rf".*--geometry {geometry}$"):
                KVConnectorFactory.create_connector(cfg, KVConnectorRole.SCHEDULER,
                                                    kv_cache_config(16, block_size=block_size))
        finally:
            stop_daemon(d)


# ---- 4. errors -------------------------------------------------------------------------
def test_daemon_down_means_cache_misses_never_exceptions(model_dir, tmp_path):
    e = _engine(model_dir, str(tmp_path / "nobody.sock"))
    e.add("r0", _prompt(11))
    out = e.step()
    assert out.scheduled_new_reqs[0].num_computed_tokens == 0
    assert out.kv_connector_metadata.loads == []
    assert e.load_errors == set()
    e.finish("r0")
    e.step()
    e.close()


def _save_prompt(model_dir: str, socket: str, prompt: list[int], seed: int) -> None:
    a = _engine(model_dir, socket, seed=seed)
    a.add("a0", prompt)
    a.step()
    a.finish("a0")
    a.step()
    a.close()


@needs_layout
def test_daemon_dies_after_a_hit(model_dir, pf):
    """A host pool is memory every attached process has mapped: pages promised to vLLM
    still load after the daemon died; the save fails softly (a future miss), and the
    next lookups are misses, never exceptions into vLLM."""
    prompt = _prompt(11)
    _save_prompt(model_dir, pf.socket, prompt, seed=4)
    b = _engine(model_dir, pf.socket, seed=4, prefix_caching=False,
                extra={"retry_interval_s": 3600.0})
    b.add("b0", prompt + [1])
    out = b.scheduler.schedule()  # the hit is promised to vLLM here ...
    assert out.scheduled_new_reqs[0].num_computed_tokens == 8
    stop_daemon(pf)               # ... and the daemon dies before the worker copies
    b.run_worker(out)
    assert b.load_errors == set()
    for pos in range(8):
        assert torch.equal(b.slot_kv("b0", pos), token_kv(4, prompt[pos], pos))
    b.add("b1", prompt + [2])
    assert b.step().scheduled_new_reqs[0].num_computed_tokens == 0
    b.finish("b0")
    b.finish("b1")
    b.step()
    b.close()


@needs_layout
def test_pages_lost_before_allocation_become_failed_loads(model_dir, pf):
    """The daemon dies between the lookup and the block allocation: the scheduler role
    cannot read the pages it promised, so the worker reports those blocks through
    get_block_ids_with_load_errors (vLLM then recomputes or fails them). Driven with
    the scheduler's call sequence (vllm/v1/core/sched/scheduler.py: schedule() calls
    get_num_new_matched_tokens, then allocate_slots, then update_state_after_alloc,
    then build_connector_meta)."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.kv_cache_utils import KVCacheBlock
    from vllm.v1.request import Request

    prompt = _prompt(11)
    _save_prompt(model_dir, pf.socket, prompt, seed=6)
    b = _engine(model_dir, pf.socket, seed=6, prefix_caching=False,
                extra={"retry_interval_s": 3600.0})
    req = Request("b0", prompt + [1], SamplingParams(max_tokens=1), None)
    assert b.connector.get_num_new_matched_tokens(req, 0) == (8, False)
    stop_daemon(pf)
    blocks = KVCacheBlocks((tuple(KVCacheBlock(i) for i in (11, 12, 13, 14)),))
    b.connector.update_state_after_alloc(req, blocks, 8)
    out = b.scheduler.schedule()  # nothing scheduled; the connector still builds the step
    (load,) = out.kv_connector_metadata.loads
    assert load.block_ids == [11, 12] and load.pages == [None]
    b.run_worker(out)
    assert b.load_errors == {11, 12}
    b.connector.request_finished(req, [11, 12, 13, 14])
    b.close()


# ---- 5. routes over HTTP ---------------------------------------------------------------
class _Server:
    """vLLM-style FastAPI app with the endpoint plugin's routes, served by uvicorn on an
    ephemeral loopback port."""

    def __init__(self, plugin) -> None:
        import uvicorn
        from fastapi import FastAPI

        app = FastAPI()
        plugin.attach_router(app)
        self.sock = socketlib.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _store_prompt(c: processfork.Client, tokens: list[int]) -> None:
    """What the connector's worker leaves behind: the prompt's pages, committed."""
    b = c.branch(tokens)
    c.append(b, tokens[b.reused_tokens:])
    c.commit(b)
    c.free(b)


def test_routes_over_http(pf):
    import asyncio
    import requests
    from vllm.config import KVTransferConfig
    from vllm.plugins.endpoint_plugins.interface import EndpointPlugin

    from processfork.vllm.plugin import ProcessForkEndpointPlugin

    plugin = ProcessForkEndpointPlugin()
    assert isinstance(plugin, EndpointPlugin)
    args = Namespace(kv_transfer_config=KVTransferConfig(
        kv_connector="ProcessForkConnector", kv_connector_module_path="processfork.vllm",
        kv_role="kv_both", kv_connector_extra_config={"socket": pf.socket}))
    asyncio.run(plugin.init_state(None, Namespace(), args))
    srv = _Server(plugin)
    u = srv.url + "/v1/processfork"
    try:
        with pf.connect() as c:
            prompt = _prompt(10, base=50)
            _store_prompt(c, prompt)
            r = requests.post(u + "/snapshot", json={"prompt_token_ids": prompt, "name": "p"})
            assert r.status_code == 201, r.text
            snap = r.json()
            assert snap["n_tokens"] == 8 and snap["n_pages"] == 2 and snap["name"] == "p"
            assert snap["cid"].startswith("sha256:") and snap["created"] is True
            assert c.manifest(snap["cid"])["tokens"] == prompt[:8]

            r = requests.post(u + "/fork", json={"cid": snap["cid"], "n": 3})
            assert r.status_code == 201 and r.json()["source"] == snap["cid"]
            kids = r.json()["branches"]
            assert len(kids) == 3 and all(c.view(k).owner == 0 for k in kids)  # detached

            c.gc(drop_cache=True)  # the prefix index forgets unpinned pages
            r = requests.post(u + "/checkout", json={"cid": snap["cid"]})
            assert r.status_code == 201, r.text
            co = r.json()
            assert co["cid"] == snap["cid"] and co["prompt_token_ids"] == prompt[:8]
            probe = c.branch(prompt)  # what the connector's lookup finds now
            assert probe.reused_tokens == 8
            c.free(probe)

            other = _prompt(9, base=50)[:4] + [1, 2, 3, 4, 5]
            _store_prompt(c, other)
            r2 = requests.post(u + "/snapshot", json={"prompt_token_ids": other}).json()
            r = requests.post(u + "/merge", json={"from": r2["cid"], "into": snap["cid"]})
            assert r.status_code == 201, r.text
            m = r.json()
            assert m["outcome"] == "three-way" and m["recompute_tokens"] == other[4:8]

            r = requests.get(u + "/log/" + m["cid"])
            assert r.status_code == 200
            assert {e["cid"] for e in r.json()["entries"]} >= {m["cid"], snap["cid"]}
            r = requests.get(u + "/diff", params={"a": snap["cid"], "b": r2["cid"]})
            assert r.status_code == 200 and r.json()["common_tokens"] == 4

            # errors: {"error": {"code", "message"}}
            def err(resp, status, code):
                assert resp.status_code == status, resp.text
                assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
            err(requests.post(u + "/fork", data=b"{not json"), 400, "invalid_argument")
            err(requests.post(u + "/fork", json={"cid": snap["cid"], "n": 0}), 400,
                "invalid_argument")
            err(requests.post(u + "/fork", json={"cid": snap["cid"], "branch": 1, "n": 1}), 400,
                "invalid_argument")
            err(requests.post(u + "/snapshot", json={"prompt_token_ids": "abc"}), 400,
                "invalid_argument")
            err(requests.post(u + "/checkout", json={"cid": "sha256:" + "0" * 64}), 404,
                "not_found")
            err(requests.post(u + "/snapshot", json={"prompt_token_ids": [9, 9, 9, 9, 9]}),
                404, "not_found")
            err(requests.get(u + "/diff", params={"a": snap["cid"]}), 400, "invalid_argument")
            held = c.branch(prompt)  # a branch of another session (lease)
            err(requests.post(u + "/snapshot", json={"branch": held.id}), 409, "conflict")
            c.free(held)
            for k in kids + [co["branch"], m["branch"]]:
                c.free(k)
        stop_daemon(pf)
        err(requests.get(u + "/log/" + snap["cid"]), 503, "unavailable")
    finally:
        srv.close()
        plugin.close()


def test_entry_points_are_found_by_vllm(tmp_path):
    """The entry-point lines proposed for pyproject.toml, installed as a dist-info on
    sys.path, are found and loaded by vLLM's own plugin loaders."""
    dist = tmp_path / "processfork_vllm_entrypoints-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: processfork-vllm-entrypoints\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [vllm.general_plugins]
        processfork = processfork.vllm.plugin:register

        [vllm.endpoint_plugins]
        processfork = processfork.vllm.plugin:ProcessForkEndpointPlugin
        """))
    code = textwrap.dedent("""\
        import json
        from fastapi import FastAPI
        from vllm.plugins import load_general_plugins
        from vllm.plugins.endpoint_plugins.interface import attach_endpoint_plugins
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
        load_general_plugins()
        cls = KVConnectorFactory.get_connector_class_by_name("ProcessForkConnector")
        app = FastAPI()
        attach_endpoint_plugins(app, ("generate",))
        paths = sorted(r.path for r in app.routes if "processfork" in r.path)
        print(json.dumps({"cls": cls.__module__ + "." + cls.__name__, "paths": paths,
                          "plugins": [p.name for p in app.state.endpoint_plugins]}))
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]),
               VLLM_PLUGINS="processfork")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["cls"] == "processfork.vllm.connector.ProcessForkConnector"
    assert got["plugins"] == ["processfork"]
    assert got["paths"] == sorted("/v1/processfork/" + p for p in
                                  ("snapshot", "fork", "checkout", "merge", "log/{cid:path}",
                                   "diff"))


def test_adapter_logs_through_vllms_logging_config():
    """The adapter's messages go through vLLM's logging config, not Python's last-resort
    handler: each module's logger is "vllm.processfork", so once vLLM applies its config
    (``configure_logging``, as its engine does at start-up) a warning from it is written by
    vLLM's handler, in vLLM's "LEVEL date time [file:line] message" format, on
    VLLM_LOGGING_STREAM (stdout here)."""
    code = textwrap.dedent("""\
        from vllm.config.logging import LoggingConfig
        from vllm.logger import configure_logging
        configure_logging(LoggingConfig())
        from processfork.vllm import _scheduler, _worker, plugin
        for m in (plugin, _worker, _scheduler):
            assert m.logger.name == "vllm.processfork", m.logger.name
            m.logger.warning("pf-log-check %s", m.__name__.rsplit(".", 1)[-1])
        """)
    env = dict(os.environ, VLLM_CONFIGURE_LOGGING="1", VLLM_LOGGING_STREAM="ext://sys.stdout",
               NO_COLOR="1", PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("VLLM_LOGGING_CONFIG_PATH", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = [ln for ln in r.stdout.splitlines() if "pf-log-check" in ln]
    pattern = re.compile(r"WARNING \d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \[.+:\d+\] "
                         r"pf-log-check (plugin|_worker|_scheduler)$")
    assert len(lines) == 3 and all(pattern.search(ln) for ln in lines), r.stdout
    assert "pf-log-check" not in r.stderr


# ---- 6. GPU ----------------------------------------------------------------------------


@needs_layout
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_data_path(model_dir, tmp_path):
    d = start_cuda_daemon(tmp_path, GEOMETRY, capacity="64MiB")
    proc, sock = d.proc, d.socket
    try:
        a = _engine(model_dir, sock, seed=9, device="cuda", layout="LBHNC")
        prompt = _prompt(13)
        a.add("a0", prompt)
        a.step()
        a.finish("a0")
        a.step()
        a.close()
        r = subprocess.run([sys.executable, str(HERE / "_vllm_engine_b.py"), sock, model_dir,
                            "9", "LBNHC", "cuda", json.dumps([prompt + [1]])],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-4000:]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["results"][0]["hit"] == 12 and res["results"][0]["exact"]
        assert res["load_errors"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- namespaces (docs/adapter-vllm.md "Namespaces") ------------------------------------
# Requests whose KV differs beyond the token ids (cache salt, LoRA adapter, prompt embeds,
# model weights) never reuse each other's pages; requests equal in all of them do.
def _prefill(model_dir: str, socket: str, req_id: str, tokens: list[int], **kw) -> int:
    """Runs one request's prefill in a fresh engine (its saves commit at once); returns
    the tokens its first step took from the daemon."""
    e = Engine(model_dir, socket, seed=3)
    try:
        e.add(req_id, tokens, **kw)
        out = e.step()
        hit = out.scheduled_new_reqs[0].num_computed_tokens
        e.finish(req_id)
        e.step()
        return hit
    finally:
        e.close()


PROMPT = list(range(300, 311))  # 11 tokens: 2 whole blocks (8 tokens) are saved


def test_cache_salts_partition_the_cache(model_dir, pf):
    assert _prefill(model_dir, pf.socket, "s1", PROMPT, cache_salt="tenant-1") == 0
    assert _prefill(model_dir, pf.socket, "s2", PROMPT, cache_salt="tenant-2") == 0
    assert _prefill(model_dir, pf.socket, "s3", PROMPT, cache_salt="tenant-1") == 8
    assert _prefill(model_dir, pf.socket, "s4", PROMPT) == 0  # unsalted: another namespace
    assert _prefill(model_dir, pf.socket, "s5", PROMPT) == 8


def test_lora_adapters_partition_the_cache(model_dir, pf):
    from vllm.lora.request import LoRARequest

    a = LoRARequest("adapter-a", 1, "/nonexistent/a")
    b = LoRARequest("adapter-b", 2, "/nonexistent/b")
    assert _prefill(model_dir, pf.socket, "l1", PROMPT, lora_request=a) == 0
    assert _prefill(model_dir, pf.socket, "l2", PROMPT, lora_request=b) == 0
    assert _prefill(model_dir, pf.socket, "l3", PROMPT, lora_request=a) == 8
    assert _prefill(model_dir, pf.socket, "l4", PROMPT) == 0


def test_prompt_embeds_are_reused_only_for_identical_embeds(model_dir, pf):
    g = torch.Generator().manual_seed(5)
    embeds = torch.randn((11, 64), generator=g, dtype=torch.float32)
    other = embeds.clone()
    other[10, 3] += 1.0
    placeholders = [0] * 11
    assert _prefill(model_dir, pf.socket, "e1", placeholders, prompt_embeds=embeds) == 0
    assert _prefill(model_dir, pf.socket, "e2", placeholders, prompt_embeds=other) == 0
    assert _prefill(model_dir, pf.socket, "e3", placeholders,
                    prompt_embeds=embeds.clone()) == 8
    assert _prefill(model_dir, pf.socket, "e4", placeholders) == 0  # token ids 0: not embeds


def _model_with_weights(where: Path, weights: bytes) -> str:
    d = Path(tiny_model_dir(where))
    (d / "model.safetensors").write_bytes(weights)
    return str(d)


def test_two_models_with_identical_config_never_share_pages(pf, tmp_path):
    one = _model_with_weights(tmp_path / "one", b"\x01" * 4096)
    two = _model_with_weights(tmp_path / "two", b"\x02" * 4096)
    assert json.loads(Path(one, "config.json").read_text()) == \
        json.loads(Path(two, "config.json").read_text())
    assert _prefill(one, pf.socket, "m1", PROMPT) == 0
    assert _prefill(two, pf.socket, "m2", PROMPT) == 0
    assert _prefill(one, pf.socket, "m3", PROMPT) == 8
    # a copy of the same weights elsewhere is the same model
    same = _model_with_weights(tmp_path / "copy", b"\x01" * 4096)
    assert _prefill(same, pf.socket, "m4", PROMPT) == 8
    # an explicit fingerprint overrides the computed one
    assert _prefill(two, pf.socket, "m5", PROMPT) == 8
    e = Engine(two, pf.socket, seed=3, extra={"model_fingerprint": "pinned"})
    try:
        e.add("m6", PROMPT)
        assert e.step().scheduled_new_reqs[0].num_computed_tokens == 0
    finally:
        e.close()


def test_saved_pages_are_in_the_model_namespace(model_dir, pf):
    _prefill(model_dir, pf.socket, "n1", PROMPT)
    with pf.connect() as c:
        assert c.branch(PROMPT, namespace=_ns(model_dir)).reused_tokens == 8
        assert c.branch(PROMPT).reused_tokens == 0


def test_transformers_cache_pages_are_reused_by_vllm_of_the_same_model_dir(pf, tmp_path):
    """A transformers ProcessForkCache of a model loaded from a directory commits its prompt
    in that model's namespace; a vLLM engine of the same directory hits those pages, one
    of another directory (same config, other weights) does not."""
    transformers = pytest.importorskip("transformers")
    from processfork.transformers import ProcessForkCache

    def saved_model(where: Path, seed: int) -> str:
        d = Path(tiny_model_dir(where))
        torch.manual_seed(seed)
        cfg = transformers.AutoConfig.from_pretrained(d)
        transformers.LlamaForCausalLM(cfg).to(torch.float16).save_pretrained(d)
        return str(d)

    here = saved_model(tmp_path / "here", 1)
    other = saved_model(tmp_path / "other", 2)
    model = transformers.LlamaForCausalLM.from_pretrained(here, torch_dtype=torch.float16)
    model.generation_config.pad_token_id = 0
    ids = torch.tensor([PROMPT])
    with pf.connect() as c, ProcessForkCache(c, model) as cache:
        model(ids, past_key_values=cache, use_cache=True)
        cache.commit()
    assert _prefill(other, pf.socket, "t1", PROMPT) == 0
    assert _prefill(here, pf.socket, "t2", PROMPT) == 8


@needs_layout
def test_commit_is_fenced_and_the_fence_is_skipped_on_cpu(model_dir, pf, monkeypatch):
    """processfork.h "GPU fences": the worker waits for torch's current stream of the KV
    caches' device after its copies and before the commit that seals the pages; on vLLM-CPU
    the fence is skipped (returns False) and the committed pages hold the KV."""
    from processfork.vllm import _layout

    events = record_fences_and_seals(monkeypatch, _layout, ("commit",))
    a = _engine(model_dir, pf.socket, seed=9)
    prompt = _prompt(11)
    a.add("a0", prompt)
    a.step()
    assert events == [("fence", "cpu", False), ("commit",)]
    with pf.connect() as c:
        b = c.branch(prompt, namespace=_ns(model_dir))
        assert b.reused_tokens == 8
        page = c.page(c.view(b).pages[0])
        assert torch.equal(torch.from_numpy(page[:, :, 1].copy()), token_kv(9, prompt[1], 1))
        c.free(b)
    a.finish("a0")
    a.step()
    a.close()
