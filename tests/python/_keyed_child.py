"""The second process of test_keyed_pages.py.

  python _keyed_child.py SOCKET read KEY...    looks the keys up (holding the pages), reads
                                               every page's bytes through its own views and
                                               prints "PAGE <id> <sha256 of the bytes>" per
                                               page, then "DONE"; releases and exits
  python _keyed_child.py SOCKET hold KEY...    allocates 2 pages and holds the keys' pages,
                                               prints "READY <n held>" and waits to be killed
"""
from __future__ import annotations

import hashlib
import sys
import time

import processfork


def main() -> None:
    socket, mode, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
    with processfork.connect(socket) as c:
        if mode == "read":
            pages = c.lookup_keys(keys, hold=True)
            for p in pages:
                print("PAGE", p, hashlib.sha256(c.page(p).tobytes()).hexdigest(), flush=True)
            c.release_pages(pages)
            print("DONE", flush=True)
            return
        if mode == "hold":
            mine = c.alloc_pages(2)
            held = c.lookup_keys(keys, hold=True)
            print("READY", len(mine) + len(held), flush=True)
            while True:
                time.sleep(1)
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
