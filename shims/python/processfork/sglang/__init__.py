"""processfork.sglang: ProcessFork as SGLang's HiCache L3 storage, plus HTTP routes.

- :class:`ProcessForkStorage` -- a ``HiCacheStorage`` loaded with
  ``--hicache-storage-backend dynamic`` and ``{"module_path": "processfork.sglang",
  "class_name": "ProcessForkStorage", ...}`` (docs/adapter-sglang.md).
- :mod:`processfork.sglang.routes` -- ``/processfork/{snapshot,fork,checkout,merge,log,diff}``
  as a FastAPI router; ``python -m processfork.sglang <sglang server args>`` mounts it on
  SGLang's HTTP server and launches it.

Importing this package imports SGLang's HiCache storage module (torch, no CUDA needed);
the routes need FastAPI and are imported only on demand.
"""
from __future__ import annotations

from processfork.sglang.storage import ProcessForkStorage

__all__ = ["ProcessForkStorage"]
