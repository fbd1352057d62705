"""The worker role: copies between vLLM's KV blocks and ProcessFork pages.

DESIGN
  One instance per vLLM worker (GPU) process, with its own daemon session to its
  rank's daemon, and one :class:`VllmKVLayout` over the rank's KV cache tensors.

  Loads (``start_load_kv``): for each :class:`LoadSpec`, one ``Client.kv_load`` moves
  every layer of the listed pages into the listed blocks. On CUDA the copy is
  enqueued on the current stream, the stream vLLM's forward then runs on, so it is
  ordered after the engine's earlier work (``kv_copy`` then synchronizes that stream
  before returning: every copy is blocking); the pages stay held by the scheduler's
  branch until the request finishes.
  A load that cannot run (daemon down, page gone) adds its blocks to
  ``get_block_ids_with_load_errors()``, vLLM's contract for failed loads.

  Saves: the worker writes pages of its *own* branch (a branch belongs to the lease
  that made it, and ``kv_store`` writes only pages the caller's append gave it). The
  first :class:`SaveSpec` of a request opens ``branch(tokens)`` (reusing whatever
  the daemon already holds) and appends the rest; later specs append to it. The
  copies run layer by layer from ``save_kv_layer`` (vLLM calls it after each
  attention layer wrote its KV; each copy is ordered on the current stream and blocks
  until done) and
  ``wait_for_save`` copies any layer not yet copied (all of them when CUDA graphs
  skipped the per-layer hooks), waits for the stream, then commits: the pages are
  sealed and enter the prefix index only after their bytes are complete. The
  request's last spec frees the branch; its pages stay in the prefix index.

  A failed save is dropped (logged): a missing page is a future cache miss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from vllm.logger import init_logger

import processfork

from processfork._integration.session import Session, session_lost
from processfork.vllm._config import ConnectorSettings, RankAddress
from processfork.vllm._backends import BlockFormat, block_format
from processfork.vllm._geometry import KVGeometry, check_pool
from processfork.vllm._layout import VllmKVLayout
from processfork.vllm._metadata import ProcessForkConnectorMetadata, SaveSpec

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["WorkerSide"]

# Under "vllm": vLLM's logging config (handler, format, VLLM_LOGGING_LEVEL) applies.
logger = init_logger("vllm.processfork")


@dataclass
class _SaveBranch:
    branch: processfork.Branch
    generation: int  # the session that made it
    n_tokens: int


@dataclass
class _PendingSave:
    req_id: str
    entry: _SaveBranch
    last: bool


class WorkerSide:
    """See the module docstring. Methods mirror the worker-side connector calls.

    Args:
        settings: the connector's settings.
        geometry: this rank's KV geometry.
        rank: this worker's rank; ``rank_index`` its index in ``LoadSpec.pages``.
        vllm_config: the engine's config, to learn the attention backend's block format
            at ``register_kv_caches`` (None: vLLM's token-major views, as tests use).
    """

    def __init__(self, settings: ConnectorSettings, geometry: KVGeometry,
                 rank: RankAddress, rank_index: int,
                 vllm_config: "VllmConfig | None" = None) -> None:
        self._geometry = geometry
        self._vllm_config = vllm_config
        self._rank_index = rank_index
        sock = settings.socket_for(rank)
        self._session = Session(
            sock, settings.timeout_ms, settings.retry_interval_s,
            lambda c: check_pool(geometry, c.pool(), sock or "the default socket"),
            logger=logger)
        self._kv: VllmKVLayout | None = None
        self._saving: dict[str, _SaveBranch] = {}
        self._load_errors: set[int] = set()
        # this step's saves: prepared on first use, cleared by end_step()
        self._pending: list[_PendingSave] | None = None
        self._runs: np.ndarray | None = None
        self._stored_layers: set[int] = set()

    # ---- registration ------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: Mapping[str, torch.Tensor]) -> None:
        """Builds the layout over vLLM's tensors and connects (a geometry mismatch
        raises ValueError here, at start-up)."""
        fmt = BlockFormat("token-major", "")
        if self._vllm_config is not None:
            g = self._geometry
            fmt = block_format(self._vllm_config, g.layer_names, g.block_size, g.head_dim)
        self._kv = VllmKVLayout(kv_caches, self._geometry, fmt)
        logger.info("ProcessFork: KV blocks of %d layers, %s format%s", len(self._kv.layer_names),
                    fmt.kind, f" (backend {fmt.backend}, isa {fmt.isa})" if fmt.isa else
                    f" (backend {fmt.backend})" if fmt.backend else "")
        try:
            self._session.connect_now()
        except processfork.Error:
            pass  # logged; loads fail and saves are dropped until a reconnect succeeds

    @property
    def kv(self) -> VllmKVLayout | None:
        return self._kv

    # ---- loads -------------------------------------------------------------------------
    def start_load_kv(self, meta: ProcessForkConnectorMetadata) -> None:
        for spec in meta.loads:
            pages = spec.pages[self._rank_index] if self._rank_index < len(spec.pages) \
                else None
            client = self._session.get() if self._kv is not None else None
            epoch = spec.boot_epochs[self._rank_index] \
                if self._rank_index < len(spec.boot_epochs) else 0
            if client is not None and epoch != 0 and epoch != client.pool().boot_epoch:
                # The scheduler saw another daemon boot than this worker's connection: one
                # round trip lets the client notice a restart and reconnect (pool() makes
                # none), so the worker catches up with a restart the scheduler saw first.
                try:
                    client.health()
                except processfork.Error as e:
                    if session_lost(e):
                        self._session.drop(e)
            if pages is None or client is None or len(pages) != len(spec.block_ids) \
                    or (epoch != 0 and epoch != client.pool().boot_epoch):
                # (a daemon restarted since the scheduler read the page ids: they name
                # nothing of the new daemon's)
                self._load_errors.update(spec.block_ids)
                continue
            bs = self._kv.block_size
            runs = np.array([(p, 0, b * bs, bs) for p, b in zip(pages, spec.block_ids)],
                            dtype=np.int64).reshape(-1, 4)
            try:
                self._kv.load(client, runs)
            except processfork.Error as e:
                logger.warning("ProcessFork: load of request %s failed: %s", spec.req_id, e)
                self._load_errors.update(spec.block_ids)
                if session_lost(e):
                    self._session.drop(e)

    def take_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    # ---- saves -------------------------------------------------------------------------
    def save_layer(self, meta: ProcessForkConnectorMetadata, layer_name: str) -> None:
        """Copies layer ``layer_name`` of this step's saved blocks into their pages."""
        if self._kv is None or not meta.saves:
            return
        layer = self._kv.layer_index.get(layer_name)
        if layer is None or layer in self._stored_layers:
            return
        self._prepare(meta)
        if self._store(range(layer, layer + 1)):
            self._stored_layers.add(layer)

    def finish_saves(self, meta: ProcessForkConnectorMetadata) -> None:
        """Copies the layers not yet copied, waits for the copies, commits."""
        try:
            if self._kv is None or not meta.saves:
                return
            self._prepare(meta)
            if not self._pending:
                return
            n_layers = len(self._kv.layer_names)
            todo = [i for i in range(n_layers) if i not in self._stored_layers]
            start = 0
            while start < len(todo):  # contiguous ranges of missing layers
                end = start
                while end + 1 < len(todo) and todo[end + 1] == todo[end] + 1:
                    end += 1
                if not self._store(range(todo[start], todo[end] + 1)):
                    return
                start = end + 1
            self._kv.synchronize()
            self._commit()
        finally:
            self.end_step()

    def end_step(self) -> None:
        """Forgets this step's prepared saves (metadata cleared or replaced)."""
        self._pending, self._runs, self._stored_layers = None, None, set()

    def _prepare(self, meta: ProcessForkConnectorMetadata) -> None:
        """Opens / extends each saved request's branch and maps its new pages to
        blocks, once per step."""
        if self._pending is not None:
            return
        self._pending = []
        client = self._session.get()
        if client is None:
            return
        rows: list[tuple[int, int, int, int]] = []
        for spec in meta.saves:
            try:
                pending = self._append(client, spec, rows)
            except processfork.Error as e:
                logger.warning("ProcessFork: save of request %s failed: %s", spec.req_id, e)
                self._forget(spec.req_id)
                if session_lost(e):
                    self._lost(e)
                    return
                continue
            if pending is not None:
                self._pending.append(pending)
        self._runs = np.array(rows, dtype=np.int64).reshape(-1, 4)

    def _append(self, client: processfork.Client, spec: SaveSpec,
                rows: list[tuple[int, int, int, int]]) -> _PendingSave | None:
        bs = self._geometry.block_size
        if spec.first_token == 0:
            self._forget(spec.req_id)  # a save that restarts (e.g. after preemption)
            b = client.branch(spec.tokens, namespace=spec.namespace)
            entry = _SaveBranch(b, self._session.generation, b.reused_tokens)
            self._saving[spec.req_id] = entry
            new_tokens = spec.tokens[b.reused_tokens:]
        else:
            entry = self._saving.get(spec.req_id)
            if entry is None or entry.generation != self._session.generation \
                    or entry.n_tokens != spec.first_token:
                # the start of this request's save failed or its session ended
                self._forget(spec.req_id)
                return None
            new_tokens = spec.tokens
        runs = client.append(entry.branch, new_tokens) if new_tokens else []
        for r in runs:
            k = (r.first_token - spec.first_token) // bs
            if r.first_token % bs != r.first_slot or not 0 <= k < len(spec.block_ids):
                raise processfork.InvalidArgument(
                    f"write run {r} of request {spec.req_id} is not block-aligned")
            rows.append((r.page, r.first_slot,
                         spec.block_ids[k] * bs + r.first_token % bs, r.count))
        entry.n_tokens += len(new_tokens)
        return _PendingSave(spec.req_id, entry, spec.last)

    def _store(self, layers: range) -> bool:
        if self._runs is None or len(self._runs) == 0:
            return True
        client = self._session.get()
        if client is None:
            self._abandon()
            return False
        try:
            self._kv.store(client, self._runs, layers)
            return True
        except processfork.Error as e:
            logger.warning("ProcessFork: storing layers %s failed: %s", layers, e)
            if session_lost(e):
                self._lost(e)
            else:
                self._abandon()
            return False

    def _commit(self) -> None:
        client = self._session.get()
        for p in self._pending or []:
            if client is None:
                break
            try:
                client.commit(p.entry.branch)
                if p.last:
                    self._forget(p.req_id)
            except processfork.Error as e:
                logger.warning("ProcessFork: commit of request %s failed: %s", p.req_id, e)
                self._forget(p.req_id)
                if session_lost(e):
                    self._lost(e)
                    return

    def _abandon(self) -> None:
        """Drops this step's saves: their branches are freed uncommitted."""
        for p in self._pending or []:
            self._forget(p.req_id)
        self._pending, self._runs = [], None

    def _lost(self, e: processfork.Error) -> None:
        self._session.drop(e)
        self._saving.clear()  # the daemon ended the session's branches
        self._pending, self._runs = [], None

    def _forget(self, req_id: str) -> None:
        entry = self._saving.pop(req_id, None)
        if entry is None or entry.generation != self._session.generation:
            return
        client = self._session.get()
        if client is None:
            return
        try:
            client.free(entry.branch)
        except processfork.Error as e:
            if session_lost(e):
                self._lost(e)

    # ---- lifecycle ---------------------------------------------------------------------
    def finished(self, finished_req_ids: set[str]) -> None:
        """Releases the save branches of requests vLLM finished (aborted mid-prompt)."""
        for req_id in finished_req_ids:
            if req_id in self._saving:
                self._forget(req_id)

    def saving(self) -> int:
        """Requests whose save is open (tests, logs)."""
        return len(self._saving)

    def shutdown(self) -> None:
        for req_id in list(self._saving):
            self._forget(req_id)
        self._session.close()
