"""The client: one session with the ProcessFork daemon (docs/python.md).

A :class:`Client` wraps the C ABI's ``pf_client`` (compiled into ``processfork._core``).
It maps the daemon's page pool into this process, so :meth:`Client.page` is a zero-copy
NumPy view of a KV page that every other attached process sees too. Every call that
talks to the daemon releases the GIL while it waits.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, Union

import numpy as np

from processfork import _core
from processfork._errors import InvalidArgument, Unsupported
from processfork._layout import KVLayout, KVRuns, runs_array
from processfork._namespace import namespace_tag

__all__ = [
    "CUDA_STREAM_OWN", "DEFAULT_RECONNECT_TIMEOUT_MS", "DEFAULT_TIMEOUT_MS", "MAX_FORK", "Branch", "BranchInfo", "BranchView", "Client", "Diff",
    "GcResult", "LogEntry", "MergeResult", "PageView", "PoolInfo", "PoolStats", "RefEntry",
    "Snapshot", "SnapshotEntry", "AppendResult", "Source", "WriteRun", "connect",
]

DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_RECONNECT_TIMEOUT_MS = 3_000
_ALL_PAGES = 2**64 - 1  # view(wait_pages=None): wait for every page (pf_branch_view_ready)
MAX_FORK: int = _core.MAX_FORK
#: ``stream`` of :meth:`Client.kv_store` / :meth:`Client.kv_load` for the library's own
#: non-blocking CUDA stream (``PF_CUDA_STREAM_OWN``); 0 is the legacy default stream.
CUDA_STREAM_OWN: int = _core.CUDA_STREAM_OWN
# The dtype table is the library's (base/dtype.h, through the C ABI); NumPy has no bf16 or
# fp8, so page views show those as raw uint16 / uint8 of the same element size.
_DTYPES = {code: _core.dtype_name(code) for code in range(256) if _core.dtype_name(code)}
_NUMPY_DTYPES = {code: (np.float16 if name == "fp16" else np.float32 if name == "fp32"
                        else np.uint16 if _core.dtype_bytes(code) == 2 else np.uint8)
                 for code, name in _DTYPES.items()}


@dataclass(frozen=True)
class PoolInfo:
    """The pool's geometry and this session (from HELLO; no round trip).

    A page is ``[layers][2 (K, V)][page_tokens][kv_heads][head_dim]`` of ``dtype``.
    """
    layers: int
    kv_heads: int
    head_dim: int
    page_tokens: int
    dtype: str  # "bf16", "fp16", "fp32", "fp8_e4m3", "fp8_e5m2"
    page_bytes: int
    chunk_bytes: int
    capacity_bytes: int
    capacity_pages: int
    lease: int
    daemon_pid: int
    protocol: tuple[int, int]
    backend: str  # "host" or "cuda"
    device: str  # "host" or "cuda:N"
    device_memory: bool  # True: pages are GPU memory
    boot_epoch: int = 0  # the daemon's boot epoch (changes when it restarts)

    @property
    def page_shape(self) -> tuple[int, int, int, int, int]:
        """The shape of one page view: (layers, 2, page_tokens, kv_heads, head_dim)."""
        return (self.layers, 2, self.page_tokens, self.kv_heads, self.head_dim)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The NumPy dtype of page views (bf16 as uint16, fp8 as uint8)."""
        return np.dtype(_NUMPY_DTYPES.get(_DTYPE_CODES[self.dtype], np.uint8))


_DTYPE_CODES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class PoolStats:
    """Page accounting (one round trip)."""
    capacity_pages: int
    used_pages: int
    shared_pages: int
    cached_pages: int  # held by the prefix index alone (evictable)
    free_pages: int
    page_bytes: int
    chunk_bytes: int


@dataclass(frozen=True)
class Branch:
    """A branch id with what the call that made it knew.

    Every method taking a branch accepts a :class:`Branch` or a plain ``int`` id.
    ``n_tokens``: tokens the branch held when made; ``reused_tokens``: whole cached pages
    reused from the prefix index (:meth:`Client.branch`); ``cid``: the snapshot a
    checkout or fork started from ("" otherwise).
    """
    id: int
    n_tokens: int = 0
    reused_tokens: int = 0
    cid: str = ""

    def __int__(self) -> int:
        return self.id

    def __index__(self) -> int:
        return self.id


