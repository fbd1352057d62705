#!/usr/bin/env python3
"""The durable store against the disk it runs on (docs/store.md; perf/README.md).

    .venv/bin/python perf/bench_store.py [--tokens 16384] [--forks 12] [--fork-tokens 64]
        [--reps 3] [--dir DIR] [--out FILE]

One daemon (``processfork serve --store``, host backend, llama-3-8b geometry: 128 KiB of KV
per token, 2 MiB pages) on one store directory, side by side with the disk's own sequential
bandwidth measured in the same run on the same file system:

- disk write: ``--tokens`` × 128 KiB written in 2 MiB writes, then fdatasync: the best of
  buffered and O_DIRECT, from 1 thread (one file), 4 and 8 threads (as many files) -- the
  store itself writes and reads from up to 8 threads;
- disk read: those files read back cold (posix_fadvise(DONTNEED) evicted them from the page
  cache) in 2 MiB reads, buffered and O_DIRECT, the best of 1, 4 and 8 threads;
- store write: a ``--tokens``-token context (KV filled with random bytes through the
  client's mapping) snapshotted, timed from ``snapshot`` to ``wait_durable`` returning
  (the digests already exist: commit computed them; what is timed is the blob writes, their
  fdatasync and the manifest's commit);
- restart → first checkout: the daemon is stopped, the blobs are evicted from the page
  cache (posix_fadvise DONTNEED on every blob file), a new daemon is started on the store,
  and from its start are timed: the client's checkout returning (lazy page-in: the pages
  are read in the background, docs/store.md "Paging in (lazy)"), the first page readable
  (``view(wait_pages=1)``) and every page read and checked against its digest (``view()``);
  the read GB/s divides the context bytes by checkout → every page readable;
- memory first touch: a fresh memfd of the context's size, every 4 KiB page touched once:
  the restarted daemon's pool is new memory, which a checkout's reads must fault in (on
  this VM that alone drops from ~2.3 GB/s at 1 GiB to ~0.7 GB/s at 4 GiB);
- dedup: ``--forks`` children forked from that snapshot each append ``--fork-tokens``
  tokens, write random KV of their own for them, and are snapshotted (durable); the store's
  blob bytes after all of them against after the first snapshot alone (the ideal is
  1 + forks × fork pages / context pages).

Goal figures (issue 13): store write and read ≥ 80% of the disk's bandwidth; restart to
first checkout of a 380K-token context < 5 s; 12 forks ≤ 1.1× one snapshot on disk. A
380K-token llama-3-8b context is 46.4 GiB of KV: it needs a pool (host memory or GPU) and a
disk that large, which this benchmark does not assume; it runs what fits, and reports the
380K figure extrapolated from the measured one (the daemon's start plus checkout's time per
page × 23,750 pages), labelled as such.

Prints a table on stderr and JSON with every number to --out (or stdout).
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

import processfork  # noqa: E402

MIB = 1 << 20


def _evict(path: Path) -> None:
    """Drops a file's clean pages from the page cache (no privileges needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _aligned(nbytes: int) -> mmap.mmap:
    """A page-aligned buffer of random bytes (O_DIRECT needs aligned memory)."""
    buf = mmap.mmap(-1, nbytes)
    buf.write(np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return buf


def _write_files(paths: list[Path], per_file: int, direct: bool) -> float:
    """Writes per_file bytes to each path (one thread per file, 2 MiB writes), fdatasyncs
    each; returns the wall time."""
    buf = _aligned(2 * MIB)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)

    def one(path: Path) -> None:
        fd = os.open(path, flags, 0o600)
        try:
            done = 0
            while done < per_file:
                done += os.write(fd, buf)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    return _timed_threads(one, paths)


