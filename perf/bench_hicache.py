#!/usr/bin/env python3
"""SGLang HiCacheStorage set/get: ProcessFork (memory and disk tiers) vs HiCacheFile (DESIGN §7).

    .venv/bin/python perf/bench_hicache.py [--pages 64] [--reps 3] [--dir DIR] [--out FILE]

Every store gets the same data (one host buffer of ``--pages`` pages of 2 MiB, llama-3-8b
geometry, 16 tokens a page) and the same keys (SGLang-style chained SHA-256 page hashes,
fresh every rep), and the stores are timed in the same run, interleaved rep by rep (the
order reversed every other rep; one warm-up rep not reported; medians):

- ``hicache_file``: SGLang's own file backend, ``HiCacheFile`` (one ``.bin`` file per page
  under ``--dir``), through its ``batch_set(keys, values)`` / ``batch_get(keys,
  target_locations)`` with torch CPU page views of the host buffer (the raw file I/O its v2
  API wraps). ``set`` writes into the page cache (HiCacheFile never fsyncs); ``set+fsync``
  adds an fsync of every file (what the disk tier's figure includes); ``get warm`` reads
  right after the set; ``get cold`` after the files are evicted from the page cache
  (``posix_fadvise(DONTNEED)``).
- ``processfork_memory``: a daemon without a store; set = what bench_batch_set times
  (``lookup_keys``, ``alloc_pages``, a copy per page into the pool, ``publish_pages``, which
  digests every page); get = ``lookup_keys(hold=True)`` + a copy of every pool page into the
  host buffer + ``release_pages``.
- ``processfork_disk``: a daemon with ``--store DIR``; set as above, then SIGTERM (a clean
  stop writes everything queued by write-behind to DIR before exiting): ``set`` counts the
  publish and that drain (the JSON also has each apart). Then the store's blobs are evicted
  from the page cache, a new daemon starts on the same store and socket (its start is
  reported, not counted), and ``get cold`` = ``lookup_keys`` (which reads the pages back
  from disk and checks their digests) + the copies + ``release_pages``.

Every get is checked byte for byte against the data (not timed). Prints a table on stderr
and JSON (machine, file systems of the directories, every rep) to ``--out`` or stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from bench_batch_set import ProcessForkStore, make_data, page_keys  # noqa: E402
from bench_store import Daemon, _evict  # noqa: E402

PAGE_BYTES = 2 << 20  # llama-3-8b: 32 layers x 2 x 8 heads x 128 x bf16 x 16 tokens


def evict_tree(d: Path) -> int:
    """posix_fadvise(DONTNEED) on every file under d; how many files."""
    files = [f for f in d.rglob("*") if f.is_file()]
    for f in files:
        _evict(f)
    return len(files)


def fsync_tree(d: Path) -> None:
    for f in d.rglob("*.bin"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def pf_get(c, keys, out: np.ndarray) -> None:
    """ProcessFork's get: hold the keys' pages, copy them out, release them."""
    pages = c.lookup_keys(keys, hold=True)
    try:
        if len(pages) != len(keys):
            raise RuntimeError(f"lookup_keys found {len(pages)} of {len(keys)} keys")
        for i, p in enumerate(pages):
            out[i * PAGE_BYTES:(i + 1) * PAGE_BYTES] = c.page(p).reshape(-1).view(np.uint8)
    finally:
        c.release_pages(pages)


def timed(fn, *a) -> float:
    t0 = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t0


class Check:
    """The host buffer gets are read into, compared with the data after each get."""

    def __init__(self, data: np.ndarray):
        self.data, self.out = data, np.empty_like(data)

    def clear(self) -> None:
        self.out[:] = 0

    def verify(self, what: str) -> None:
        if not np.array_equal(self.out, self.data):
            raise RuntimeError(f"{what}: data read back differs from what was set")


# --- stores: rep(tag) -> {metric: seconds} ----------------------------------------------------

class HiCacheFileStore:
    name = "hicache_file"

    def __init__(self, args, data, chk: Check, where: Path):
        import torch  # noqa: PLC0415
        from sglang.srt.mem_cache.hicache_storage import (  # noqa: PLC0415
            HiCacheFile, HiCacheStorageConfig)
        self.dir = where / "hicache_file"
        # The environment variable would win over the constructor's path: point it here too.
        os.environ["SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR"] = str(self.dir)
        cfg = HiCacheStorageConfig(
            tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
            is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True,
            model_name="meta-llama/Meta-Llama-3-8B")
        self.store = HiCacheFile(cfg, file_path=str(self.dir))
        src, dst = torch.from_numpy(data), torch.from_numpy(chk.out)
        n = args.pages
        self.values = [src[i * PAGE_BYTES:(i + 1) * PAGE_BYTES] for i in range(n)]
        self.targets = [dst[i * PAGE_BYTES:(i + 1) * PAGE_BYTES] for i in range(n)]
        self.chk, self.n = chk, n

    def _get(self, keys) -> None:
        got = self.store.batch_get(keys, self.targets)
        if any(g is None for g in got):
            raise RuntimeError(f"HiCacheFile.batch_get missed {sum(g is None for g in got)} keys")

    def rep(self, tag: str) -> dict:
        keys = page_keys(tag, self.n)
        r = {}
        t0 = time.perf_counter()
        if not self.store.batch_set(keys, self.values):
            raise RuntimeError("HiCacheFile.batch_set failed")
        r["set"] = time.perf_counter() - t0
        self.chk.clear()
        r["get_warm"] = timed(self._get, keys)
        self.chk.verify("hicache_file warm get")
        r["fsync"] = timed(fsync_tree, self.dir)
        r["set_fsync"] = r["set"] + r["fsync"]
        evict_tree(self.dir)
        self.chk.clear()
        r["get_cold"] = timed(self._get, keys)
        self.chk.verify("hicache_file cold get")
        self.store.clear()
        return r

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class MemoryTier:
    """bench_batch_set's ProcessForkStore (its batch_set is the set), plus pf_get."""
    name = "processfork_memory"

    def __init__(self, cli, args, data, chk: Check, where: Path):
        ns = argparse.Namespace(pages=args.pages, threads=1, calls=1, page_mib=PAGE_BYTES >> 20)
        self.pf = ProcessForkStore("memory", cli, ns, data, where)
        self.chk, self.n = chk, args.pages

    def rep(self, tag: str) -> dict:
        r = {"set": timed(self.pf.batch_set, 0, tag)}
        self.chk.clear()
        r["get"] = timed(pf_get, self.pf.clients[0], page_keys(tag, self.n), self.chk.out)
        self.chk.verify("processfork memory get")
        return r

    def close(self) -> None:
        self.pf.close()