Source = Union[Branch, int, str]
"""A branch (Branch or id) or a snapshot (CID ``"sha256:..."`` or ref name)."""


@dataclass(frozen=True)
class WriteRun:
    """Where appended tokens' KV goes: tokens [first_token, first_token+count) live in
    page ``page``, slots [first_slot, first_slot+count)."""
    page: int
    first_slot: int
    count: int
    first_token: int


@dataclass(frozen=True)
class AppendResult:
    """The full answer of :meth:`Client.append_ex`."""
    first_token: int
    pages_added: int
    copied_page: bool  # the shared last page was copied first (copy-on-write)
    runs: list[WriteRun]


@dataclass(frozen=True)
class BranchView:
    """A branch's state (:meth:`Client.view`)."""
    id: int
    owner: int  # lease id; 0 = detached
    n_tokens: int
    n_pages: int
    fill_in_last_page: int
    pages: list[int]
    tokens: list[int] | None = None
    # Leading pages readable when the daemon answered: ``pages[:ready_pages]`` may be read;
    # later ones are still arriving from the daemon's store (a checkout of a paged-out
    # snapshot). None when not reported (a BranchView made by hand).
    ready_pages: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """A sealed, pinned, content-addressed state (:meth:`Client.snapshot`)."""
    cid: str
    n_tokens: int
    n_pages: int
    created: bool  # False: an identical snapshot existed (same CID)


@dataclass(frozen=True)
class MergeResult:
    """DESIGN §5 merge: ``branch`` holds the result; prefill ``recompute_tokens`` on it."""
    fast_forward: bool
    branch: Branch
    cid: str
    base: str  # nearest common ancestor CID; "" if none
    common_tokens: int
    recompute_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class GcResult:
    evicted_pages: int
    released_chunks: int


@dataclass(frozen=True)
class Diff:
    """:meth:`Client.diff`: the common token prefix and page indices by where they live."""
    common_tokens: int
    shared_pages: list[int]  # page indices of a whose pool page b also holds
    a_only_pages: list[int]
    b_only_pages: list[int]


@dataclass(frozen=True)
class LogEntry:
    """One snapshot of :meth:`Client.log` (newest first)."""
    cid: str
    name: str
    parents: list[str]
    n_tokens: int
    known: bool  # False: an ancestor that was unpinned (only its CID is left)


@dataclass(frozen=True)
class SnapshotEntry:
    """One pinned snapshot of :meth:`Client.snapshots`."""
    cid: str
    name: str
    n_tokens: int
    n_pages: int
    parents: list[str]


@dataclass(frozen=True)
class RefEntry:
    """One ref of :meth:`Client.refs`."""
    name: str
    cid: str


@dataclass(frozen=True)
class BranchInfo:
    """One branch of :meth:`Client.branches` (any client's)."""
    branch: int
    n_tokens: int
    n_pages: int
    fill_in_last_page: int
    base: str | None  # the CID its next snapshot chains on; None for a fresh branch
    parents: list[str]
    owner: int  # lease id; 0 = unowned (detached or made over HTTP)


class PageView:
    """A zero-copy view of one KV page, exported through DLPack.

    ``torch.from_dlpack(view)``, ``numpy.from_dlpack(view)`` (host pools) and other DLPack
    consumers take it. The device is CPU for host pools and CUDA (with the ordinal) for
    CUDA pools. Valid while the client is connected and the page is held.
    """

    __slots__ = ("_array", "page", "shape", "dtype", "ptr")

    def __init__(self, array: Any, page: int, shape: tuple[int, ...], dtype: str, ptr: int):
        self._array = array
        self.page = page
        self.shape = shape
        self.dtype = dtype  # the pool's dtype name ("bf16" pages are exported as uint16)
        self.ptr = ptr

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    def __repr__(self) -> str:
        return f"PageView(page={self.page}, shape={self.shape}, dtype={self.dtype}, device={self.__dlpack_device__()})"


def _answer(cls: Any, d: dict[str, Any]) -> Any:
    """A dataclass from one object of a DESIGN §6 answer, field by field (names, not
    positions); fields a newer daemon adds are left out."""
    return cls(**{f: d[f] for f in cls.__dataclass_fields__})