def _timed_threads(fn, paths: list[Path]) -> float:
    """Runs fn(path) on one thread per path; the wall time until all are done."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=fn, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _read_files(paths: list[Path], direct: bool) -> float:
    """Reads every path cold (evicted first), one thread per file, 2 MiB reads (into an
    aligned buffer per thread with O_DIRECT)."""
    for p in paths:
        _evict(p)
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)

    def one(path: Path) -> None:
        fd = os.open(path, flags)
        buf = mmap.mmap(-1, 2 * MIB)
        try:
            while os.readv(fd, [buf]):
                pass
        finally:
            os.close(fd)
            buf.close()

    return _timed_threads(one, paths)


def memory_first_touch(nbytes: int) -> float:
    """GB/s of touching every 4 KiB page of a fresh memfd of nbytes once: what a daemon that
    just started pays to give a checkout's pages memory at all (its pool is a new memfd),
    before a byte is read into them. On a VM whose guest memory is not yet backed by the host
    this alone can be slower than the disk."""
    fd = os.memfd_create("pf-bench-first-touch")
    try:
        os.ftruncate(fd, nbytes)
        with mmap.mmap(fd, nbytes) as m:
            a = np.frombuffer(m, dtype=np.uint8)
            t0 = time.perf_counter()
            a[::4096] = 1
            t = time.perf_counter() - t0
            del a
    finally:
        os.close(fd)
    return nbytes / t / 1e9


def disk_bandwidth(where: Path, nbytes: int) -> dict:
    """The disk's sequential bandwidth for `nbytes`, the best of several ways (so the store
    is compared with what the disk can do, not with one slow way of writing): buffered
    writes + fdatasync and O_DIRECT writes, each from 1 thread (one file) and from 4 and 8
    threads (as many files); cold reads, buffered and O_DIRECT, from as many threads. GB/s."""
    out = {"bytes": nbytes}
    for threads in (1, 4, 8):
        paths = [where / ("disk-probe-%d.bin" % i) for i in range(threads)]
        per_file = -(-nbytes // threads // (2 * MIB)) * 2 * MIB
        for direct in (False, True):
            try:
                t = _write_files(paths, per_file, direct)
            except OSError as e:  # a file system without O_DIRECT
                out["write_%s_%dt_error" % ("direct" if direct else "buffered", threads)] = str(e)
                continue
            out["write_%s_%dt_gbps" % ("direct" if direct else "buffered", threads)] = (
                per_file * threads / t / 1e9)
        for direct in (False, True):
            kind = "direct" if direct else "buffered"
            try:
                out["read_%s_%dt_gbps" % (kind, threads)] = (
                    per_file * threads / _read_files(paths, direct) / 1e9)
            except OSError as e:  # a file system without O_DIRECT
                out["read_%s_%dt_error" % (kind, threads)] = str(e)
        for p in paths:
            p.unlink()
    out["write_gbps"] = max(v for k, v in out.items() if k.startswith("write_") and
                            k.endswith("_gbps"))
    out["read_gbps"] = max(v for k, v in out.items() if k.startswith("read_") and
                           k.endswith("_gbps"))
    return out


class Daemon:
    def __init__(self, where: Path, store: Path, capacity: str):
        self.where, self.store, self.capacity = where, store, capacity
        self.sock = str(where / "pf.sock")
        self.proc = None

    def start(self) -> float:
        """Starts the daemon; returns time.perf_counter() at the start."""
        ready = self.where / "ready"
        ready.unlink(missing_ok=True)
        cli = os.environ.get("PF_CLI") or processfork.cli_path()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [cli, "serve", "--device", "host", "--geometry", "llama-3-8b", "--capacity",
             self.capacity, "--chunk", "64MiB", "--socket", self.sock, "--http", "off",
             "--ready-file", str(ready), "--store", str(self.store)],
            stdout=open(self.where / "daemon.log", "ab"), stderr=subprocess.STDOUT)
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit("daemon exited:\n" + (self.where / "daemon.log").read_text())
            time.sleep(0.005)
        return t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=600)


def fill_context(c, n_tokens: int, seed: int):
    """A branch of n_tokens tokens with random KV written through the mapping, committed."""
    rng = np.random.default_rng(seed)
    b = c.branch()
    for run in c.append(b, [(seed * 7919 + i) % 50000 for i in range(n_tokens)]):
        page = c.page(run.page).view(np.uint8)
        view = page.reshape(page.shape[0], page.shape[1], -1)
        view[...] = rng.integers(0, 256, view.shape, dtype=np.uint8)
    return b


def store_bytes(store: Path) -> int:
    return sum(f.stat().st_size for f in (store / "blobs").rglob("*") if f.is_file())


def run_once(args, where: Path) -> dict:
    store = where / "store"
    shutil.rmtree(store, ignore_errors=True)
    pool_bytes = args.tokens * 128 * 1024
    capacity = "%dMiB" % ((pool_bytes * 2 + args.forks * args.fork_tokens * 128 * 1024) // MIB
                          + 256)
    d = Daemon(where, store, capacity)
    d.start()
    out = {}
    with processfork.connect(d.sock) as c:
        b = fill_context(c, args.tokens, seed=3)
        c.commit(b)
        t0 = time.perf_counter()
        snap = c.snapshot(b, "ctx")
        c.wait_durable(snap.cid)
        out["store_write_s"] = time.perf_counter() - t0
        out["context_bytes"] = snap.n_pages * c.pool().page_bytes
        one = store_bytes(store)
        # dedup: forks that each add a few tokens, each snapshotted durably
        kids = c.fork(snap.cid, args.forks)
        t0 = time.perf_counter()
        rng = np.random.default_rng(11)
        for i, k in enumerate(kids):
            # each child writes KV of its own for the tokens it adds (as an agent turn does)
            for run in c.append(k, [60000 + i * 1000 + j for j in range(args.fork_tokens)]):
                page = c.page(run.page)
                slots = page[:, :, run.first_slot:run.first_slot + run.count].view(np.uint8)
                slots[...] = rng.integers(0, 256, slots.shape, dtype=np.uint8)
            c.wait_durable(c.snapshot(k).cid)
        out["forks_write_s"] = time.perf_counter() - t0
        out["store_bytes_one"] = one
        out["store_bytes_all"] = store_bytes(store)
        c.free(b)
    d.stop()
    for f in (store / "blobs").rglob("*"):
        if f.is_file():
            _evict(f)
    t_start = d.start()
    with processfork.connect(d.sock) as c:
        t0 = time.perf_counter()
        back = c.checkout(snap.cid)
        t1 = time.perf_counter()
        at_checkout = c.view(back, wait_pages=0)  # no wait: what is read already
        first = c.view(back, wait_pages=1)  # the first page read and checked
        t2 = time.perf_counter()
        every = c.view(back)  # every page read and checked
        t3 = time.perf_counter()
        out["restart_to_checkout_s"] = t1 - t_start
        out["checkout_s"] = t1 - t0
        out["restart_to_first_page_s"] = t2 - t_start
        out["restart_to_all_pages_s"] = t3 - t_start
        out["checkout_to_all_pages_s"] = t3 - t0
        out["ready_pages_at_checkout"] = at_checkout.ready_pages
        out["checked_out_tokens"] = every.n_tokens
        out["checked_out_pages"] = every.n_pages
        out["first_view_ready_pages"] = first.ready_pages
    d.stop()
    out["store_write_gbps"] = out["context_bytes"] / out["store_write_s"] / 1e9
    # The read is timed from the checkout call to the view that waited for every page.
    out["store_read_gbps"] = out["context_bytes"] / out["checkout_to_all_pages_s"] / 1e9
    out["dedup_ratio"] = out["store_bytes_all"] / out["store_bytes_one"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--forks", type=int, default=12)
    ap.add_argument("--fork-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default="", help="where the store lives (default: a temp dir "
                    "under $TMPDIR)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    parent = args.dir or None
    runs, disks = [], []
    with tempfile.TemporaryDirectory(prefix="pfbs-", dir=parent) as tmp:
        where = Path(tmp)
        fs = subprocess.run(["df", "-T", tmp], capture_output=True, text=True).stdout
        for _ in range(args.reps):  # interleaved: disk, store, disk, store...
            disks.append(disk_bandwidth(where, args.tokens * 128 * 1024))
            disks[-1]["memory_first_touch_gbps"] = memory_first_touch(args.tokens * 128 * 1024)
            runs.append(run_once(args, where))
    med = lambda xs: statistics.median(xs)  # noqa: E731
    summary = {
        "disk_write_gbps": med([d["write_gbps"] for d in disks]),
        "disk_read_gbps": med([d["read_gbps"] for d in disks]),
        "memory_first_touch_gbps": med([d["memory_first_touch_gbps"] for d in disks]),
        "store_write_gbps": med([r["store_write_gbps"] for r in runs]),
        "store_read_gbps": med([r["store_read_gbps"] for r in runs]),
        "restart_to_checkout_s": med([r["restart_to_checkout_s"] for r in runs]),
        "checkout_s": med([r["checkout_s"] for r in runs]),
        "dedup_ratio": med([r["dedup_ratio"] for r in runs]),
        "restart_to_first_page_s": med([r["restart_to_first_page_s"] for r in runs]),
        "restart_to_all_pages_s": med([r["restart_to_all_pages_s"] for r in runs]),
    }
    # A 380K-token llama-3-8b context (46.4 GiB) does not fit this machine's memory or disk.
    # Restart -> checkout returned is scaled linearly by pages (an extrapolation, said so in
    # the output, and an upper bound: the store open sweeps one file per blob and checkout
    # passes over the page list, both linear, but process start and LMDB open are fixed).
    pages = runs[0]["checked_out_pages"]
    pages_380k = -(-380_000 // 16)  # 16-token pages
    summary["extrapolated_380k_restart_to_checkout_s"] = (
        summary["restart_to_checkout_s"] * pages_380k / pages)
    summary["write_vs_disk"] = summary["store_write_gbps"] / summary["disk_write_gbps"]
    summary["read_vs_disk"] = summary["store_read_gbps"] / summary["disk_read_gbps"]
    result = {
        "bench": "bench_store",
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "kernel": platform.release()},
        "geometry": "llama-3-8b", "tokens": args.tokens, "forks": args.forks,
        "fork_tokens": args.fork_tokens, "reps": args.reps,
        "context_bytes": runs[0]["context_bytes"],
        "store_fs": (fs.splitlines() or [""])[-1],
        "disk": disks, "runs": runs, "summary": summary,
    }
    s = summary
    print("bench_store: %d tokens (%.2f GiB of KV), %d reps (medians)" %
          (args.tokens, runs[0]["context_bytes"] / (1 << 30), args.reps), file=sys.stderr)
    print("  disk  write %.2f GB/s   read (cold) %.2f GB/s   (best of 1/4/8 threads, "
          "buffered/O_DIRECT)" %
          (s["disk_write_gbps"], s["disk_read_gbps"]), file=sys.stderr)
    print("  memory first touch (a fresh memfd of the context's size) %.2f GB/s" %
          s["memory_first_touch_gbps"], file=sys.stderr)
    print("  store write %.2f GB/s (%.0f%% of disk)   read+check %.2f GB/s (%.0f%% of disk)" %
          (s["store_write_gbps"], 100 * s["write_vs_disk"], s["store_read_gbps"],
           100 * s["read_vs_disk"]), file=sys.stderr)
    print("  restart -> checkout returned %.3f s (checkout %.3f s), first page readable %.3f s, "
          "every page %.2f s" % (s["restart_to_checkout_s"], s["checkout_s"],
                                  s["restart_to_first_page_s"], s["restart_to_all_pages_s"]),
          file=sys.stderr)
    print("  380K-token context (46.4 GiB, not run here): restart -> checkout returned "
          "<= ~%.2f s, extrapolated linearly by pages (%d pages measured)" %
          (s["extrapolated_380k_restart_to_checkout_s"], runs[0]["checked_out_pages"]),
          file=sys.stderr)
    print("  %d forks (+%d tokens each): %.3fx the bytes of one snapshot" %
          (args.forks, args.fork_tokens, s["dedup_ratio"]), file=sys.stderr)
    (Path(args.out).write_text if args.out else sys.stdout.write)(
        json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
