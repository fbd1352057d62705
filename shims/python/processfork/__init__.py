"""processfork: Python client of the ProcessFork KV-cache runtime (docs/python.md).

    import processfork
    with processfork.connect() as c:
        b = c.branch()
        runs = c.append(b, [1, 2, 3])
        page = c.page(runs[0].page)   # zero-copy NumPy view of the KV page
        snap = c.snapshot(b, name="prompt")
        kids = c.fork(snap.cid, 4)
"""
from processfork import _core
from processfork._client import (
    CUDA_STREAM_OWN,
    DEFAULT_TIMEOUT_MS,
    MAX_FORK,
    AppendResult,
    Branch,
    BranchInfo,
    BranchView,
    Client,
    Diff,
    GcResult,
    LogEntry,
    MergeResult,
    PageView,
    PoolInfo,
    PoolStats,
    RefEntry,
    Snapshot,
    SnapshotEntry,
    Source,
    WriteRun,
    connect,
)
from processfork._cli import cli_path
from processfork._fingerprint import model_fingerprint
from processfork._namespace import NAMESPACE_BYTES, namespace
from processfork._layout import DTYPE_BYTES, KVLayout, KVRuns
from processfork._errors import (
    AlreadyExists,
    Conflict,
    DataCorrupt,
    DriverError,
    Error,
    InternalError,
    InvalidArgument,
    NotFound,
    OutOfMemory,
    PermissionDenied,
    ProtocolError,
    StaleHandle,
    SystemFailure,
    Unavailable,
    Unsupported,
)

__version__: str = _core.version()

__all__ = [
    "CUDA_STREAM_OWN",
    "DEFAULT_TIMEOUT_MS", "MAX_FORK", "AppendResult", "Branch", "BranchInfo", "BranchView",
    "Client", "Diff", "GcResult", "LogEntry", "MergeResult", "PageView", "PoolInfo", "PoolStats",
    "RefEntry", "Snapshot", "SnapshotEntry", "Source",
    "WriteRun", "connect", "cli_path", "NAMESPACE_BYTES", "namespace", "model_fingerprint", "DTYPE_BYTES", "KVLayout", "KVRuns",
    "Error", "AlreadyExists", "Conflict", "DataCorrupt", "DriverError", "InternalError", "InvalidArgument",
    "NotFound", "OutOfMemory", "PermissionDenied", "ProtocolError", "StaleHandle", "SystemFailure",
    "Unavailable", "Unsupported", "__version__",
]