class DiskTier:
    """A daemon with --store (bench_store's Daemon), restarted between set and get."""
    name = "processfork_disk"
    batch_set = ProcessForkStore.batch_set  # the very same set as the memory tier

    def __init__(self, args, data, chk: Check, where: Path):
        import processfork  # noqa: PLC0415
        self.connect = processfork.connect
        self.where = where / "pf_disk"
        self.where.mkdir()
        self.store = self.where / "store"
        mib = max(64, -(-args.pages * (PAGE_BYTES >> 20) // 64) * 64)  # whole 64 MiB chunks
        self.daemon = Daemon(self.where, self.store, f"{mib}MiB")
        self.data, self.n, self.page_bytes, self.chk = data, args.pages, PAGE_BYTES, chk
        self.clients = []
        self._start()

    def _start(self) -> float:
        t0 = self.daemon.start()
        self.clients = [self.connect(self.daemon.sock)]
        return time.perf_counter() - t0

    def _stop(self) -> None:
        for c in self.clients:
            c.close()
        self.clients = []
        self.daemon.stop()
        if self.daemon.proc.returncode != 0:
            raise RuntimeError(f"daemon exited {self.daemon.proc.returncode}: "
                               + (self.where / "daemon.log").read_text()[-2000:])

    def rep(self, tag: str) -> dict:
        t0 = time.perf_counter()
        self.batch_set(0, tag)
        t1 = time.perf_counter()
        self._stop()  # SIGTERM: the write-behind queue is drained before the exit
        t2 = time.perf_counter()
        r = {"publish": t1 - t0, "drain": t2 - t1, "set": t2 - t0}
        r["blob_files_evicted"] = evict_tree(self.store / "blobs")
        r["restart"] = self._start()
        self.chk.clear()
        r["get_cold"] = timed(pf_get, self.clients[0], page_keys(tag, self.n), self.chk.out)
        self.chk.verify("processfork disk get")
        return r

    def close(self) -> None:
        if self.clients:
            self._stop()


# --- main ----------------------------------------------------------------------------------

# (store, metric, what it times) in table order
METRICS = [
    ("hicache_file", "set", "batch_set: files written into the page cache, no fsync"),
    ("hicache_file", "set_fsync", "batch_set + fsync of every file"),
    ("hicache_file", "get_warm", "batch_get, page cache hot"),
    ("hicache_file", "get_cold", "batch_get after posix_fadvise(DONTNEED) of its files"),
    ("processfork_memory", "set", "lookup_keys + alloc_pages + copies + publish_pages"),
    ("processfork_memory", "get", "lookup_keys(hold) + copies out + release_pages"),
    ("processfork_disk", "publish", "set as the memory tier, write-behind still queued"),
    ("processfork_disk", "set", "publish + SIGTERM drain of the write-behind to the store"),
    ("processfork_disk", "get_cold", "after restart, blobs evicted: lookup_keys (read from "
     "disk, digests checked) + copies + release"),
]


def fs_of(path: Path) -> str:
    """`df -T`'s answer as "TYPE (DEVICE, mounted on MOUNT)"."""
    r = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True)
    f = (r.stdout.strip().splitlines() or [""])[-1].split()
    return f"{f[1]} ({f[0]}, mounted on {f[-1]})" if len(f) >= 7 else " ".join(f)


def summarize(xs: list[float], nbytes: int) -> dict:
    g = sorted(nbytes / x / 1e9 for x in xs)
    return {"gbps_median": round(statistics.median(g), 3), "gbps_min": round(g[0], 3),
            "gbps_max": round(g[-1], 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=64, help="2 MiB pages per rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores' directories go "
                    "(default: a temp dir under $TMPDIR or /tmp)")
    ap.add_argument("--out")
    args = ap.parse_args()

    from run_benchmarks import machine_info  # noqa: PLC0415 (sibling script)
    import processfork  # noqa: PLC0415
    cli = os.environ.get("PF_CLI") or processfork.cli_path()
    os.environ["PF_CLI"] = cli  # bench_store's Daemon reads it
    machine = machine_info()
    nbytes = args.pages * PAGE_BYTES
    data = make_data(args.pages, PAGE_BYTES)
    chk = Check(data)
    where = Path(tempfile.mkdtemp(prefix="pf_bench_hicache_", dir=args.dir))
    stores, skipped, fs, versions = [], {}, {}, {"processfork": processfork.__version__}
    reps: dict[str, list[dict]] = {}
    try:
        try:
            stores.append(HiCacheFileStore(args, data, chk, where))
            import sglang  # noqa: PLC0415
            versions["sglang"] = sglang.__version__
            fs["hicache_file"] = fs_of(stores[-1].dir)
        except Exception as e:  # noqa: BLE001 -- torch/sglang missing: say so
            skipped["hicache_file"] = f"{type(e).__name__}: {e}"
        stores.append(MemoryTier(cli, args, data, chk, where))
        helptext = subprocess.run([cli, "serve", "--help"], capture_output=True,
                                  text=True).stdout
        if "--store" not in helptext:
            skipped["processfork_disk"] = f"{cli} serve has no --store (an older build)"
        else:
            stores.append(DiskTier(args, data, chk, where))
            fs["processfork_disk"] = fs_of(stores[-1].store)
        reps = {s.name: [] for s in stores}
        warm = 1  # rep 0 faults in every pool page and file path, not reported
        for rep in range(args.reps + warm):
            order = stores if rep % 2 == 0 else list(reversed(stores))
            for s in order:
                r = s.rep(f"r{rep}")
                if rep >= warm:
                    reps[s.name].append(r)
                print(f"rep {rep} {s.name}: " + ", ".join(
                    f"{k} {nbytes / v / 1e9:.2f} GB/s" for k, v in r.items()
                    if (s.name, k) in {(a, b) for a, b, _ in METRICS}), file=sys.stderr)
    finally:
        for s in stores:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001
                print(f"closing {s.name}: {e}", file=sys.stderr)
        shutil.rmtree(where, ignore_errors=True)

    results = {}
    for order, (store, metric, what) in enumerate(METRICS):
        if reps.get(store):
            results.setdefault(store, {})[metric] = dict(
                summarize([r[metric] for r in reps[store]], nbytes), what=what, order=order)
    seconds = {store: {k: round(statistics.median(r[k] for r in rs), 4) for k in rs[0]}
               for store, rs in reps.items() if rs}
    with open("/proc/loadavg") as f:
        load_end = f.read().strip()
    out = {"bench": "bench_hicache", "machine": dict(machine, loadavg_at_end=load_end),
           "date": time.strftime("%Y-%m-%d"), "fs": fs, "versions": versions,
           "params": {"page_bytes": PAGE_BYTES, "pages": args.pages, "bytes_per_rep": nbytes,
                      "reps": args.reps, "warmup_reps": 1, "geometry": "llama-3-8b",
                      "cli": cli},
           "results": results, "seconds_median": seconds, "reps": reps, "skipped": skipped}
    print(f"bench_hicache: {args.pages} pages x 2 MiB ({nbytes / 2**20:.0f} MiB) per rep, "
          f"median of {args.reps} reps; {machine['cpu']}, {machine['cores']} cores", file=sys.stderr)
    for store, metric, what in METRICS:
        r = results.get(store, {}).get(metric)
        if r:
            print(f"  {store:20s} {metric:9s} {r['gbps_median']:7.2f} GB/s "
                  f"({r['gbps_min']:.2f}-{r['gbps_max']:.2f})  {what}", file=sys.stderr)
    for k, v in skipped.items():
        print(f"  {k}: skipped: {v}", file=sys.stderr)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    (Path(args.out).write_text if args.out else sys.stdout.write)(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
