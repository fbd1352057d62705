"""Exceptions of the processfork package: one class per daemon / library result code.

Every failing call raises a subclass of :class:`Error`; ``.code`` is the numeric
``pf_result`` (equal to the daemon's status code) and ``.code_name`` its name
(``"PF_NOT_FOUND"``, ...).
"""
from __future__ import annotations

__all__ = [
    "Error", "InvalidArgument", "NotFound", "AlreadyExists", "OutOfMemory", "Unavailable",
    "Unsupported", "SystemFailure", "ProtocolError", "PermissionDenied", "Conflict",
    "DriverError", "InternalError", "DataCorrupt", "StaleHandle",
]


class Error(Exception):
    """Base class of every ProcessFork error.

    Attributes:
        code: the ``pf_result`` value (the daemon's status code), e.g. 2.
        code_name: its name, e.g. ``"PF_NOT_FOUND"``.
        message: the library's message for the failed call.
    """

    code: int = -1
    code_name: str = "PF_UNKNOWN_RESULT"

    def __init__(self, message: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
            self.code_name = _NAMES.get(code, "PF_UNKNOWN_RESULT")
        self.message = message
        super().__init__(f"{self.code_name}: {message}" if message else self.code_name)


class InvalidArgument(Error, ValueError):
    """Malformed or out-of-range argument; a too-small buffer (PF_INVALID_ARGUMENT)."""
    code, code_name = 1, "PF_INVALID_ARGUMENT"


class NotFound(Error, LookupError):
    """Unknown branch, CID, ref or page (PF_NOT_FOUND)."""
    code, code_name = 2, "PF_NOT_FOUND"


class AlreadyExists(Error):
    """PF_ALREADY_EXISTS."""
    code, code_name = 3, "PF_ALREADY_EXISTS"


class OutOfMemory(Error):
    """The pool has no free pages, or host memory ran out (PF_OUT_OF_MEMORY)."""
    code, code_name = 4, "PF_OUT_OF_MEMORY"


class Unavailable(Error, ConnectionError):
    """No daemon, daemon gone, timeout, or a closed client (PF_UNAVAILABLE). Also the answer
    of a mutating call during which the daemon restarted (the client reconnected; see
    docs/python.md "Daemon restarts")."""
    code, code_name = 5, "PF_UNAVAILABLE"


class Unsupported(Error):
    """Protocol/ABI mismatch, or an operation this pool cannot do (PF_UNSUPPORTED)."""
    code, code_name = 6, "PF_UNSUPPORTED"


class SystemFailure(Error, OSError):
    """An OS call failed (PF_SYSTEM)."""
    code, code_name = 7, "PF_SYSTEM"


class ProtocolError(Error):
    """The daemon broke the wire protocol (PF_PROTOCOL)."""
    code, code_name = 8, "PF_PROTOCOL"


class PermissionDenied(Error, PermissionError):
    """The daemon refused this uid, or a store into a page this session may not write
    (a sealed or shared page; PF_PERMISSION_DENIED)."""
    code, code_name = 9, "PF_PERMISSION_DENIED"


class Conflict(Error):
    """The branch belongs to another client's lease; a ref is in use (PF_CONFLICT)."""
    code, code_name = 10, "PF_CONFLICT"


class DriverError(Error):
    """The GPU driver failed while mapping the pool (PF_DRIVER)."""
    code, code_name = 11, "PF_DRIVER"


class InternalError(Error):
    """A bug in ProcessFork: an invariant broke (PF_INTERNAL)."""
    code, code_name = 12, "PF_INTERNAL"


class DataCorrupt(Error):
    """A snapshot's page no longer matches its digest and is quarantined (PF_DATA_CORRUPT)."""
    code, code_name = 13, "PF_DATA_CORRUPT"


class StaleHandle(Error, LookupError):
    """A branch id or page hold of an earlier daemon boot epoch: the daemon restarted since
    the handle was made, and what it named is gone; the client itself reconnected and
    works (PF_STALE; refused without a round trip). The message names both epochs."""
    code, code_name = 14, "PF_STALE"


_CLASSES: dict[int, type[Error]] = {
    c.code: c for c in (InvalidArgument, NotFound, AlreadyExists, OutOfMemory, Unavailable,
                        Unsupported, SystemFailure, ProtocolError, PermissionDenied, Conflict,
                        DriverError, InternalError, DataCorrupt, StaleHandle)
}
_NAMES: dict[int, str] = {c.code: c.code_name for c in _CLASSES.values()}


def _from_code(code: int, message: str) -> Error:
    """The exception for a pf_result (used by the extension module)."""
    cls = _CLASSES.get(code)
    return cls(message) if cls is not None else Error(message, code)
