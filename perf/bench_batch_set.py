#!/usr/bin/env python3
"""SGLang HiCache ``batch_set`` throughput: ProcessFork vs Mooncake Store (DESIGN §7).

    .venv/bin/python perf/bench_batch_set.py [--page-mib 2] [--pages 32] [--calls 8]
        [--reps 5] [--threads 1] [--daemon NAME=CLI ...] [--mooncake-python PY] [--out FILE]

Every store gets the same data (one host buffer of ``--pages`` pages, as SGLang's host (L2)
pool holds them) and the same keys (SGLang-style chained SHA-256 page hashes, fresh for
every call so nothing is ever already present), and is timed in the same run, the stores
interleaved rep by rep (medians are reported: the machine may be shared and noisy):

- ``processfork[NAME]``: what ``processfork.sglang.ProcessForkStorage.batch_set`` does per
  call (its ``_store``): ``lookup_keys(keys, hold=False)`` (the leading run already present),
  ``alloc_pages``, one copy per page from the host buffer into the pool page (NumPy page
  views; the storage uses torch or ``kv_store`` for the same copy), ``publish_pages(keys,
  pages)`` -- which seals every page (the daemon digests them right after the call, in the
  background; ``processfork[NAME]+sealed`` also counts the wait until every page's digest is
  stored, read from the daemon's ``/metrics``). One daemon per ``--daemon NAME=CLI``
  (default: ``current`` = $PF_CLI or the CLI bundled with the package), so an older build's
  daemon (the BEFORE) runs against the same client in the same run.
- ``mooncake``: what SGLang's ``MooncakeStore.batch_set`` does on its zero-copy path: the host
  buffer registered once (``register_buffer``), then ``batch_put_from(keys, ptrs, sizes)``;
  one ``mooncake_master`` with its HTTP metadata server, protocol "tcp", one process with a
  local segment (no RDMA). Runs in a worker process with ``--mooncake-python`` (a venv with
  ``mooncake-transfer-engine``; default ``.venv-mooncake/bin/python`` next to this repo);
  skipped, with the reason, when that cannot start.
- ``sglang_processfork[NAME]``: the real adapter, ``ProcessForkStorage.batch_set_v1`` (zero
  copy from the host pool via ``kv_store``, then ``publish_pages``) on the same daemon, when
  torch and sglang import (the host pool is the tests' CPU stand-in for SGLang's
  ``MHATokenToKVPoolHost``, tests/python/_sglang_host.py); ``--no-sglang`` skips it.
- ``dict_memcpy``: ``bytes`` copies of each page into a dict -- the floor any store pays.

``--threads N`` runs N client threads at once (SGLang's backup threads) on disjoint keys:
ProcessFork with a session per thread (as ProcessForkStorage has), Mooncake with the one
store object they share (as SGLang's MooncakeStore is). The threads live for the whole run
and make every rep's calls (class Workers), as SGLang's threads do: a per-thread client
connects and faults the pool into its mapping once, not once per rep. Prints a summary on
stderr and JSON on stdout or ``--out FILE``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def page_keys(tag: str, n: int) -> list[str]:
    """n chained SHA-256 hex keys, like SGLang's get_hash_str chain, unique per tag."""
    out, prev = [], b""
    for i in range(n):
        prev = hashlib.sha256(prev + f"{tag}/{i}".encode()).digest()
        out.append(prev.hex())
    return out


