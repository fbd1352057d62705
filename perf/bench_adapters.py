#!/usr/bin/env python3
"""Benchmark of the Python adapters on this machine (DESIGN §7; perf/README.md).

    .venv/bin/python perf/bench_adapters.py [--tokens 256,1024,2048] [--reps 20]
        [--threads 1] [--no-child] [--out FILE]

Two parts, each side by side in one run, against a real daemon (`processfork serve`, the
CLI bundled with the installed package or $PF_CLI, started the way
tests/python/conftest.py's start_daemon does and stopped at the end):

1. transformers continuation (processfork.transformers.ProcessForkCache). A
   LlamaForCausalLM from a LlamaConfig with seeded random weights. For each prompt length
   T a parent prefills the first T-1 tokens into a ProcessForkCache and snapshots it; then
   (a) restore: ProcessForkCache.from_snapshot (checkout + view + one kv_load of the
       pages into the dense buffers) and a 1-token forward of token T: the next-token
       logits, as a new process continuing the generation would get them;
   (b) re-prefill: a forward of all T tokens with a DynamicCache, last logits;
   (c) the parent's snapshot (first snapshot: digests every page) and fork(n); the
       restored cache's snapshot after its one step; pool pages before/after fork vs the
       bytes n copies would take.
   (a) is timed in this process: it is exactly the path a child runs after it has
   imported torch, built the model and connected (all of which re-prefill needs too).
   One real child process (--no-child to skip) measures the same restore in a fresh
   interpreter and spawn-to-logits wall time. Correctness (not timed): (a)'s logits equal
   a DynamicCache run split the same way (T-1 then 1) exactly, and (b)'s within fp32
   tolerance (a one-pass prefill multiplies in another order).
2. layout copies: Client.kv_store / kv_load of vLLM FlashAttention-shaped CPU tensors
   (per layer (2, blocks, 16, 8, 128) bf16, 32 layers) into / out of pages appended to a
   branch, in GB/s, next to torch's own copy of the same bytes (dst.copy_(src) per layer).

Prints a short summary on stderr and JSON with every number on stdout or --out FILE.
Timings are wall-clock (time.perf_counter) p50/p99 over repetitions after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree


# --- helpers ---------------------------------------------------------------------------------

def stats_us(samples_s):
    """p50/p99/min/max/mean in µs of a list of seconds (p99 = nearest rank)."""
    if not samples_s:
        return None
    xs = sorted(s * 1e6 for s in samples_s)
    n = len(xs)

    def q(p):
        return xs[min(n - 1, max(0, int(round(p * (n - 1)))))]
    return {"n": n, "p50_us": round(q(0.50), 2), "p99_us": round(q(0.99), 2),
            "min_us": round(xs[0], 2), "max_us": round(xs[-1], 2),
            "mean_us": round(sum(xs) / n, 2)}


def fmt_us(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.2f s" % (v / 1e6)
    if v >= 1e3:
        return "%.1f ms" % (v / 1e3)
    return "%.0f us" % v


def machine(torch):
    """The harness's machine description (run_benchmarks.machine_info) plus torch's."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run_benchmarks import machine_info  # noqa: PLC0415 (sibling script)

    m = machine_info()
    m.update({"python": platform.python_version(), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(),
              "torch_interop_threads": torch.get_num_interop_threads()})
    return m


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return ""


class Daemon:
    """`processfork serve` as a subprocess, as tests/python/conftest.py's start_daemon."""

    def __init__(self, where: Path, geometry: str, capacity: str, chunk: str, cli: str):
        self.sock = str(where / "pf.sock")
        ready = where / "ready"
        self.log = where / "daemon.log"
        self.cmd = [cli, "serve", "--device", "host", "--geometry", geometry,
                    "--capacity", capacity, "--chunk", chunk, "--socket", self.sock,
                    "--http", "off", "--ready-file", str(ready)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("daemon did not start (%s):\n%s" %
                                   (" ".join(self.cmd), self.log.read_text()))
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def build_model(torch, a):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=2 * a.hidden,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
                      max_position_embeddings=max(4096, a.max_t + 16), bos_token_id=1,
                      eos_token_id=None, pad_token_id=None)
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.eval()
    model.generation_config.do_sample = False
    return model


def prompt(torch, t, vocab, seed):
    g = torch.Generator().manual_seed(seed + t)
    return torch.randint(3, vocab, (1, t), generator=g)


# --- part 1: transformers --------------------------------------------------------------------

