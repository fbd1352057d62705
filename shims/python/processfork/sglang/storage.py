"""``ProcessForkStorage``: an SGLang HiCache L3 storage backend over a ProcessFork daemon.

Loaded by SGLang's dynamic backend factory::

    --enable-hierarchical-cache --hicache-storage-backend dynamic
    --hicache-storage-backend-extra-config '{"backend_name": "processfork",
        "module_path": "processfork.sglang", "class_name": "ProcessForkStorage",
        "interface_v1": 1, "socket": "/run/pf/tp{tp_rank}.sock"}'

``StorageBackendFactory._create_dynamic_backend`` constructs it as
``ProcessForkStorage(storage_config, kwargs)`` and the controller then calls
``register_mem_pool_host(host_pool)`` with the host (L2) pool.

DESIGN: SGLang names each page of KV by its page hash, ``get_hash_str`` -- SHA-256 chained
over the page's token ids -- which is exactly ProcessFork's prefix key (DESIGN §4). Any
other key string is accepted too and mapped to a prefix key (``_keys.py``). So the
backend stores nothing of its own: pages live in the daemon's pool, indexed by key in the
daemon's prefix index, where any other process (another SGLang instance, a vLLM
instance, an agent holding the tokens: ``Client.branch(tokens)``) finds and shares them.

Every lookup and publish acts in the backend's prefix-index namespace (the model's
fingerprint; ``_config.storage_namespace``): the keys are SGLang's unchanged page hashes,
so another engine of the same model (same fingerprint) shares them, one of another model
never does.

- exists / batch_exists: ``lookup_keys(keys, hold=False)``, the leading run.
- batch_get_v1 (zero copy): ``lookup_keys(keys, hold=True)``, then one ``kv_load`` from
  those pool pages straight into the host pool's ``kv_buffer`` (a ``KVLayout`` over it;
  SGLang's host indices are the layout's engine tokens), then ``release_pages``.
- batch_set_v1 (zero copy): skips the leading run already present, ``alloc_pages`` for the
  rest, one ``kv_store`` from ``kv_buffer``, then ``publish_pages(keys, pages,
  parent_key)`` -- the parent is the key before the batch (``extra_info.prefix_keys[-1]``,
  which SGLang passes with ``"hicache_storage_pass_prefix_keys": true``).
- get / set / batch_get / batch_set (the older flat-page path): the same with a
  ``KVLayout`` over the caller's flat page tensor.
- A CUDA pool with SGLang's CPU (pinned) host pool: pages are copied with torch through
  DLPack page views (``Client.page_torch``) instead of ``KVLayout``.

Logging: through the logger ``sglang.srt.mem_cache.storage.processfork``, where SGLang's
own storage backends log (they use ``logging.getLogger(__name__)`` under
``sglang.srt.mem_cache.storage``), so SGLang's logging setup -- ``configure_logger``'s
format and ``--log-level``, or a ``SGLANG_LOGGING_CONFIG_PATH`` config for ``sglang`` --
applies to this backend's messages as to theirs.

Failures: construction raises (daemon unreachable, MLA model, bad settings) and
``register_mem_pool_host`` raises on a geometry mismatch -- SGLang then reports that the
backend failed to attach. After that no ProcessFork error reaches SGLang's threads: a
failed lookup or load is a miss (``False`` / ``None`` / 0), a failed store is ``False``,
each logged (rate-limited); a lost daemon is reconnected (processfork._integration's
``Session``: at most once per ``reconnect_interval_s``, the geometry checked again).

Threads: SGLang calls this object from its prefetch, prefetch-IO and backup threads at once;
each thread has its own daemon session, and every page hold is released by the call that
took it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

import processfork
from processfork._integration.fence import fence
from processfork._integration.session import Session, session_lost
from processfork.sglang._config import Settings, read_settings, storage_namespace
from processfork.sglang._hostpool import (
    HostGeometry,
    as_int,
    host_geometry,
    layer_views,
    page_as_canonical,
    page_starts,
    pool_dtype_matches,
    pool_dtype_names,
    runs_for,
)
from processfork.sglang._keys import prefix_keys
from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
    PoolName,
    PoolTransfer,
    PoolTransferResult,
)

# Under SGLang's logger hierarchy, beside its in-tree storage backends (module docstring).
logger = logging.getLogger("sglang.srt.mem_cache.storage.processfork")

__all__ = ["ProcessForkStorage"]

_LOG_EVERY_S = 10.0
# Keys per lookup round trip (the client's limit; SGLang's IO batches are 128 pages, but
# the hybrid controller queries a whole request's hashes at once).
_MAX_KEYS = getattr(processfork._client, "MAX_KEYS_PER_CALL", 65536)


class _Throttle:
    """Logs a failure of an operation at most once per ``_LOG_EVERY_S`` (with a count)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = {}

    def warn(self, op: str, msg: str, kind: str = "") -> None:
        """Logs ``msg`` unless ``op`` failed the same ``kind`` of way in the last
        ``_LOG_EVERY_S`` seconds."""
        now = time.monotonic()
        op_kind = f"{op}:{kind}"
        with self._lock:
            if now - self._last.get(op_kind, -1e9) < _LOG_EVERY_S:
                self._suppressed[op_kind] = self._suppressed.get(op_kind, 0) + 1
                return
            self._last[op_kind] = now
            n = self._suppressed.pop(op_kind, 0)
        more = f" ({n} more since the last report)" if n else ""
        logger.warning("ProcessFork HiCache %s failed: %s%s", op, msg, more)