def make_data(pages: int, page_bytes: int):
    import numpy as np  # noqa: PLC0415
    rng = np.random.default_rng(1234)
    return rng.integers(0, 256, size=pages * page_bytes, dtype=np.uint8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workers:
    """`threads` long-lived worker threads that make every store's calls, rep after rep, as
    SGLang's HiCache backup threads do. Threads are not made per rep: a store whose client
    is per thread (ProcessForkStorage's session is) would otherwise open a new connection
    and map the pool afresh every rep, and pay that rep's page faults, which a serving
    engine pays once."""

    def __init__(self, threads: int) -> None:
        self._jobs = [queue.Queue() for _ in range(threads)]
        self._done: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, args=(t,), daemon=True)
                         for t in range(threads)]
        for t in self._threads:
            t.start()

    def _loop(self, tid: int) -> None:
        while True:
            job = self._jobs[tid].get()
            if job is None:
                return
            call, calls, tag = job
            try:
                for i in range(calls):
                    call(tid, f"{tag}/t{tid}/c{i}")
                self._done.put(None)
            except BaseException as e:  # noqa: BLE001 -- reported by timed_calls
                self._done.put(e)

    def timed_calls(self, call, calls: int, tag: str) -> float:
        """Runs `calls` calls on every worker (call(tid, tag_i)); seconds for all of them."""
        t0 = time.perf_counter()
        for q in self._jobs:
            q.put((call, calls, tag))
        errors = [e for e in (self._done.get() for _ in self._jobs) if e is not None]
        dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return dt

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for t in self._threads:
            t.join()


# --- stores --------------------------------------------------------------------------------

class ProcessForkStore:
    def __init__(self, name: str, cli: str, args, data, tmp: Path):
        import processfork  # noqa: PLC0415
        self.name = f"processfork[{name}]"
        self.cli = cli
        self.dir = Path(tempfile.mkdtemp(prefix="pf_bs_", dir=tmp))
        sock, ready, log = self.dir / "pf.sock", self.dir / "ready", self.dir / "daemon.log"
        # One rep's pages: from the second warm-up rep on, every page is recycled.
        cap = max(args.pages * args.threads * args.calls, 64) * args.page_mib
        geometry = (f"layers=32,kv_heads=8,head_dim=128,dtype=bf16,"
                    f"page_tokens={args.page_mib * 8}")
        cmd = [cli, "serve", "--device", "host", "--geometry", geometry,
               "--capacity", f"{cap}MiB", "--chunk", f"{max(args.page_mib, 2)}MiB",
               "--socket", str(sock), "--ready-file", str(ready)]
        # HTTP only for /metrics (no token needed): how many published pages still await
        # their digests (processfork_digest_pending_pages; runtime/digest_behind.h).
        self.port = free_port()
        cmd += ["--http", f"127.0.0.1:{self.port}"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"daemon did not start ({cmd}): {log.read_text()}")
            time.sleep(0.02)
        self.clients = [processfork.connect(str(sock)) for _ in range(args.threads)]
        self.page_bytes = self.clients[0].pool().page_bytes
        assert self.page_bytes == args.page_mib << 20, self.page_bytes
        self.data = data
        self.n = args.pages

    def batch_set(self, tid: int, tag: str) -> None:
        c = self.clients[tid]
        keys = page_keys(tag, self.n)
        present = len(c.lookup_keys(keys, hold=False))
        pages = c.alloc_pages(self.n - present)
        for i, p in enumerate(pages, start=present):
            dst = c.page(p).reshape(-1).view("uint8")
            dst[:] = self.data[i * self.page_bytes:(i + 1) * self.page_bytes]
        c.publish_pages(keys[present:], pages,
                        parent_key=keys[present - 1] if present else None)

    def digests_pending(self) -> int:
        """Published pages whose digests the daemon has not stored yet (0 for a daemon that
        digests inside publish_pages and has no such metric)."""
        import urllib.request  # noqa: PLC0415
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("processfork_digest_pending_pages "):
                    return int(float(line.split()[1]))
        return 0

    def wait_sealed(self) -> None:
        """Returns once every page published so far has its digest (polls /metrics)."""
        while self.digests_pending():
            time.sleep(0.0005)

    def reset(self) -> None:
        # Nothing: a serving daemon's pool is warm. Once it is full, alloc_pages evicts the
        # least recently used cached pages (already faulted in), as under SGLang's load.
        pass

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


