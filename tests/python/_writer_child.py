"""The second process of test_pages.py: writes KV through its own page view.

Protocol over stdin/stdout, one line each:
  child -> "PAGES <branch> <page> ..."   after creating a branch and appending tokens
  parent -> "WRITE <seed>"               child fills its pages from seed, then snapshots
  child -> "DONE <cid>"
  parent -> "EXIT"
"""
import sys

import numpy as np

import processfork


def pattern(page_shape, dtype, seed, index):
    rng = np.random.default_rng(seed * 1000 + index)
    return rng.integers(0, 60000, size=page_shape).astype(dtype)


def main() -> None:
    socket, n_tokens = sys.argv[1], int(sys.argv[2])
    with processfork.connect(socket) as c:
        info = c.pool()
        b = c.branch()
        runs = c.append(b, range(1000, 1000 + n_tokens))
        pages = sorted({r.page for r in runs})
        print("PAGES", b.id, *pages, flush=True)
        cmd, seed = sys.stdin.readline().split()
        assert cmd == "WRITE"
        for k, p in enumerate(pages):
            view = c.page(p)
            view[...] = pattern(info.page_shape, info.numpy_dtype, int(seed), k)
        snap = c.snapshot(b, name=f"child-{seed}")
        c.ref_set(f"child-{seed}", snap.cid)
        print("DONE", snap.cid, flush=True)
        assert sys.stdin.readline().strip() == "EXIT"


if __name__ == "__main__":
    main()
