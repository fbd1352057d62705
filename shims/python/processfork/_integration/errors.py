"""One map from processfork errors to HTTP answers, for the routes adapters add to an
engine's HTTP server (DESIGN §6, and the daemon's own HTTP port: docs/http.md).

Every error answer is ``{"error": {"code", "message"}}``:

======  =====================  ===========================================================
status  code                   raised for
======  =====================  ===========================================================
400     ``invalid_argument``   a bad request (:func:`bad_request`); ``InvalidArgument``
400     ``unsupported``        ``Unsupported`` (an operation this pool cannot do)
401     ``unauthorized``       ``PermissionDenied`` (the daemon refused this process)
404     ``not_found``          ``NotFound``: unknown branch, CID, ref, or nothing cached
409     ``conflict``           ``Conflict`` (a branch of another session), ``AlreadyExists``
413     ``payload_too_large``  a body over the route's limit (:data:`TOO_LARGE`)
503     ``unavailable``        ``Unavailable``: no daemon (the session reconnects later)
507     ``out_of_memory``      ``OutOfMemory``: the pool is out of pages
500     ``data_corrupt``       ``DataCorrupt``: the source reaches a quarantined page
500     ``internal``           any other error (``SystemFailure``, ``ProtocolError``, ...)
======  =====================  ===========================================================

Pure Python (no web framework): the routes turn an :class:`HttpError` into a response.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple, Type

import processfork

__all__ = ["HttpError", "bad_request", "http_error", "too_large"]


class HttpError(Exception):
    """An error answer: ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> Dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str) -> HttpError:
    """400 ``invalid_argument``: the request itself is wrong (it changed nothing)."""
    return HttpError(400, "invalid_argument", message)


def too_large(limit: int) -> HttpError:
    """413 ``payload_too_large``: a body over ``limit`` bytes."""
    return HttpError(413, "payload_too_large", f"body over {limit} bytes")


# (error class, status, code): classes are disjoint but for the base class, order is moot
_MAP: Tuple[Tuple[Type[processfork.Error], int, str], ...] = (
    (processfork.InvalidArgument, 400, "invalid_argument"),
    (processfork.Unsupported, 400, "unsupported"),
    (processfork.PermissionDenied, 401, "unauthorized"),
    (processfork.NotFound, 404, "not_found"),
    (processfork.Conflict, 409, "conflict"),
    (processfork.AlreadyExists, 409, "conflict"),
    (processfork.Unavailable, 503, "unavailable"),
    (processfork.OutOfMemory, 507, "out_of_memory"),
    (processfork.DataCorrupt, 500, "data_corrupt"),
)


def http_error(e: processfork.Error) -> HttpError:
    """The answer for a failed daemon call: see the table above (500 ``internal`` for
    anything not in it). The message is the library's, without the ``PF_...:`` prefix."""
    message = e.message or str(e)
    for cls, status, code in _MAP:
        if isinstance(e, cls):
            return HttpError(status, code, message)
    return HttpError(500, "internal", message)