class SGLangProcessForkStore:
    """The real adapter: processfork.sglang.ProcessForkStorage.batch_set_v1 (zero copy from
    the host pool through kv_store, then publish_pages) on a ProcessForkStore's daemon,
    with the tests' CPU stand-in for SGLang's MHATokenToKVPoolHost (tests/python/
    _sglang_host.py: same tensors and accessors), page_first layout."""

    def __init__(self, pf: ProcessForkStore, args):
        import torch  # noqa: PLC0415
        sys.path.insert(0, str(REPO / "tests" / "python"))
        from _sglang_host import HostPool, dynamic_extra, storage_config  # noqa: PLC0415
        from processfork.sglang import ProcessForkStorage  # noqa: PLC0415
        self.name = pf.name.replace("processfork", "sglang_processfork")
        page_tokens = args.page_mib * 8
        self.pool = HostPool("page_first", 32, 8, 128, page_tokens, args.pages, torch.bfloat16)
        self.pool.fill_random(1234)
        sock = str(pf.dir / "pf.sock")
        self.storage = ProcessForkStorage(storage_config(dynamic_extra(sock)), {})
        self.storage.register_mem_pool_host(self.pool)
        self.indices = self.pool.indices(list(range(args.pages)))
        self.n = args.pages
        self.wait_sealed = pf.wait_sealed

    def batch_set(self, tid: int, tag: str) -> None:
        ok = self.storage.batch_set_v1(page_keys(tag, self.n), self.indices)
        if not all(ok):
            raise RuntimeError(f"batch_set_v1 stored {sum(ok)} of {len(ok)} pages")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        close = getattr(self.storage, "close", None)
        if close is not None:
            close()


class DictStore:
    name = "dict_memcpy"

    def __init__(self, args, data):
        self.data, self.n, self.pb = data, args.pages, args.page_mib << 20
        self.d: dict[str, bytes] = {}

    def batch_set(self, tid: int, tag: str) -> None:
        for i, k in enumerate(page_keys(tag, self.n)):
            self.d[k] = self.data[i * self.pb:(i + 1) * self.pb].tobytes()

    def reset(self) -> None:
        self.d.clear()

    def close(self) -> None:
        self.d.clear()


