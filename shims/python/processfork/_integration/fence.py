"""The adapters' half of the GPU fence (processfork.h "GPU fences", docs/cuda.md "Streams
and fences").

A call that seals pages (commit, snapshot, fork, merge, publish) makes the daemon digest or
share the pages' bytes as they are at that moment. Bytes the engine process is still writing
on the GPU would be sealed stale, with a digest that matches them. The library waits for its
own copies; every adapter calls :func:`fence` for the device its KV lives on before a sealing
call, which waits for torch's current stream there: the stream ``kv_store`` copies are
ordered on and the model writes its KV on.
"""
from __future__ import annotations

from typing import Any


def fence(device: Any) -> bool:
    """Waits until the work enqueued on torch's current stream of ``device`` has completed,
    when ``device`` (a ``torch.device`` or its name) is a CUDA device.

    Returns True when it synchronized a stream, False for any other device: host memory has
    nothing in flight, and the call then costs one attribute read (torch is not touched).
    """
    kind = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if kind != "cuda":
        return False
    import torch  # noqa: PLC0415 (only a CUDA device reaches here; torch is then loaded)

    torch.cuda.current_stream(torch.device(device)).synchronize()
    return True