def _parent_key(extra_info: Optional[HiCacheStorageExtraInfo]) -> Optional[str]:
    if extra_info is not None and extra_info.prefix_keys:
        return extra_info.prefix_keys[-1]
    return None


class ProcessForkStorage(HiCacheStorage):
    """HiCache storage whose pages are ProcessFork pool pages keyed by SGLang's page hashes.

    See the module docstring for the data paths and the failure policy.
    """

    def __init__(self, storage_config: HiCacheStorageConfig,
                 kwargs: Optional[Dict[str, Any]] = None) -> None:
        """Reads the settings and connects to this rank's daemon.

        Args:
            storage_config: SGLang's HiCacheStorageConfig (ranks, ``is_mla_model``,
                ``extra_config`` with the settings of ``_config.py``).
            kwargs: the factory's extra keyword arguments (unused; SGLang passes ``{}``).

        Raises:
            ValueError: an MLA model, split heads, or a bad setting.
            ConnectionError: the daemon is unreachable.
        """
        if storage_config.is_mla_model:
            raise ValueError(
                "ProcessFork HiCache backend: MLA models are not supported (ProcessFork pages "
                "hold K and V per kv head; an MLA latent cache has neither)")
        if storage_config.should_split_heads:
            raise ValueError(
                "ProcessFork HiCache backend: split-head storage (tp_lcm_size with "
                "page_head) is not supported; give each TP rank its own daemon instead")
        self.storage_config = storage_config
        self.settings: Settings = read_settings(storage_config.extra_config, storage_config)
        self._namespace = storage_namespace(self.settings, storage_config)
        # Public: the namespace every lookup and publish of this backend uses (for the
        # /processfork routes and for clients that read the backend's pages).
        self.namespace: Optional[bytes] = self._namespace
        self._geometry: Optional[HostGeometry] = None
        self._kv_buffer: Optional[torch.Tensor] = None
        self._host_layout: Any = None
        self._torch_copy = False
        self._unsupported_pools: List[str] = []
        self._log = _Throttle()
        self._pool: Optional[processfork.PoolInfo] = None
        # one client per thread: SGLang's HiCache threads call the backend at once, and
        # page holds belong to the session (thread) that took them
        self._session = Session(self.settings.socket, self.settings.timeout_ms,
                                self.settings.reconnect_interval_s, self._on_connect,
                                per_thread=True)
        try:
            self._session.connect_now()
        except processfork.Error as e:
            where = self.settings.socket or "the default socket ($PROCESSFORK_SOCKET)"
            raise ConnectionError(
                f"ProcessFork HiCache backend (tp_rank {storage_config.tp_rank}): cannot reach "
                f"the ProcessFork daemon at {where}: {e}. Start one with `processfork serve "
                "--geometry layers=..,kv_heads=..,head_dim=..,dtype=..,page_tokens=..` "
                "matching this rank's KV cache.") from e
        extra = storage_config.extra_config
        if extra is not None and "interface_v1" not in extra:
            # The controller picks batch_get_v1/batch_set_v1 (zero copy, and the parent key
            # reaches the daemon) only when the dynamic config says interface_v1; it reads
            # the flag from this very dict after the factory returns.
            extra["interface_v1"] = 1
            logger.info("ProcessFork HiCache backend: enabling the zero-copy interface_v1 path")
        logger.info("ProcessFork HiCache backend: connected to %s (tp_rank %d, pool %s)",
                    self.settings.socket or "the default socket", storage_config.tp_rank,
                    self._pool)

    # ---- attach -------------------------------------------------------------------------
    def _on_connect(self, client: processfork.Client) -> None:
        """Checks a new session's pool against the registered host pool."""
        info = client.pool()
        if self._geometry is not None:
            self._check_geometry(info, self._geometry)
        self._pool = info

    def _check_geometry(self, info: processfork.PoolInfo, g: HostGeometry) -> None:
        bad = []
        for name, ours, theirs in (("layers", info.layers, g.layers),
                                   ("kv_heads", info.kv_heads, g.kv_heads),
                                   ("head_dim", info.head_dim, g.head_dim),
                                   ("page_tokens", info.page_tokens, g.page_tokens)):
            if ours != theirs:
                bad.append(f"{name} {ours} != {theirs}")
        if not pool_dtype_matches(g.dtype, info.dtype):
            bad.append(f"dtype {info.dtype} != {str(g.dtype).replace('torch.', '')}")
        if bad:
            names = pool_dtype_names(g.dtype)
            alt = "".join(f" (or dtype={n})" for n in names[1:])
            raise ValueError(
                f"ProcessFork HiCache backend (tp_rank {self.storage_config.tp_rank}): the "
                f"daemon's pool (layers={info.layers}, kv_heads={info.kv_heads}, "
                f"head_dim={info.head_dim}, page_tokens={info.page_tokens}, dtype={info.dtype}) "
                f"does not match SGLang's host pool ({g.describe()}): {'; '.join(bad)}. Start "
                f"this rank's daemon with --geometry layers={g.layers},kv_heads={g.kv_heads},"
                f"head_dim={g.head_dim},dtype={names[0]},page_tokens={g.page_tokens}{alt}")

    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        """Checks the host pool's geometry against the daemon's pool and builds the
        zero-copy layout over its ``kv_buffer``.

        Raises:
            ValueError: not an MHA pool, an unsupported layout, or a geometry mismatch.
        """
        super().register_mem_pool_host(mem_pool_host)
        g = host_geometry(mem_pool_host)
        info = self._pool
        if info is None:
            raise ConnectionError("ProcessFork HiCache backend: no daemon session")
        self._check_geometry(info, g)
        kv = mem_pool_host.kv_buffer
        self._torch_copy = bool(info.device_memory) != kv.is_cuda
        self._host_layout = None if self._torch_copy else self._layout_over(kv, g)
        self._kv_buffer = kv
        self._geometry = g
        logger.info("ProcessFork HiCache backend: host pool %s, %d tokens; copies by %s",
                    g.describe(), g.size_tokens, "torch page views" if self._torch_copy
                    else "KVLayout kernels")

    def register_mem_host_pool_v2(self, host_pool: Any, host_pool_name: Any) -> None:
        super().register_mem_host_pool_v2(host_pool, host_pool_name)
        if str(host_pool_name) != PoolName.KV.value:
            self._unsupported_pools.append(str(host_pool_name))

    def on_host_pools_registered(self) -> None:
        """Refuses hybrid models: ProcessFork stores the full-attention KV pool only.

        Raises:
            ValueError: SGLang registered a sidecar pool (SWA, Mamba, DSA indexer, ...).
        """
        if self._unsupported_pools:
            raise ValueError(
                "ProcessFork HiCache backend: only the full-attention KV pool can be stored; "
                f"this model also has the host pools {sorted(set(self._unsupported_pools))} "
                "(hybrid SWA / Mamba / sparse-attention models are not supported)")

    @staticmethod
    def _layout_over(kv: torch.Tensor, g: HostGeometry) -> Any:
        v = layer_views(kv, g)
        return processfork.KVLayout.from_torch(v.k, v.v, token_axis=v.token_axis,
                                               head_axis=v.head_axis, block_axis=v.block_axis)

    # ---- helpers ------------------------------------------------------------------------
    def _failed(self, op: str, e: BaseException) -> None:
        if session_lost(e):
            self._session.drop(e)
        self._log.warn(op, f"{type(e).__name__}: {e}", kind=type(e).__name__)

    def _ready(self, op: str) -> Optional[HostGeometry]:
        if self._geometry is None:
            self._log.warn(op, "no host pool registered (register_mem_pool_host was not called)")
        return self._geometry

    def _prefix_keys(self, op: str, keys: Sequence[str]) -> Optional[List[str]]:
        """The prefix keys of SGLang's ``keys`` (``_keys.py``: page hashes as they are, any
        other string hashed), or None (logged) when a key is not a ``str``."""
        try:
            return prefix_keys(keys)
        except TypeError as e:
            self._log.warn(op, str(e), kind="TypeError")
            return None

    def _sync(self, kv: torch.Tensor) -> None:
        if kv.is_cuda:
            torch.cuda.synchronize(kv.device)

    def _pool_to_host(self, c: processfork.Client, pages: Sequence[int],
                      starts: Sequence[int]) -> None:
        """Copies pool pages into the host pool pages starting at ``starts``."""
        g, kv = self._geometry, self._kv_buffer
        if self._torch_copy:
            for p, s in zip(pages, starts):
                as_int(page_as_canonical(kv, g, s)).copy_(as_int(c.page_torch(p)))
            return
        c.kv_load(self._host_layout, runs_for(pages, starts, g.page_tokens))
        self._sync(kv)

    def _host_to_pool(self, c: processfork.Client, pages: Sequence[int],
                      starts: Sequence[int]) -> None:
        g, kv = self._geometry, self._kv_buffer
        if self._torch_copy:
            for p, s in zip(pages, starts):
                as_int(c.page_torch(p)).copy_(as_int(page_as_canonical(kv, g, s)))
            if kv.is_cuda or self._pool.device_memory:
                torch.cuda.synchronize()
            return
        c.kv_store(self._host_layout, runs_for(pages, starts, g.page_tokens))
        self._sync(kv)

    def _flat_page(self, t: Any, op: str) -> Optional[torch.Tensor]:
        """``t`` as a page of the host layout's shape, or None (logged) when it is not a
        contiguous tensor of one page of the pool's element size."""
        g = self._geometry
        if (not isinstance(t, torch.Tensor) or t.numel() != g.page_numel
                or t.element_size() != g.dtype.itemsize or not t.is_contiguous()):
            desc = (f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor)
                    else type(t).__name__)
            self._log.warn(op, f"expected a contiguous flat page of {g.page_numel} "
                               f"{str(g.dtype).replace('torch.', '')} elements, got {desc}")
            return None
        return t.view(g.page_shape())

    def _flat_copy(self, c: processfork.Client, page: int, shaped: torch.Tensor,
                   to_pool: bool) -> None:
        """Copies between pool page ``page`` and one page of the host layout (``shaped``)."""
        g = self._geometry
        pool_is_device = bool(self._pool is not None and self._pool.device_memory)
        if pool_is_device != shaped.is_cuda:
            view = page_as_canonical(shaped, g, 0)
            pv = c.page_torch(page)
            if to_pool:
                as_int(pv).copy_(as_int(view))
            else:
                as_int(view).copy_(as_int(pv))
            if pv.is_cuda:
                torch.cuda.synchronize(pv.device)
            return
        layout = self._layout_over(shaped, g)
        runs = [(int(page), 0, 0, g.page_tokens)]
        if to_pool:
            c.kv_store(layout, runs)
        else:
            c.kv_load(layout, runs)
        self._sync(shaped)

    def _store(self, op: str, keys: List[str], parent: Optional[str],
               write: Any) -> List[bool]:
        """Publishes prefix ``keys`` (a chain after ``parent``); ``write(c, i0, pages)``
        fills the fresh pages of keys[i0:]. Keys of the leading run already present are not
        rewritten. Never raises."""
        n = len(keys)
        m = 0
        try:
            c = self._session.client()
            m = len(c.lookup_keys(keys, hold=False, namespace=self._namespace))
            if m == n:
                return [True] * n
            if m > 0:
                parent = keys[m - 1]
            pages = c.alloc_pages(n - m)
            published = False
            try:
                write(c, m, pages)
                if self._kv_buffer is not None:
                    fence(self._kv_buffer.device)
                c.publish_pages(keys[m:], pages, parent_key=parent,
                                namespace=self._namespace)
                published = True
            finally:
                if not published:
                    try:
                        c.release_pages(pages)
                    except processfork.Error:
                        pass
            return [True] * n
        except Exception as e:  # noqa: BLE001 -- never into SGLang's backup thread
            self._failed(op, e)
            return [True] * m + [False] * (n - m)

    # ---- zero-copy (interface_v1) -------------------------------------------------------
    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        """Loads the leading run of ``keys`` found in the daemon into the host pool at
        ``host_indices`` (``len(keys) * page_size`` indices, page by page). Blocking.
        Returns one bool per key: True for the loaded leading run, then False."""
        n = len(keys)
        miss = [False] * n
        g = self._ready("batch_get_v1")
        if g is None or n == 0:
            return miss
        pkeys = self._prefix_keys("batch_get_v1", keys)
        if pkeys is None:
            return miss
        starts = page_starts(host_indices, n, g.page_tokens)
        if starts is None:
            self._log.warn("batch_get_v1", f"host_indices ({host_indices.numel()}) are not "
                                           f"{n} whole pages of {g.page_tokens} tokens")
            return miss
        try:
            c = self._session.client()
        except Exception as e:  # noqa: BLE001
            self._failed("batch_get_v1", e)
            return miss
        pages: List[int] = []
        loaded = 0
        try:
            pages = c.lookup_keys(pkeys, hold=True, namespace=self._namespace)
            if pages:
                self._pool_to_host(c, pages, starts[:len(pages)])
            loaded = len(pages)
        except Exception as e:  # noqa: BLE001
            self._failed("batch_get_v1", e)
        finally:
            if pages:
                try:
                    c.release_pages(pages)
                except Exception as e:  # noqa: BLE001
                    self._failed("batch_get_v1 (release)", e)
        return [True] * loaded + [False] * (n - loaded)

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        """Stores the host pool pages at ``host_indices`` under ``keys`` (one chain, after
        ``extra_info.prefix_keys[-1]`` when SGLang passes prefix keys). Blocking. Returns
        one bool per key (False: not stored)."""
        n = len(keys)
        g = self._ready("batch_set_v1")
        if g is None or n == 0:
            return [False] * n
        starts = page_starts(host_indices, n, g.page_tokens)
        if starts is None:
            self._log.warn("batch_set_v1", f"host_indices ({host_indices.numel()}) are not "
                                           f"{n} whole pages of {g.page_tokens} tokens")
            return [False] * n
        parent = _parent_key(extra_info)
        pkeys = self._prefix_keys("batch_set_v1", [*keys, *([] if parent is None else [parent])])
        if pkeys is None:
            return [False] * n
        return self._store("batch_set_v1", pkeys[:n], pkeys[n] if parent is not None else None,
                           lambda c, i0, pages: self._host_to_pool(c, pages, starts[i0:]))

    # ---- flat pages (the generic path) --------------------------------------------------
    def get(self, key: str, target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> torch.Tensor | None:
        """Loads page ``key`` into ``target_location`` (a flat page tensor as
        ``get_dummy_flat_data_page`` makes; a new CPU tensor when None) and returns it, or
        None when the key is missing or the load failed."""
        out = self.batch_get([key], [target_location] if target_location is not None else None)
        return out[0] if isinstance(out, list) and out else None

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None,
                  target_sizes: Optional[Any] = None) -> List[torch.Tensor | None] | int:
        """Loads the leading run of ``keys`` found into ``target_locations`` (flat pages;
        new CPU tensors when None). Returns the filled tensors, None from the first miss."""
        n = len(keys)
        miss: List[Optional[torch.Tensor]] = [None] * n
        g = self._ready("batch_get")
        if g is None or n == 0:
            return miss
        if target_locations is None:
            targets = [torch.empty(g.page_numel, dtype=g.dtype) for _ in range(n)]
        else:
            targets = list(target_locations)
            if len(targets) != n:
                self._log.warn("batch_get", f"{len(targets)} targets for {n} keys")
                return miss
        pkeys = self._prefix_keys("batch_get", keys)
        if pkeys is None:
            return miss
        try:
            c = self._session.client()
        except Exception as e:  # noqa: BLE001
            self._failed("batch_get", e)
            return miss
        pages: List[int] = []
        out = list(miss)
        try:
            pages = c.lookup_keys(pkeys, hold=True, namespace=self._namespace)
            for i, p in enumerate(pages):
                shaped = self._flat_page(targets[i], "batch_get")
                if shaped is None:
                    break
                self._flat_copy(c, p, shaped, to_pool=False)
                out[i] = targets[i]
        except Exception as e:  # noqa: BLE001
            self._failed("batch_get", e)
            out = list(miss)
        finally:
            if pages:
                try:
                    c.release_pages(pages)
                except Exception as e:  # noqa: BLE001
                    self._failed("batch_get (release)", e)
        return out

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> bool:
        """Stores the flat page ``value`` (``get_data_page(i, flat=True)``) under ``key``,
        as the first page of a chain (the flat interface carries no parent key)."""
        if value is None:
            self._log.warn("set", "no value given")
            return False
        return self.batch_set([key], [value])

    def batch_set(self, keys: List[str], values: Optional[Any] = None,
                  target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        """Stores flat pages ``values`` under ``keys`` (one chain; its parent is unknown on
        this interface). True when every key is stored."""
        n = len(keys)
        g = self._ready("batch_set")
        if g is None:
            return False
        if n == 0:
            return True
        vals = list(values) if values is not None else []
        if len(vals) != n:
            self._log.warn("batch_set", f"{len(vals)} values for {n} keys")
            return False
        shaped = [self._flat_page(v, "batch_set") for v in vals]
        if any(s is None for s in shaped):
            return False
        pkeys = self._prefix_keys("batch_set", keys)
        if pkeys is None:
            return False

        def write(c: processfork.Client, i0: int, pages: List[int]) -> None:
            for p, s in zip(pages, shaped[i0:]):
                self._flat_copy(c, p, s, to_pool=True)

        return all(self._store("batch_set", pkeys, None, write))

    # ---- existence ----------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """True when the daemon's prefix index has page ``key``."""
        return self.batch_exists([key]) == 1

    def batch_exists(self, keys: List[str],
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        """How many of ``keys``, from the first, the daemon has (0 on any failure)."""
        if not keys:
            return 0
        pkeys = self._prefix_keys("batch_exists", keys)
        if pkeys is None:
            return 0
        try:
            c = self._session.client()
            found, step = 0, _MAX_KEYS
            while found < len(pkeys):
                chunk = pkeys[found:found + step]
                hit = len(c.lookup_keys(chunk, hold=False, namespace=self._namespace))
                found += hit
                if hit < len(chunk):
                    break
            return found
        except Exception as e:  # noqa: BLE001
            self._failed("batch_exists", e)
            return 0

    # ---- v2 (pool transfers): the KV pool only ------------------------------------------
    def batch_exists_v2(self, keys: List[str], pool_transfers: Optional[List[PoolTransfer]] = None,
                        extra_info: Optional[HiCacheStorageExtraInfo] = None) -> PoolTransferResult:
        """KV hits as :meth:`batch_exists`; a transfer of any other pool has no pages here,
        so it makes the usable prefix empty (on_host_pools_registered refuses such models)."""
        kv = self.batch_exists(keys, extra_info)
        others = [t for t in pool_transfers or [] if str(t.name) != PoolName.KV.value]
        final = 0 if others else kv
        return PoolTransferResult(final, {PoolName.KV: kv} if kv else {},
                                  list(range(1, final + 1)))

    def _v2(self, transfers: List[PoolTransfer], extra_info: Optional[HiCacheStorageExtraInfo],
            fn: Any) -> Dict[str, List[bool]]:
        out: Dict[str, List[bool]] = {}
        for t in transfers:
            keys = list(t.keys or [])
            if str(t.name) == PoolName.KV.value and t.host_indices is not None:
                out[t.name] = fn(keys, t.host_indices, extra_info)
            else:
                out[t.name] = [False] * len(keys)
        return out

    def batch_get_v2(self, transfers: List[PoolTransfer],
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> dict[str, List[bool]]:
        """The KV pool's transfer as :meth:`batch_get_v1`; other pools fail (all False)."""
        return self._v2(transfers, extra_info, self.batch_get_v1)

    def batch_set_v2(self, transfers: List[PoolTransfer],
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> dict[str, List[bool]]:
        """The KV pool's transfer as :meth:`batch_set_v1`; other pools fail (all False)."""
        return self._v2(transfers, extra_info, self.batch_set_v1)

    # ---- admin --------------------------------------------------------------------------
    def clear(self) -> None:
        """SGLang's "clear storage": drops every evictable cached page of the daemon's
        prefix index (pages pinned by snapshots or held by branches stay)."""
        try:
            r = self._session.client().gc(drop_cache=True)
            logger.info("ProcessFork HiCache backend: cleared %d cached pages", r.evicted_pages)
        except Exception as e:  # noqa: BLE001
            self._failed("clear", e)

    def close(self) -> None:
        """Ends every daemon session of this backend (idempotent)."""
        self._session.close()

    def __repr__(self) -> str:
        return (f"ProcessForkStorage(socket={self.settings.socket!r}, "
                f"tp_rank={self.storage_config.tp_rank}, host={self._geometry and self._geometry.describe()})")