class MooncakeProxy:
    """The Mooncake worker process (this script with --worker mooncake), one rep per line."""
    name = "mooncake"

    def __init__(self, python: str, args, tmp: Path):
        self.log = tmp / "mooncake_worker.log"
        cmd = [python, str(Path(__file__).resolve()), "--worker", "mooncake",
               "--page-mib", str(args.page_mib), "--pages", str(args.pages),
               "--calls", str(args.calls), "--threads", str(args.threads)]
        with open(self.log, "wb") as log:  # Mooncake logs a lot on stderr
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True)
        hello = self.proc.stdout.readline()
        if not hello:
            raise RuntimeError(f"mooncake worker did not start: {self.tail()}")
        self.info = json.loads(hello)
        if "error" in self.info:
            raise RuntimeError(self.info["error"])

    def rep(self, tag: str) -> float:
        self.proc.stdin.write(tag + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("mooncake worker died: " + self.tail())
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError(r["error"])
        return r["seconds"]

    def tail(self) -> str:
        return self.log.read_text(errors="replace").strip()[-2000:]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def mooncake_worker(args) -> int:
    """Serves reps for MooncakeProxy: a master, one store with a local segment, tcp."""
    master = None
    try:
        from mooncake.store import MooncakeDistributedStore  # noqa: PLC0415
        bindir = Path(sys.executable).parent
        master_bin = shutil.which("mooncake_master", path=str(bindir)) or "mooncake_master"
        rpc, http = free_port(), free_port()
        master = subprocess.Popen([master_bin, f"--rpc_port={rpc}",
                                   "--enable_http_metadata_server=true",
                                   "--http_metadata_server_host=127.0.0.1",
                                   f"--http_metadata_server_port={http}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        page_bytes = args.page_mib << 20
        data = make_data(args.pages, page_bytes)
        per_rep = args.pages * args.threads * args.calls * page_bytes
        segment = 2 * per_rep + (256 << 20)
        # One store shared by the threads, as SGLang's MooncakeStore is (one per TP rank,
        # called from its backup threads); several would put into each other's segments
        # over tcp.
        stores = []
        for _ in range(1):
            store = MooncakeDistributedStore()
            rc = store.setup("127.0.0.1", f"http://127.0.0.1:{http}/metadata", segment,
                             256 << 20, "tcp", "", f"127.0.0.1:{rpc}")
            if rc != 0:
                raise RuntimeError(f"MooncakeDistributedStore.setup returned {rc}")
            ptr = data.ctypes.data
            if store.register_buffer(ptr, data.nbytes) != 0:
                raise RuntimeError("register_buffer failed")
            stores.append(store)
        ptrs = [data.ctypes.data + i * page_bytes for i in range(args.pages)]
        sizes = [page_bytes] * args.pages

        def call(tid: int, tag: str) -> None:
            rcs = stores[0].batch_put_from(page_keys(tag, args.pages), ptrs, sizes)
            bad = [r for r in rcs if r != 0]
            if bad:
                raise RuntimeError(f"batch_put_from: {len(bad)} of {len(rcs)} failed ({bad[0]})")
        import mooncake  # noqa: PLC0415
        print(json.dumps({"ok": True, "version": getattr(mooncake, "__version__", None),
                          "segment_bytes": segment}), flush=True)
        workers = Workers(args.threads)
        for line in sys.stdin:
            tag = line.strip()
            try:
                dt = workers.timed_calls(call, args.calls, tag)
                stores[0].remove_all()
                print(json.dumps({"seconds": dt}), flush=True)
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        workers.close()
        for s in stores:
            s.close()
        return 0
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    finally:
        if master is not None:
            master.terminate()
            try:
                master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                master.kill()


# --- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page-mib", type=int, default=2, help="page size (MiB; llama-3-8b: 2)")
    ap.add_argument("--pages", type=int, default=32, help="pages per batch_set call")
    ap.add_argument("--calls", type=int, default=8, help="batch_set calls per thread per rep")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--daemon", action="append", default=[],
                    help="NAME=CLI: a processfork daemon to measure (repeatable)")
    ap.add_argument("--mooncake-python", default=os.environ.get(
        "PF_MOONCAKE_PYTHON", str(REPO / ".venv-mooncake" / "bin" / "python")))
    ap.add_argument("--no-mooncake", action="store_true")
    ap.add_argument("--no-sglang", action="store_true",
                    help="skip ProcessForkStorage.batch_set_v1 (measured when torch and "
                    "sglang import)")
    ap.add_argument("--out")
    ap.add_argument("--worker", choices=["mooncake"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "mooncake":
        return mooncake_worker(args)

    sys.path.insert(0, str(HERE))
    from run_benchmarks import machine_info  # noqa: PLC0415 (sibling script)
    import processfork  # noqa: PLC0415

    page_bytes = args.page_mib << 20
    data = make_data(args.pages, page_bytes)
    daemons = [d.split("=", 1) for d in args.daemon] or [
        ["current", os.environ.get("PF_CLI") or processfork.cli_path()]]
    tmp = Path(tempfile.mkdtemp(prefix="pf_bench_bs_"))
    stores, skipped = [], {}
    workers = None
    try:
        for name, cli in daemons:
            stores.append(ProcessForkStore(name, cli, args, data, tmp))
        if not args.no_sglang:
            try:
                for pf in list(stores):
                    stores.append(SGLangProcessForkStore(pf, args))
            except Exception as e:  # noqa: BLE001 -- torch/sglang missing: say so
                skipped["sglang_processfork"] = f"{type(e).__name__}: {e}"
        if not args.no_mooncake:
            if not Path(args.mooncake_python).exists():
                skipped["mooncake"] = f"no Python with mooncake at {args.mooncake_python}"
            else:
                try:
                    stores.append(MooncakeProxy(args.mooncake_python, args, tmp))
                except Exception as e:  # noqa: BLE001
                    skipped["mooncake"] = str(e)
        stores.append(DictStore(args, data))
        try:
            import sglang.srt.mem_cache.hicache_storage as hicache  # noqa: PLC0415
            assert hasattr(hicache, "HiCacheFile")
            skipped["sglang_hicache_file"] = ("importable; not measured (a disk-backed store: Mooncake "
                                               "is the in-memory comparison)")
        except Exception as e:  # noqa: BLE001
            skipped["sglang_hicache_file"] = f"sglang not importable: {type(e).__name__}"

        per_rep = args.pages * args.calls * args.threads * page_bytes
        secs: dict[str, list[float]] = {s.name: [] for s in stores}
        # ProcessFork also "<name>+sealed": the calls plus the wait until the daemon stored
        # the digest of every page they published (the digests run behind publish_pages).
        for s in stores:
            if hasattr(s, "wait_sealed"):
                secs[s.name + "+sealed"] = []
        workers = Workers(args.threads)
        warm = 2  # reps 0 and 1 warm up (fault in every pool page), not reported
        for rep in range(args.reps + warm):
            order = stores if rep % 2 == 0 else list(reversed(stores))
            for s in order:
                tag = f"r{rep}/{s.name}"
                if isinstance(s, MooncakeProxy):
                    dt = s.rep(tag)
                else:
                    t0 = time.perf_counter()
                    dt = workers.timed_calls(s.batch_set, args.calls, tag)
                    if hasattr(s, "wait_sealed"):
                        s.wait_sealed()
                        sealed = time.perf_counter() - t0
                        if rep >= warm:
                            secs[s.name + "+sealed"].append(sealed)
                        print(f"rep {rep} {s.name}+sealed: {per_rep / sealed / 1e9:.2f} GB/s",
                              file=sys.stderr)
                    s.reset()
                if rep >= warm:
                    secs[s.name].append(dt)
                print(f"rep {rep} {s.name}: {per_rep / dt / 1e9:.2f} GB/s", file=sys.stderr)
    finally:
        if workers is not None:
            workers.close()
        for s in stores:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(tmp, ignore_errors=True)

    results = {}
    for name, xs in secs.items():
        gbps = sorted(per_rep / x / 1e9 for x in xs)
        results[name] = {"gbps_median": round(statistics.median(gbps), 3),
                         "gbps_min": round(gbps[0], 3), "gbps_max": round(gbps[-1], 3),
                         "gbps_all": [round(g, 3) for g in gbps]}
    ratios = {}
    if "mooncake" in results:
        for name in results:
            if "processfork" in name:
                ratios[f"{name}/mooncake"] = round(
                    results[name]["gbps_median"] / results["mooncake"]["gbps_median"], 3)
    out = {"bench": "bench_batch_set", "machine": machine_info(),
           "date": time.strftime("%Y-%m-%d"),
           "params": {"page_bytes": page_bytes, "pages_per_call": args.pages,
                      "calls_per_rep": args.calls, "threads": args.threads, "reps": args.reps,
                      "bytes_per_rep": per_rep,
                      "daemons": {n: c for n, c in daemons},
                      "pf_host_threads": os.environ.get("PF_HOST_THREADS")},
           "results": results, "ratios": ratios, "skipped": skipped}
    for name, r in results.items():
        print(f"{name:28s} {r['gbps_median']:7.2f} GB/s (median of {args.reps})",
              file=sys.stderr)
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}", file=sys.stderr)
    text = json.dumps(out, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