def bench_transformers(a, torch, log, tmp):
    import processfork
    from transformers import DynamicCache
    from processfork.transformers import ProcessForkCache, geometry_for

    model = build_model(torch, a)
    geometry = geometry_for(model, page_tokens=a.page_tokens)
    (tmp / "tf").mkdir()
    d = Daemon(tmp / "tf", geometry, a.capacity, "4MiB", a.cli)
    out = {"model": {"class": "LlamaForCausalLM", "layers": a.layers, "hidden": a.hidden,
                     "heads": a.heads, "kv_heads": a.kv_heads, "vocab": a.vocab,
                     "intermediate": 2 * a.hidden, "dtype": "fp32", "seed": a.seed,
                     "params": sum(p.numel() for p in model.parameters())},
           "geometry": geometry, "fork_n": a.fork_n, "rows": [], "child": None,
           "daemon": " ".join(d.cmd[:1] + ["serve"] + d.cmd[2:6]) + " ..."}
    try:
        with processfork.connect(d.sock) as client, torch.inference_mode():
            out["page_bytes"] = client.stats().page_bytes
            page_bytes = out["page_bytes"]
            # warm-up: allocator, kernels, the token hook
            w = prompt(torch, 64, a.vocab, a.seed)
            model(input_ids=w, past_key_values=DynamicCache(), use_cache=True)
            with ProcessForkCache(client, model) as c:
                model(input_ids=w, past_key_values=c, use_cache=True)
            for T in a.tokens:
                log("transformers: T=%d" % T)
                ids = prompt(torch, T, a.vocab, a.seed)
                prefix, last = ids[:, :T - 1], ids[:, T - 1:]
                reps_prefill = a.prefill_reps if T < a.max_t else max(1, a.prefill_reps_max)
                # (b) re-prefill of all T tokens, DynamicCache
                rp, ref_logits = [], None
                for _ in range(reps_prefill):
                    t0 = time.perf_counter()
                    o = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
                    lg = o.logits[0, -1]
                    rp.append(time.perf_counter() - t0)
                    ref_logits = lg.clone()
                # the parent: ProcessForkCache prefill of T-1 tokens (stores every page) and
                # its first snapshot (digests every page); the first one is kept
                pf_prefill, snap_first, keep, cid = [], [], None, None
                for r in range(reps_prefill):
                    t0 = time.perf_counter()
                    c = ProcessForkCache(client, model)
                    model(input_ids=prefix, past_key_values=c, use_cache=True)
                    t1 = time.perf_counter()
                    s = c.snapshot()
                    t2 = time.perf_counter()
                    pf_prefill.append(t1 - t0)
                    snap_first.append(t2 - t1)
                    if keep is None:
                        keep, cid = c, s.cid
                    else:
                        if s.cid != cid:
                            client.unpin(s.cid)
                        c.close()
                parent = keep
                n_pages = client.view(parent.branch).n_pages
                # exact reference for (a): DynamicCache split the same way (T-1, then 1)
                dc = DynamicCache()
                model(input_ids=prefix, past_key_values=dc, use_cache=True)
                split_logits = model(input_ids=last, past_key_values=dc,
                                     use_cache=True).logits[0, -1].clone()
                del dc
                # (c) fork(n) of the parent cache: metadata only
                before = client.stats().used_pages
                fk, after_fork = [], None
                for r in range(a.fork_reps):
                    t0 = time.perf_counter()
                    kids = parent.fork(a.fork_n)
                    fk.append(time.perf_counter() - t0)
                    if after_fork is None:
                        after_fork = client.stats().used_pages
                    for k in kids:
                        client.free(k)
                # (a) restore from the snapshot + 1-token forward; then the restored
                # cache's snapshot after its one step (untimed for (a))
                rs, fw, tot, snap_step, a_logits = [], [], [], [], None
                for r in range(a.reps + 1):
                    t0 = time.perf_counter()
                    c = ProcessForkCache.from_snapshot(client, cid, model)
                    t1 = time.perf_counter()
                    lg = model(input_ids=last, past_key_values=c, use_cache=True).logits[0, -1]
                    t2 = time.perf_counter()
                    s2 = c.snapshot()
                    t3 = time.perf_counter()
                    client.unpin(s2.cid)
                    if r == 0:  # warm-up rep (first checkout of this snapshot, page faults)
                        a_logits = lg.clone()
                        assert c.tokens == prefix[0].tolist() + last[0].tolist()
                    else:
                        rs.append(t1 - t0)
                        fw.append(t2 - t1)
                        tot.append(t2 - t0)
                        snap_step.append(t3 - t2)
                    c.close()
                exact = bool(torch.equal(a_logits, split_logits))
                close = bool(torch.allclose(a_logits, ref_logits, rtol=1e-4, atol=1e-5))
                maxdiff = float((a_logits - ref_logits).abs().max())
                if not (exact and close):
                    raise AssertionError(
                        "T=%d: restored logits differ: equal to the split DynamicCache run: %s; "
                        "allclose to the re-prefill: %s (max |diff| %g)" % (T, exact, close,
                                                                           maxdiff))
                kv_bytes = 2 * a.layers * a.kv_heads * (a.hidden // a.heads) * 4 * (T - 1)
                row = {
                    "tokens": T, "cached_tokens": T - 1, "pages": n_pages,
                    "kv_bytes": kv_bytes,
                    "restore_first_logits": stats_us(tot),
                    "restore_only": stats_us(rs), "restore_forward_1_token": stats_us(fw),
                    "reprefill": stats_us(rp),
                    "ratio_reprefill_over_restore_p50": round(
                        stats_us(rp)["p50_us"] / stats_us(tot)["p50_us"], 2),
                    "pfcache_prefill_store": stats_us(pf_prefill),
                    "snapshot_first": stats_us(snap_first),
                    "snapshot_after_step": stats_us(snap_step),
                    "fork": stats_us(fk),
                    "memory": {"used_pages_before_fork": before,
                               "used_pages_after_fork": after_fork,
                               "pages_added_by_fork": after_fork - before,
                               "page_bytes": page_bytes,
                               "copy_bytes_for_n": a.fork_n * n_pages * page_bytes,
                               "copy_kv_bytes_for_n": a.fork_n * kv_bytes},
                    "check": {"restored_equals_split_dynamiccache": exact,
                              "restored_allclose_reprefill": close,
                              "max_abs_diff_vs_reprefill": maxdiff},
                }
                out["rows"].append(row)
                log("  restore+1 token %s (restore %s), re-prefill %s: %.1fx; snapshot %s, "
                    "fork(%d) %s, pages added by fork %d (a copy: %.1f MiB)" % (
                        fmt_us(row["restore_first_logits"]["p50_us"]),
                        fmt_us(row["restore_only"]["p50_us"]),
                        fmt_us(row["reprefill"]["p50_us"]),
                        row["ratio_reprefill_over_restore_p50"],
                        fmt_us(row["snapshot_first"]["p50_us"]), a.fork_n,
                        fmt_us(row["fork"]["p50_us"]), row["memory"]["pages_added_by_fork"],
                        row["memory"]["copy_bytes_for_n"] / 2 ** 20))
                if a.child and T == a.max_t:
                    out["child"] = child_measurement(a, d.sock, cid, ids, a_logits, tmp, log,
                                                     torch)
                parent.close()
                client.unpin(cid)
    finally:
        d.stop()
    return out


def child_measurement(a, sock, cid, ids, a_logits, tmp, log, torch):
    """One real child process: restores from the snapshot and computes the next-token logits;
    spawn-to-logits wall time and the child's own breakdown."""
    ids_file = tmp / "child_ids.json"
    res_file = tmp / "child_out.pt"
    ids_file.write_text(json.dumps(ids[0].tolist()))
    argv = [sys.executable, os.path.abspath(__file__), "--child-run", sock, cid, str(ids_file),
            str(res_file), "--threads", str(a.threads), "--layers", str(a.layers), "--hidden",
            str(a.hidden), "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--vocab",
            str(a.vocab), "--seed", str(a.seed), "--tokens", str(a.max_t)]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError("child failed (%d):\n%s" % (r.returncode, r.stderr[-2000:]))
    got = torch.load(res_file)
    exact = bool(torch.equal(got["logits"], a_logits))
    if not exact:
        raise AssertionError("the child's logits differ from the in-process restore's")
    out = {"tokens": int(ids.shape[1]), "spawn_to_logits_us": round(wall * 1e6, 1),
           "logits_equal_in_process_restore": exact}
    out.update(got["times_us"])
    log("  child process (T=%d): spawn to logits %s; inside: imports %s, model %s, connect "
        "%s, restore %s, forward %s" % (out["tokens"], fmt_us(out["spawn_to_logits_us"]),
                                        fmt_us(out["imports_us"]), fmt_us(out["model_us"]),
                                        fmt_us(out["connect_us"]), fmt_us(out["restore_us"]),
                                        fmt_us(out["forward_us"])))
    return out


def child_run(a, t_start):
    sock, cid, ids_file, res_file = a.child_run
    import torch
    torch.set_num_threads(a.threads)
    import processfork
    from processfork.transformers import ProcessForkCache
    t_imp = time.perf_counter()
    a.max_t = a.tokens[-1]
    model = build_model(torch, a)
    ids = torch.tensor([json.loads(Path(ids_file).read_text())])
    t_model = time.perf_counter()
    with processfork.connect(sock) as client, torch.inference_mode():
        t_conn = time.perf_counter()
        c = ProcessForkCache.from_snapshot(client, cid, model)
        t_rest = time.perf_counter()
        lg = model(input_ids=ids[:, -1:], past_key_values=c, use_cache=True).logits[0, -1]
        t_fwd = time.perf_counter()
        assert c.tokens == ids[0].tolist()
        c.close()
    torch.save({"logits": lg.clone(), "times_us": {
        "imports_us": round((t_imp - t_start) * 1e6, 1),
        "model_us": round((t_model - t_imp) * 1e6, 1),
        "connect_us": round((t_conn - t_model) * 1e6, 1),
        "restore_us": round((t_rest - t_conn) * 1e6, 1),
        "forward_us": round((t_fwd - t_rest) * 1e6, 1)}}, res_file)
    return 0


# --- part 2: layout copies -------------------------------------------------------------------

def bench_layout(a, torch, log, tmp):
    import processfork
    from processfork import KVLayout

    L, H, D, BT, NB = a.kv_layers, a.kv_heads_layout, 128, 16, a.blocks
    geometry = "layers=%d,kv_heads=%d,head_dim=%d,dtype=bf16,page_tokens=%d" % (L, H, D, BT)
    page_bytes = L * 2 * BT * H * D * 2
    need = NB * page_bytes
    cap = "%dMiB" % (max(256, 2 * need // 2 ** 20 + 64))
    (tmp / "kv").mkdir()
    d = Daemon(tmp / "kv", geometry, cap, "64MiB", a.cli)
    out = {"geometry": geometry, "layers": L, "blocks": NB, "block_tokens": BT, "kv_heads": H,
           "head_dim": D, "dtype": "bf16", "page_bytes": page_bytes,
           "tensor_shape_per_layer": [2, NB, BT, H, D], "reps": a.layout_reps}
    try:
        with processfork.connect(d.sock) as client:
            g = torch.Generator().manual_seed(a.seed)
            src = [torch.randn((2, NB, BT, H, D), generator=g).to(torch.bfloat16)
                   for _ in range(L)]
            dst = [torch.zeros_like(t) for t in src]
            total = sum(t.numel() * t.element_size() for t in src)
            lay_src = KVLayout.from_torch([t[0] for t in src], [t[1] for t in src],
                                          block_axis=0, token_axis=1, head_axis=2)
            lay_dst = KVLayout.from_torch([t[0] for t in dst], [t[1] for t in dst],
                                          block_axis=0, token_axis=1, head_axis=2)
            b = client.branch()
            n_tok = NB * BT
            res = client.append_ex(b, list(range(1, n_tok + 1)))
            runs = [(r.page, r.first_slot, r.first_token, r.count) for r in res.runs]
            st, ld, cp = [], [], []
            for r in range(a.layout_reps + 1):  # rep 0: warm-up (page faults)
                t0 = time.perf_counter()
                nb = client.kv_store(lay_src, runs)
                t1 = time.perf_counter()
                nl = client.kv_load(lay_dst, runs)
                t2 = time.perf_counter()
                for s_, d_ in zip(src, dst):
                    d_.copy_(s_)
                t3 = time.perf_counter()
                if r == 0:
                    assert nb == total and nl == total, (nb, nl, total)
                    # correctness once: the store + load round trip gives the tensors back
                    ok = all(torch.equal(s_, d_) for s_, d_ in zip(src, dst))
                    assert ok, "kv_store + kv_load did not round-trip the tensors"
                    p0 = client.page_torch(runs[0][0])
                    assert torch.equal(p0[0, 0, 0], src[0][0, 0, 0]), "page layout mismatch"
                else:
                    st.append(t1 - t0)
                    ld.append(t2 - t1)
                    cp.append(t3 - t2)
            client.free(b)

            def gbps(samples):
                s = sorted(samples)
                return {"gbps_p50": round(total / s[len(s) // 2] / 1e9, 2),
                        "gbps_max": round(total / s[0] / 1e9, 2),
                        "gbps_min": round(total / s[-1] / 1e9, 2), "time": stats_us(samples)}
            out.update({"bytes": total, "runs": len(runs), "kv_store": gbps(st),
                        "kv_load": gbps(ld), "torch_copy": gbps(cp),
                        "roundtrip_equal": True})
            base = out["torch_copy"]["gbps_p50"]
            out["kv_store_fraction_of_torch_copy"] = round(out["kv_store"]["gbps_p50"] / base, 3)
            out["kv_load_fraction_of_torch_copy"] = round(out["kv_load"]["gbps_p50"] / base, 3)
            log("layout copies (%d layers x %s bf16 = %.0f MiB): kv_store %.2f GB/s (%.0f%%), "
                "kv_load %.2f GB/s (%.0f%%), torch copy_ %.2f GB/s" % (
                    L, "x".join(map(str, out["tensor_shape_per_layer"])), total / 2 ** 20,
                    out["kv_store"]["gbps_p50"], 100 * out["kv_store_fraction_of_torch_copy"],
                    out["kv_load"]["gbps_p50"], 100 * out["kv_load_fraction_of_torch_copy"],
                    base))
    finally:
        d.stop()
    return out


# --- main ------------------------------------------------------------------------------------

def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", default="256,1024,2048",
                    help="prompt lengths T, comma-separated (the last is the largest)")
    ap.add_argument("--max-tokens", type=int, default=0,
                    help="drop every T above this (0: keep all)")
    ap.add_argument("--reps", type=int, default=20, help="restore repetitions per T")
    ap.add_argument("--prefill-reps", type=int, default=5,
                    help="re-prefill and parent-prefill repetitions per T")
    ap.add_argument("--prefill-reps-max", type=int, default=3,
                    help="the same, at the largest T")
    ap.add_argument("--fork-n", type=int, default=12)
    ap.add_argument("--fork-reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: the machine is shared)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--page-tokens", type=int, default=16)
    ap.add_argument("--capacity", default="256MiB", help="pool of the transformers daemon")
    ap.add_argument("--blocks", type=int, default=64, help="layout part: blocks of 16 tokens")
    ap.add_argument("--kv-layers", type=int, default=32, help="layout part: layers")
    ap.add_argument("--kv-heads-layout", type=int, default=8, help="layout part: kv heads")
    ap.add_argument("--layout-reps", type=int, default=10)
    ap.add_argument("--no-child", dest="child", action="store_false",
                    help="skip the real child-process measurement")
    ap.add_argument("--skip", default="", help="comma-separated: transformers,layout")
    ap.add_argument("--cli", default=None, help="processfork CLI (default $PF_CLI, else the "
                    "one bundled with the installed package)")
    ap.add_argument("--out", default="", help="JSON file (default: stdout)")
    ap.add_argument("--child-run", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.tokens = [int(x) for x in a.tokens.split(",") if x]
    if a.max_tokens:
        a.tokens = [t for t in a.tokens if t <= a.max_tokens]
    if a.child_run:
        return child_run(a, t_start)
    a.tokens = sorted(set(a.tokens))
    a.max_t = a.tokens[-1] if a.tokens else 0

    import torch
    torch.set_num_threads(a.threads)
    import processfork
    import transformers
    a.cli = a.cli or os.environ.get("PF_CLI") or processfork.cli_path()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    res = {"benchmark": "perf/bench_adapters.py", "argv": sys.argv[1:],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(torch), "transformers_version": transformers.__version__,
           "processfork_package": os.path.dirname(processfork.__file__), "cli": a.cli,
           "note": "in-process timings: (a) restore is what a child process runs after its "
                   "imports, model load and connect; the machine's 2 cores are shared, so "
                   "timings are noisy"}
    log("bench_adapters: %s, %d cores, torch %s (%d threads), transformers %s; load %s" % (
        res["machine"]["cpu"], res["machine"]["cores"], torch.__version__,
        torch.get_num_threads(), transformers.__version__, res["machine"]["loadavg_at_start"]))
    skip = set(x for x in a.skip.split(",") if x)
    with tempfile.TemporaryDirectory(prefix="pfba-") as tmpd:  # short: socket path limit
        tmp = Path(tmpd)
        if "transformers" not in skip and a.tokens:
            res["transformers"] = bench_transformers(a, torch, log, tmp)
        if "layout" not in skip:
            res["layout"] = bench_layout(a, torch, log, tmp)
    res["machine"]["loadavg_at_end"] = loadavg()
    res["duration_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(res, indent=1) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    log("bench_adapters: done in %.1f s%s" % (res["duration_s"],
                                              ", wrote " + a.out if a.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
