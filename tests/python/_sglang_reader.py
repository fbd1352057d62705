"""Child process of test_sglang_adapter.py: a second SGLang rank/instance that loads pages
by key through its own ProcessForkStorage into its own (zeroed) host pool.

    python _sglang_reader.py <spec.json> <out.pt>

spec: {socket, layout, layers, heads, head_dim, page_size, pages, dtype, keys, host_pages}.
Writes {"results": [...], "kv_buffer": tensor} to out.pt.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _sglang_host import HostPool, dynamic_extra, storage_config  # noqa: E402

from processfork.sglang import ProcessForkStorage  # noqa: E402


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    dtype = getattr(torch, spec["dtype"])
    pool = HostPool(spec["layout"], spec["layers"], spec["heads"], spec["head_dim"],
                    spec["page_size"], spec["pages"], dtype)
    storage = ProcessForkStorage(storage_config(dynamic_extra(spec["socket"]),
                                                layout=spec["layout"]), {})
    storage.register_mem_pool_host(pool)
    results = storage.batch_get_v1(spec["keys"], pool.indices(spec["host_pages"]))
    storage.close()
    torch.save({"results": results, "kv_buffer": pool.kv_buffer}, sys.argv[2])


if __name__ == "__main__":
    main()
