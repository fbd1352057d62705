"""What the engine adapters (``processfork.vllm``, ``processfork.sglang``) share.

- :mod:`.session` -- :class:`Session`: one daemon session with the reconnect policy every
  adapter uses (lazy, checked, dropped on loss, throttled);
- :mod:`.errors` -- the one map from processfork errors to HTTP statuses and the
  ``{"error": {"code", "message"}}`` body (DESIGN §6);
- :mod:`.fence` -- :func:`fence`: the wait for torch's current stream that every adapter
  makes before a call that seals pages (processfork.h "GPU fences");
- :mod:`.routes` -- the one router factory for the snapshot / fork / checkout / merge /
  log / diff routes the engines' HTTP servers mount (needs FastAPI; import it on demand).
"""
from processfork._integration.session import Session, session_lost

__all__ = ["Session", "session_lost"]