def _bid(branch: Branch | int) -> int:
    if isinstance(branch, Branch):
        return branch.id
    if isinstance(branch, (int, np.integer)) and not isinstance(branch, bool):
        return int(branch)
    raise TypeError(f"expected a Branch or an int branch id, got {type(branch).__name__}")


def _source(source: Source) -> int | str:
    if isinstance(source, str):
        return source
    return _bid(source)


def _tokens(tokens: Iterable[int] | None) -> list[int]:
    if tokens is None:
        return []
    if isinstance(tokens, np.ndarray):
        return tokens.astype(np.uint32, copy=False).ravel().tolist()
    return list(tokens)


class Client:
    """One session with the daemon (see :func:`connect`).

    Usable as a context manager; :meth:`close` ends the session: the daemon frees every
    branch of this client that was neither snapshotted nor detached, and the pool is
    unmapped (page views become invalid). A client may be shared by threads (its requests
    are serialized); use one client per thread for parallel requests.

    A daemon that restarts on the same socket does not end the client: its next call
    reconnects (:attr:`generation` counts the reconnections) and branch ids of the earlier
    daemon raise :class:`~processfork.StaleHandle` (docs/python.md "Daemon restarts").
    """

    def __init__(self, socket: str | None = None, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 attach: bool = True, spin_us: int = 0, *, reconnect: bool = True,
                 reconnect_timeout_ms: int = DEFAULT_RECONNECT_TIMEOUT_MS) -> None:
        self._c = _core.Client(socket, int(timeout_ms), bool(attach), int(spin_us),
                               bool(reconnect), int(reconnect_timeout_ms))
        self._info: PoolInfo | None = None

    # ---- session --------------------------------------------------------------------
    def close(self) -> None:
        """Ends the session (idempotent). Do not race it with other calls."""
        self._c.close()

    @property
    def closed(self) -> bool:
        return self._c.closed

    @property
    def generation(self) -> int:
        """How many times this client reconnected to a restarted daemon (0: never). When it
        changes, the earlier session's branches and page holds are gone and the pool is
        mapped at a new base: page views and pointers taken before must be re-taken. No
        round trip."""
        return self._c.generation

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "Client(closed)"
        i = self.pool()
        return f"Client(lease={i.lease}, device={i.device!r}, daemon_pid={i.daemon_pid})"

    # ---- pool -----------------------------------------------------------------------
    def pool(self) -> PoolInfo:
        """Geometry, device and lease (from HELLO; no round trip)."""
        d = self._c.pool_info()
        return PoolInfo(
            layers=d["layers"], kv_heads=d["kv_heads"], head_dim=d["head_dim"],
            page_tokens=d["page_tokens"], dtype=_DTYPES.get(d["dtype"], str(d["dtype"])),
            page_bytes=d["page_bytes"], chunk_bytes=d["chunk_bytes"],
            capacity_bytes=d["capacity_bytes"], capacity_pages=d["capacity_pages"],
            lease=d["lease"], daemon_pid=d["daemon_pid"],
            protocol=(d["protocol_major"], d["protocol_minor"]), backend=d["backend"],
            device=d["device"], device_memory=d["device_memory"], boot_epoch=d["boot_epoch"])

    def stats(self) -> PoolStats:
        """Page accounting of the pool (one round trip)."""
        s = self._c.pool_stats()
        return PoolStats(capacity_pages=s.capacity_pages, used_pages=s.used_pages,
                         shared_pages=s.shared_pages, cached_pages=s.cached_pages,
                         free_pages=s.free_pages, page_bytes=s.page_bytes,
                         chunk_bytes=s.chunk_bytes)

    def pool_json(self) -> dict[str, Any]:
        """The daemon's ``GET /v1/pool`` answer."""
        return json.loads(self._c.pool_json())

    def health(self) -> dict[str, Any]:
        """``{status, version, backend, device}``."""
        return json.loads(self._c.health())

    def mapping(self) -> dict[str, Any]:
        """This process's view of the pool: attached, mapped_chunks, mapped_bytes, epoch,
        latest_epoch, base (address). No round trip."""
        return self._c.mapping_info()

    def attach(self) -> None:
        """Maps the pool, or brings the mapping up to date (idempotent)."""
        self._c.attach()

    # ---- branches -------------------------------------------------------------------
    def branch(self, tokens: Iterable[int] | None = None,
               namespace: bytes | str | None = None) -> Branch:
        """A new branch of this client. With tokens, the longest cached prefix of whole
        pages is reused (no copy): the branch holds ``reused_tokens`` tokens and the caller
        appends the rest (``tokens[b.reused_tokens:]``).

        ``namespace`` (32 bytes or 64 hex digits; None: the default namespace, see
        :func:`processfork.namespace`) scopes the prefix lookup and every later commit of
        the branch, its forks and branches checked out from its snapshots.

        Raises:
            InvalidArgument (a ValueError): a malformed namespace (nothing is sent).
            Unsupported: a non-default namespace with a daemon older than protocol 3.1.
        """
        ns = namespace_tag(namespace, "branch: namespace")
        b = self._c.branch_create(_tokens(tokens), ns)
        return Branch(b.branch, b.n_tokens, b.reused_tokens)

    def append(self, branch: Branch | int, tokens: Iterable[int]) -> list[WriteRun]:
        """Appends tokens; returns where to write their KV (pages exclusive to this
        branch). Write them before the next operation on the branch."""
        return self.append_ex(branch, tokens).runs

    def append_ex(self, branch: Branch | int, tokens: Iterable[int]) -> AppendResult:
        """:meth:`append` with the whole answer (first_token, pages_added, copied_page)."""
        a = self._c.append(_bid(branch), _tokens(tokens))
        return AppendResult(a.first_token, a.pages_added, a.copied_page,
                            [WriteRun(page=r.page, first_slot=r.first_slot, count=r.count,
                                      first_token=r.first_token) for r in a.runs])

    def commit(self, branch: Branch | int) -> None:
        """Seals the branch's full pages and offers them to the prefix index."""
        self._c.commit(_bid(branch))

    def truncate(self, branch: Branch | int, n_tokens: int) -> None:
        """Keeps the first ``n_tokens`` tokens."""
        self._c.truncate(_bid(branch), int(n_tokens))

    def free(self, branch: Branch | int) -> None:
        """Frees a branch of this client (or a detached one)."""
        self._c.branch_free(_bid(branch))

    def detach(self, branch: Branch | int) -> None:
        """The branch outlives this connection (until freed)."""
        self._c.detach(_bid(branch))

    def view(self, branch: Branch | int, tokens: bool = False,
             wait_pages: int | None = None) -> BranchView:
        """A branch's state and page ids (and its tokens with ``tokens=True``).

        Returns once the branch's first ``min(wait_pages, n_pages)`` pages are readable
        (``None``: every page; ``0``: no wait): the pages of a checkout of a snapshot that
        lives only in the daemon's store arrive in page order after :meth:`checkout`
        returned. Every page id is listed either way; ``ready_pages`` of the answer says how
        many leading pages may be read. The wait releases the GIL and blocks this client's
        other requests; a wait longer than the client's timeout is a timeout (Unavailable).
        DataCorrupt when a page waited for failed its digest check."""
        if wait_pages is None:
            wait = _ALL_PAGES
        elif (isinstance(wait_pages, bool) or not isinstance(wait_pages, (int, np.integer))
              or wait_pages < 0):
            raise InvalidArgument(
                f"view: wait_pages must be None or an int >= 0, got {wait_pages!r}")
        else:
            wait = min(int(wait_pages), _ALL_PAGES)
        d = self._c.branch_view(_bid(branch), bool(tokens), wait)
        return BranchView(d["branch"], d["owner"], d["n_tokens"], d["n_pages"],
                          d["fill_in_last_page"], d["pages"], d.get("tokens"), d["ready_pages"])

    def branches(self) -> list[BranchInfo]:
        """Every branch of the daemon (all clients)."""
        return [_answer(BranchInfo, b) for b in json.loads(self._c.branches())["branches"]]

    # ---- snapshots, fork, checkout, merge -------------------------------------------
    def snapshot(self, branch: Branch | int, name: str | None = None,
                 sync: bool = False) -> Snapshot:
        """Seals and pins the branch under a content-addressed CID. A ``name`` is kept in the
        manifest (shown by :meth:`snapshots` and :meth:`log`) and is a ref: the ref ``name``
        names this snapshot from now on (moving off the one it named before, which stays
        pinned), so ``checkout(name)`` / ``fork(name, n)`` work; the ref blocks
        :meth:`unpin` until :meth:`ref_delete`. ``name`` must be a ref name
        (``[A-Za-z0-9._/-]``, 1..255 characters, not starting with ``.``, ``/``, ``-``),
        else InvalidArgument and nothing changes. With ``sync``, returns once the snapshot
        is durable in the daemon's store (:meth:`wait_durable`)."""
        s = self._c.snapshot(_bid(branch), name)
        if sync:
            self._c.wait_durable(s.cid)
        return Snapshot(s.cid, s.n_tokens, s.n_pages, s.created)

    def fork(self, source: Source, n: int) -> list[Branch]:
        """``n`` (1..MAX_FORK) new branches of this client at ``source``'s state
        (metadata only; one round trip)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidArgument(f"fork: n must be an int in 1..{MAX_FORK}, got {n!r}")
        f = self._c.fork(_source(source), int(n))
        return [Branch(i, f.n_tokens, 0, f.source) for i in f.branches]

    def checkout(self, cid_or_ref: str) -> Branch:
        """A new branch of this client at a snapshot (CID or ref)."""
        c = self._c.checkout(cid_or_ref)
        return Branch(c.branch, c.n_tokens, 0, c.cid)

    def merge(self, from_: Source, into: Source) -> MergeResult:
        """Merges ``from_`` into ``into`` (DESIGN §5); the result is a new branch."""
        m = self._c.merge(_source(from_), _source(into))
        n_tokens = self._c.branch_view(m.branch, False)["n_tokens"]
        return MergeResult(m.fast_forward, Branch(m.branch, n_tokens, 0, m.cid), m.cid, m.base,
                           m.common_tokens, list(m.recompute_tokens))

    def diff(self, a: Source, b: Source) -> Diff:
        """Common tokens, and the pages a and b share or hold alone."""
        return _answer(Diff, json.loads(self._c.diff(_source(a), _source(b))))

    def log(self, cid_or_ref: str) -> list[LogEntry]:
        """Ancestry of a snapshot, newest first."""
        return [_answer(LogEntry, e) for e in json.loads(self._c.log(cid_or_ref))["entries"]]

    def manifest(self, cid_or_ref: str) -> dict[str, Any]:
        """The snapshot's canonical manifest (docs/formats.md)."""
        return json.loads(self._c.manifest(cid_or_ref))

    def snapshots(self) -> list[SnapshotEntry]:
        """The daemon's pinned snapshots."""
        return [_answer(SnapshotEntry, e) for e in json.loads(self._c.snapshots())["snapshots"]]

    def unpin(self, cid: str) -> None:
        """Drops a snapshot's pin (Conflict while a ref names it)."""
        self._c.unpin(cid)

    def wait_durable(self, cid_or_ref: str) -> None:
        """Blocks until the snapshot is durable in the daemon's store (``serve --store``): its
        pages, then its manifest, are committed on disk, so it survives a restart or a crash.
        Unavailable when the daemon runs without a store."""
        self._c.wait_durable(cid_or_ref)

    # ---- refs -----------------------------------------------------------------------
    def ref_set(self, name: str, cid_or_ref: str) -> None:
        """Points ref ``name`` at a CID (or at what another ref names)."""
        self._c.ref_set(name, cid_or_ref)

    def ref_get(self, name: str) -> str:
        """The CID ref ``name`` names."""
        return self._c.ref_get(name)

    def ref_delete(self, name: str) -> None:
        self._c.ref_delete(name)

    def refs(self) -> list[RefEntry]:
        """The daemon's refs."""
        return [_answer(RefEntry, r) for r in json.loads(self._c.refs_list())["refs"]]

    # ---- gc -------------------------------------------------------------------------
    def gc(self, drop_cache: bool = False) -> GcResult:
        """Frees what nothing holds, gives empty trailing chunks back; ``drop_cache``
        drops every evictable cached prefix page too."""
        g = self._c.gc(bool(drop_cache))
        return GcResult(evicted_pages=g.evicted_pages, released_chunks=g.released_chunks)

    # ---- page views -----------------------------------------------------------------
    def page_ptr(self, page_id: int) -> int:
        """The address of page ``page_id`` in this process (a device address on CUDA)."""
        return self._c.page_ptr(int(page_id))

    def page_writable(self, page_id: int) -> bool:
        """Whether this session may write page ``page_id``: a page of :meth:`append`'s write
        runs or of :meth:`alloc_pages` that this session has not sealed or freed since
        (commit of a full page, snapshot, fork, merge, truncate, free, detach, publish,
        release). Every other page is sealed or shared: read-only. No round trip."""
        return bool(self._c.page_access(int(page_id)) & 1)

    def page_guarded(self, page_id: int) -> bool:
        """Whether a store into page ``page_id`` through this process's mapping faults
        (SIGSEGV) unless the page is writable: true on a host pool whose page size is a
        multiple of the OS page (docs/python.md, "Sealed pages")."""
        return bool(self._c.page_access(int(page_id)) & 2)

    def page(self, page_id: int) -> np.ndarray:
        """A zero-copy NumPy view of a host page:
        ``[layers, 2, page_tokens, kv_heads, head_dim]`` of uint16 (bf16), float16 or
        float32 (uint8 for fp8). Writable only when :meth:`page_writable` is true when the
        view is made; a view of a sealed or shared page is read-only (assignment raises
        ValueError). The array keeps this Client object alive, but it is valid only while
        the client is connected and the page is held by a branch or snapshot.
        Raises Unsupported on a CUDA pool (use :meth:`page_view` / :meth:`page_torch`)."""
        return self._c.page_array(int(page_id))

    def page_view(self, page_id: int) -> PageView:
        """A DLPack-exportable view of a page (CPU or CUDA device)."""
        info = self.pool()
        arr = self._c.page_dlpack(int(page_id))
        return PageView(arr, int(page_id), info.page_shape, info.dtype,
                        self._c.page_ptr(int(page_id)))

    def page_torch(self, page_id: int) -> Any:
        """The page as a torch tensor (zero-copy, via DLPack; bf16 pools as
        ``torch.bfloat16``). Raises ImportError when torch is not installed."""
        import torch  # noqa: PLC0415 (optional dependency)

        t = torch.from_dlpack(self.page_view(page_id))
        if self.pool().dtype == "bf16":
            t = t.view(torch.bfloat16)
        return t


    # ---- KV layout copies -------------------------------------------------------------
    def kv_store(self, layout: KVLayout, runs: KVRuns, *, layers: range | None = None,
                 stream: int = 0) -> int:
        """Copies KV from the engine's tensors into pool pages (docs/python.md, "KV layout
        copies").

        ``runs``: rows of ``(page, page_slot, engine_token, count)`` (an int array of shape
        (n, 4) or tuples): engine tokens [engine_token, engine_token+count) go to slots
        [page_slot, page_slot+count) of ``page``, for every layer (or ``layers``, a range
        with step 1). Stores only into pages this session may write
        (:meth:`page_writable`: the pages of :meth:`append`'s write runs or
        :meth:`alloc_pages`); sealed pages are shared and immutable.
        Blocking (GIL released); on a CUDA pool the copy is ordered on ``stream`` (a
        ``cudaStream_t`` as int: the stream that wrote the tensors, e.g.
        ``torch.cuda.current_stream().cuda_stream``; 0 is the legacy default stream, which
        is torch's default stream; :data:`CUDA_STREAM_OWN` the library's own stream, ordered
        after none of the caller's work) and complete on return. Before a call that seals
        the pages (commit, snapshot, fork, merge, publish) synchronize every stream of yours
        that wrote them (docs/python.md "Streams and fences"). Returns the bytes copied.

        Raises:
            InvalidArgument: layout and pool disagree (layers, dtype, device), a run is out
                of range (page, slots, engine tokens past ``layout.capacity_tokens``).
            PermissionDenied: a run names a page this session may not write (nothing is
                copied).
            Unavailable: the pool's device kernels cannot run in this process.
        """
        return self._kv_copy(layout, runs, layers, stream, store=True)

    def kv_load(self, layout: KVLayout, runs: KVRuns, *, layers: range | None = None,
                stream: int = 0) -> int:
        """Copies KV from pool pages into the engine's tensors; the mirror of
        :meth:`kv_store` (any page this session holds may be read)."""
        return self._kv_copy(layout, runs, layers, stream, store=False)

    def _kv_copy(self, layout: KVLayout, runs: KVRuns, layers: range | None, stream: int,
                 store: bool) -> int:
        if not isinstance(layout, KVLayout):
            raise TypeError(f"expected a KVLayout, got {type(layout).__name__}")
        info = self.pool()
        if layout.layers != info.layers:
            raise InvalidArgument(f"kv copy: the layout has {layout.layers} layers, the pool "
                                  f"{info.layers}")
        if layout.dtype != info.dtype:
            raise InvalidArgument(f"kv copy: the engine's dtype is {layout.dtype}, the pool's "
                                  f"{info.dtype} (nothing converts between them)")
        pool_device = "cpu" if not info.device_memory else info.device
        if layout.device != pool_device:
            raise (Unsupported if layout.device.startswith("cuda") or info.device_memory
                   else InvalidArgument)(
                f"kv copy: the engine's tensors are on {layout.device} but the pool's pages are "
                f"on {info.device}; both must be on the same device")
        if layers is None:
            layers = range(info.layers)
        if not isinstance(layers, range) or layers.step != 1 or len(layers) == 0:
            raise InvalidArgument(f"kv copy: layers must be a non-empty range with step 1, got "
                                  f"{layers!r}")
        arr = runs_array(runs)
        if layout.capacity_tokens and arr.shape[0]:
            end = int((arr[:, 2] + arr[:, 3]).max())
            if end > layout.capacity_tokens or int(arr[:, 2].min()) < 0:
                raise InvalidArgument(f"kv copy: runs reach engine token {end}, beyond the "
                                      f"layout's {layout.capacity_tokens} tokens")
        return self._c.kv_copy(list(layout.k_ptrs), list(layout.v_ptrs), layout.block_tokens,
                               layout.block_stride, layout.token_stride, layout.head_stride,
                               layout.elem_bytes, arr, layers.start, layers.stop, store,
                               int(stream))

    # ---- keyed pages ----------------------------------------------------------------
    # Pages addressed by their prefix key (DESIGN §4; docs/python.md "Keyed pages"): for
    # the page of tokens T after a prefix whose last page has key P,
    #   key = sha256(P_bytes + struct.pack(f"<{len(T)}I", *T)).hexdigest()
    # (no P for a sequence's first page) -- SGLang HiCache's page hash. Keys are 64
    # lowercase hex digits; malformed keys raise InvalidArgument before any round trip.
    # A *hold* is a reference this session keeps on a page: held pages are never evicted or
    # reused; holds end with release_pages(), publish_pages() (for the published pages), or
    # when the session ends (close(), or the process dies). Pages published by key are
    # found by token lookups too: branch(tokens) reuses them. At most MAX_KEYS_PER_CALL
    # keys or pages per call. Each call is one round trip (GIL released).
    def lookup_keys(self, keys: Sequence[str], *, hold: bool = True,
                    namespace: bytes | str | None = None) -> list[int]:
        """Page ids of the longest LEADING run of ``keys`` present in the daemon's prefix
        index (``result[i]`` holds ``keys[i]``). With ``hold=True`` this session holds each
        returned page until :meth:`release_pages` or the session ends; read it (page views,
        :meth:`kv_load`) only while held. Only pages published or committed in
        ``namespace`` (as for :meth:`branch`) are found."""
        if not isinstance(hold, (bool, np.bool_)):
            raise InvalidArgument(f"lookup_keys: hold must be a bool, got {hold!r}")
        ns = namespace_tag(namespace, "lookup_keys: namespace")
        return list(self._c.pages_lookup_keys(_key_bytes(keys, "lookup_keys"), bool(hold), ns))

    def alloc_pages(self, n: int) -> list[int]:
        """``n`` fresh exclusive pages held by this session, to write (:meth:`kv_store`,
        :meth:`page`) and then :meth:`publish_pages`. The pool grows, then evicts least
        recently used cached pages, as for :meth:`append`.

        Raises:
            OutOfMemory: the pool cannot supply ``n`` pages (nothing is allocated).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) \
                or not 0 <= n <= MAX_KEYS_PER_CALL:
            raise InvalidArgument(f"alloc_pages: n must be an int in 0..{MAX_KEYS_PER_CALL}, "
                                  f"got {n!r}")
        return list(self._c.pages_alloc(int(n)))

    def publish_pages(self, keys: Sequence[str], pages: Sequence[int],
                      parent_key: str | None = None,
                      namespace: bytes | str | None = None) -> int:
        """Seals ``pages`` (content digest; immutable from now on) and records ``pages[i]``
        under ``keys[i]`` in the prefix index, chained after ``parent_key`` (None: the first
        page of a sequence). Keys already present keep their page (the new page is freed).
        Ends this session's holds on ``pages``; returns how many keys were new. The keys
        (and ``parent_key``) live in ``namespace`` (as for :meth:`branch`).

        Raises:
            InvalidArgument: malformed keys, ``len(keys) != len(pages)``, a key or page
                listed twice, or a page that is not an unpublished :meth:`alloc_pages` page
                of this session (nothing changes).
        """
        key_bytes = _key_bytes(keys, "publish_pages")
        page_ids = _page_ids(pages, "publish_pages")
        if len(page_ids) * _KEY_BYTES != len(key_bytes):
            raise InvalidArgument(f"publish_pages: {len(key_bytes) // _KEY_BYTES} keys for "
                                  f"{len(page_ids)} pages (one key per page)")
        parent = (None if parent_key is None
                  else _key_bytes([parent_key], "publish_pages parent_key"))
        ns = namespace_tag(namespace, "publish_pages: namespace")
        return int(self._c.pages_publish(key_bytes, page_ids, parent, ns))

    def release_pages(self, pages: Sequence[int]) -> None:
        """Ends one hold per listed page (from :meth:`lookup_keys` or :meth:`alloc_pages`).

        Raises:
            InvalidArgument: this session holds a page fewer times than it is listed
                (nothing changes).
        """
        self._c.pages_release(_page_ids(pages, "release_pages"))


# ---- keyed pages: argument checks ----------------------------------------------------
MAX_KEYS_PER_CALL = 65536
_KEY_BYTES = 32
_HEX_KEY = re.compile(r"[0-9a-f]{64}")


def _key_bytes(keys: Sequence[str], what: str) -> bytes:
    """The binary form of hex prefix keys, checked (InvalidArgument)."""
    if isinstance(keys, (str, bytes)):
        raise InvalidArgument(f"{what}: keys must be a sequence of hex strings, not a single "
                              f"{type(keys).__name__}")
    out = []
    for i, k in enumerate(keys):
        if not isinstance(k, str) or _HEX_KEY.fullmatch(k) is None:
            raise InvalidArgument(f"{what}: key {i} is not 64 lowercase hex digits: {k!r}")
        out.append(bytes.fromhex(k))
    if len(out) > MAX_KEYS_PER_CALL:
        raise InvalidArgument(f"{what}: {len(out)} keys; at most {MAX_KEYS_PER_CALL} per call")
    return b"".join(out)


def _page_ids(pages: Sequence[int], what: str) -> list[int]:
    """Page ids as a list of ints in 0..2**32-1, checked (InvalidArgument)."""
    if isinstance(pages, np.ndarray):
        pages = pages.ravel().tolist()
    out = []
    for p in pages:
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) \
                or not 0 <= p < 2**32:
            raise InvalidArgument(f"{what}: {p!r} is not a page id")
        out.append(int(p))
    if len(out) > MAX_KEYS_PER_CALL:
        raise InvalidArgument(f"{what}: {len(out)} pages; at most {MAX_KEYS_PER_CALL} per call")
    return out


def connect(socket: str | None = None, timeout_ms: int = DEFAULT_TIMEOUT_MS, *,
            attach: bool = True, spin_us: int = 0, reconnect: bool = True,
            reconnect_timeout_ms: int = DEFAULT_RECONNECT_TIMEOUT_MS) -> Client:
    """Connects to the daemon and (unless ``attach=False``) maps its page pool.

    Args:
        socket: the daemon's Unix socket; None = ``$PROCESSFORK_SOCKET``, else the
            daemon's default (``$XDG_RUNTIME_DIR/processfork.sock`` or
            ``/tmp/processfork-$UID.sock``).
        timeout_ms: per send / receive (0 = the library's 10 s default).
        attach: map the pool now (otherwise on the first page access).
        spin_us: busy-wait this long for each reply before sleeping (lower latency).
        reconnect: reconnect to a daemon restarted on the same socket (otherwise every
            call after it went away raises Unavailable).
        reconnect_timeout_ms: how long the call that finds the daemon gone keeps trying
            to reconnect (0 = the library's 3 s default).

    Raises:
        Unavailable: no daemon listens at the socket.
    """
    return Client(socket, timeout_ms, attach, spin_us, reconnect=reconnect,
                  reconnect_timeout_ms=reconnect_timeout_ms)
