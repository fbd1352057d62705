"""A real SGLang 0.5.23 server on this CPU-only machine, with the ProcessFork adapter.

What runs (docs/adapter-sglang.md, "Running SGLang on a CPU-only machine"):
``python -m processfork.sglang`` (the adapter's launcher: SGLang's own server with the
``/processfork/*`` routes mounted) on ``--device cpu``, SGLang's ``torch_native`` attention
backend, a tiny random-weight Llama made locally (:mod:`_tiny_llama`), one OpenMP thread,
and a real daemon. transformers (in this process, ``ProcessForkCache``) writes a prompt's
pages into the daemon; then over HTTP:

- SGLang's ``/generate`` answers with the tokens transformers computes for the same
  checkpoint (greedy), and its logprobs equal transformers' (fp32 rounding); SGLang's own
  prefix-cache hit on the same prompt gives the same tokens;
- every ``/processfork`` route on the pages transformers wrote (snapshot, fork, checkout,
  merge, log, diff) and their error answers; the server's ``/generate`` is unchanged by
  the routes' traffic.

What does not run here: SGLang's hierarchical cache (and so the ``ProcessForkStorage``
HiCache backend) on ``--device cpu``. :func:`test_hicache_on_a_cpu_device` checks the
reason in SGLang's own code and skips, saying it; the backend itself is tested against
SGLang's storage classes in test_sglang_adapter.py.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
requests = pytest.importorskip("requests")
pytest.importorskip("sglang", reason="SGLang is not installed (scripts/engines.sh)")

import processfork  # noqa: E402
from processfork.transformers import cache_namespace  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tiny_llama  # noqa: E402
from _real_engines import (ServerProcess, TransformersRef, close as _close,  # noqa: E402
                           free_port, prompt as _prompt)
from conftest import start_daemon, stop_daemon  # noqa: E402

PAGE = 16           # SGLang's --page-size == the daemon's page_tokens
STARTUP_S = 600     # a server start on 2 shared cores: imports, model load, warm-up request
# Modules SGLang's HTTP server imports beyond the adapter-facing ones (scripts/engines.sh
# installs them): import name -> package.
SERVER_MODULES = {"torchvision": "torchvision", "dill": "dill", "sentencepiece": "sentencepiece",
                  "compressed_tensors": "compressed-tensors", "gguf": "gguf",
                  "setproctitle": "setproctitle", "jsonschema": "jsonschema",
                  "soundfile": "soundfile", "multipart": "python-multipart"}


def _server_modules_or_skip() -> None:
    missing = [pkg for mod, pkg in SERVER_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        pytest.skip(f"SGLang's HTTP server needs {', '.join(missing)} (not installed; "
                    "scripts/engines.sh installs them, PF_ENGINES=0 skips it)")


class _Server(ServerProcess):
    """``python -m processfork.sglang`` as a child process; ready when SGLang logs that it
    served its warm-up request."""

    READY = b"The server is fired up and ready to roll!"

    def __init__(self, model: str, sock: str, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        # One OpenMP thread (bit-stable floats), no hub, no usage reports.
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", SGLANG_NO_USAGE_STATS="1")
        cmd = [sys.executable, "-m", "processfork.sglang", "--processfork-socket", sock,
               "--model-path", model, "--device", "cpu", "--dtype", "float32",
               "--skip-tokenizer-init", "--host", "127.0.0.1", "--port", str(self.port),
               "--page-size", str(PAGE), "--mem-fraction-static", "0.05",
               "--context-length", "2048", "--random-seed", "0", *extra]
        super().__init__("SGLang server", cmd, env, log, self.READY, STARTUP_S)

    def generate(self, input_ids: list[int], max_new_tokens: int = 4) -> dict:
        r = requests.post(self.url + "/generate", timeout=300, json={
            "input_ids": input_ids, "return_logprob": True,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0,
                                "ignore_eos": True}})
        assert r.status_code == 200, r.text
        out = r.json()
        meta = out["meta_info"]
        return {"tokens": out["output_ids"],
                "logprobs": [lp for lp, _tok, _text in meta["output_token_logprobs"]],
                "cached": int(meta.get("cached_tokens", 0))}


def test_sglang_cpu_server_with_the_launcher_and_every_route(tmp_path_factory):
    _server_modules_or_skip()
    model = _tiny_llama.make(tmp_path_factory.mktemp("model") / "tiny-llama")
    hf = TransformersRef(model)
    P = _prompt(1, 3 * PAGE + 5)        # three whole pages
    Q = P[:PAGE] + _prompt(2, 2 * PAGE + 3)  # shares P's first page
    want_tokens, want_lps = hf.greedy(P, 4)
    with tempfile.TemporaryDirectory(prefix="pfsc-") as tmp:
        where = Path(tmp)
        daemon = start_daemon(where, geometry=_tiny_llama.geometry(PAGE), capacity="64MiB",
                              chunk="2MiB")
        server = None
        try:
            with processfork.connect(daemon.socket) as c:
                hf.write_prefix(c, P)
                hf.write_prefix(c, Q)
                probe = c.branch(P, namespace=cache_namespace(hf.model))
                assert probe.reused_tokens == 3 * PAGE
                c.free(probe)

            server = _Server(model, daemon.socket, where / "server.log")

            # The server runs the checkpoint: transformers' greedy tokens and logprobs.
            first = server.generate(P)
            assert first["tokens"] == want_tokens, server.tail()
            assert _close(first["logprobs"], want_lps, 1e-4), (first, want_lps)
            # SGLang's own prefix cache (its radix tree, whole pages): the same answer.
            again = server.generate(P)
            assert again["cached"] == 3 * PAGE, again
            assert again["tokens"] == first["tokens"]
            assert _close(again["logprobs"], first["logprobs"], 1e-4)

            u = server.url + "/processfork"

            def call(method: str, path: str, want: int, **kw) -> dict:
                r = requests.request(method, u + path, timeout=60, **kw)
                assert r.status_code == want, (path, r.status_code, r.text)
                return r.json()

            snap = call("POST", "/snapshot", 201, json={"input_ids": P, "name": "ctx"})
            assert (snap["n_tokens"], snap["n_pages"]) == (3 * PAGE, 3)
            assert snap["requested_tokens"] == len(P) and snap["name"] == "ctx"
            kids = call("POST", "/fork", 201, json={"cid": snap["cid"], "n": 2})
            assert kids["source"] == snap["cid"] and len(kids["branches"]) == 2
            co = call("POST", "/checkout", 201, json={"cid": snap["cid"]})
            assert co["cid"] == snap["cid"] and co["input_ids"] == P[:3 * PAGE]
            with processfork.connect(daemon.socket) as c:
                pages = c.view(kids["branches"][0]).pages
                assert len(pages) == 3 and c.view(co["branch"]).pages == pages

            other = call("POST", "/snapshot", 201, json={"input_ids": Q})
            assert other["n_tokens"] == 3 * PAGE
            merged = call("POST", "/merge", 201, json={"from": other["cid"],
                                                       "into": snap["cid"]})
            assert merged["outcome"] == "three-way" and merged["common_tokens"] == PAGE
            assert merged["recompute_tokens"] == Q[PAGE:3 * PAGE]
            log = call("GET", "/log/" + merged["cid"], 200)
            assert {e["cid"] for e in log["entries"]} >= {merged["cid"], snap["cid"]}
            diff = call("GET", "/diff", 200, params={"a": snap["cid"], "b": other["cid"]})
            assert diff["common_tokens"] == PAGE and len(diff["shared_pages"]) == 1

            # Bad requests: a JSON error, nothing changed. The server skips its tokenizer,
            # so a text snapshot has none to use.
            assert call("POST", "/fork", 400, json={"cid": snap["cid"], "n": 0}
                        )["error"]["code"] == "invalid_argument"
            assert call("POST", "/snapshot", 400, json={"text": "t5 t6"}
                        )["error"]["code"] == "invalid_argument"
            assert call("POST", "/checkout", 404, json={"cid": "sha256:" + "0" * 64}
                        )["error"]["code"] == "not_found"
            assert call("POST", "/snapshot", 404, json={"input_ids": _prompt(7, 40)}
                        )["error"]["code"] == "not_found"

            # The same prompt again: SGLang's answer is unchanged by the routes' traffic.
            last = server.generate(P)
            assert last["tokens"] == first["tokens"]
            with processfork.connect(daemon.socket) as c:
                for b in kids["branches"] + [co["branch"], merged["branch"]]:
                    c.free(b)
        finally:
            if server is not None:
                server.close()
            stop_daemon(daemon)


# What stops SGLang 0.5.23's hierarchical cache on --device cpu (docs/adapter-sglang.md,
# "Running SGLang on a CPU-only machine"; paths under sglang/srt/).
HICACHE_CPU_REASON = (
    "SGLang 0.5.23's hierarchical cache cannot run on --device cpu, so ProcessForkStorage "
    "(its L3 backend) is not reached by a CPU server: (1) at start, the host (L2) pool is "
    "built with MHATokenToKVPoolHost's default pin_memory=True "
    "(mem_cache/hybrid_cache/hybrid_pool_assembler.py:224 passes none), a 'cpu' transfer "
    "device maps to alloc_with_host_register (mem_cache/pool_host/common.py "
    "ALLOC_MEMORY_FUNCS; mha.py:344), whose _cuda_host_register calls torch.cuda.cudart() "
    "(common.py:147): 'RuntimeError: Found no NVIDIA driver on your system'; (2) past that, "
    "the first backup of a whole page to the host pool calls transfer_kv_all_layer_lf_pf "
    "(mem_cache/pool_host/mha.py:647), which mha.py imports only on CUDA/ROCm "
    "(sgl_kernel.kvcacheio) or XPU: 'NameError: name 'transfer_kv_all_layer_lf_pf' is not "
    "defined' in the scheduler, and l2_transfer.py:123's error path then calls "
    "synchronize() on a torch.cpu.Stream, which has none. test_sglang_adapter.py drives "
    "ProcessForkStorage through SGLang's storage classes instead.")


def test_hicache_on_a_cpu_device():
    """Checks, in SGLang's own modules, the reason the HiCache server test cannot run here,
    then skips with it. Fails if SGLang changes so that the reason no longer holds (then a
    HiCache CPU server test belongs here)."""
    _server_modules_or_skip()
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this test checks why SGLang's HiCache cannot "
                    "run on a machine without one")
    import inspect

    from sglang.srt.mem_cache.pool_host import common, mha

    assert inspect.signature(mha.MHATokenToKVPoolHost.__init__).parameters[
        "pin_memory"].default is True
    # (1) the host pool's allocation registers it with CUDA
    assert common.ALLOC_MEMORY_FUNCS["cpu"] is common.alloc_with_host_register
    with pytest.raises(RuntimeError, match="NVIDIA driver"):
        common._cuda_host_register(torch.empty(64))
    # (2) no device<->host copy for the host pool's layouts off CUDA/ROCm/XPU
    present = [n for n in ("transfer_kv_all_layer_lf_pf", "transfer_kv_per_layer_pf_lf",
                           "transfer_kv_all_layer", "transfer_kv_per_layer",
                           "transfer_kv_direct", "transfer_kv_all_layer_direct_lf_pf",
                           "transfer_kv_all_layer_lf_ph") if hasattr(mha, n)]
    assert present == [], present
    assert not hasattr(torch.cpu.Stream(), "synchronize")
    pytest.skip(HICACHE_CPU_REASON)
