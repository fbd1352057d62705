"""``ProcessForkConnector``: vLLM's KV connector (``KVConnectorBase_V1``) over ProcessFork.

Selected with::

    vllm serve MODEL --block-size 16 --kv-transfer-config \\
      '{"kv_connector": "ProcessForkConnector",
        "kv_connector_module_path": "processfork.vllm",
        "kv_role": "kv_both"}'

(or ``"kv_connector": "ProcessForkConnector"`` alone once the package's
``vllm.general_plugins`` entry point has registered it with vLLM's factory). The block
size is the daemon's ``page_tokens``: 16 suits vLLM on a GPU; vLLM's CPU backend needs a
multiple of 32 (128 by default; docs/adapter-vllm.md, "Block sizes").

vLLM builds one instance per role (``vllm/distributed/kv_transfer/kv_connector/
factory.py``: ``connector_cls(config, role, kv_cache_config)``): the SCHEDULER role in
the engine core process (prefix lookups, load and save plans: _scheduler.py) and one
WORKER role per GPU worker (the copies: _worker.py). Scheduler -> worker traffic is
:class:`ProcessForkConnectorMetadata`, built each step.

``kv_role``: ``kv_consumer`` only loads, ``kv_producer`` only saves, ``kv_both``
does both. The connector is a best-effort cache: a failed save is a future miss, so
it never asks vLLM to keep blocks alive for it (``requires_kv_delivery`` is False).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from processfork.vllm._config import ConnectorSettings, RankAddress
from processfork.vllm._geometry import geometry_from_vllm
from processfork.vllm._metadata import ProcessForkConnectorMetadata
from processfork.vllm._namespace import RequestNamespaces
from processfork.vllm._scheduler import SchedulerSide
from processfork.vllm._worker import WorkerSide

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

__all__ = ["ProcessForkConnector"]



def _worker_rank() -> RankAddress:
    """This worker's (tp_rank, pp_rank) from vLLM's parallel state; (0, 0) when the
    model-parallel groups are not initialized (a single-process engine)."""
    from vllm.distributed import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return RankAddress(0, 0)
    return RankAddress(parallel_state.get_tensor_model_parallel_rank(),
                       parallel_state.get_pipeline_model_parallel_rank())


class ProcessForkConnector(KVConnectorBase_V1):
    """vLLM KV connector storing and loading KV blocks as ProcessFork pages.

    Construction (both roles) parses ``kv_connector_extra_config`` (_config.py), reads
    the model's KV geometry from ``kv_cache_config`` and connects to the daemon(s); a
    daemon with the wrong geometry raises ValueError (vLLM does not start), a daemon
    that is down is retried later and meanwhile every lookup is a miss.
    """

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig") -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        tcfg = self._kv_transfer_config
        self._settings = ConnectorSettings.from_extra_config(tcfg.kv_connector_extra_config)
        par = vllm_config.parallel_config
        tp, pp = par.tensor_parallel_size, par.pipeline_parallel_size
        self._settings.check_parallelism(tp, pp)
        self._geometry = geometry_from_vllm(vllm_config, kv_cache_config)
        self._load = bool(tcfg.is_kv_consumer)
        self._save = bool(tcfg.is_kv_producer)
        self._scheduler: SchedulerSide | None = None
        self._worker: WorkerSide | None = None
        if role == KVConnectorRole.SCHEDULER:
            ranks = [RankAddress(t, p) for p in range(pp) for t in range(tp)]
            mcfg = vllm_config.model_config
            namespaces = RequestNamespaces(mcfg.model, getattr(mcfg, "revision", None),
                                           self._settings.model_fingerprint)
            self._scheduler = SchedulerSide(self._settings, self._geometry, ranks,
                                            namespaces, load=self._load, save=self._save,
                                            check_layers=pp == 1)
            self._cache_hit_source = self._scheduler.hit_source() or CacheHitSource.HOST
        else:
            rank = _worker_rank()
            self._worker = WorkerSide(self._settings, self._geometry, rank,
                                      rank.pp_rank * tp + rank.tp_rank, vllm_config)

    @property
    def requires_kv_delivery(self) -> bool:
        """False: a best-effort cache; a dropped save is a future cache miss."""
        return False

    # ==============================
    # Worker-side methods
    # ==============================
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Builds the KV layout over vLLM's per-layer tensors and checks the pool."""
        assert self._worker is not None, "register_kv_caches is a worker-role call"
        self._worker.register_kv_caches(kv_caches)

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        super().bind_connector_metadata(connector_metadata)
        if self._worker is not None:
            self._worker.end_step()

    def clear_connector_metadata(self) -> None:
        super().clear_connector_metadata()
        if self._worker is not None:
            self._worker.end_step()

    def _meta(self) -> ProcessForkConnectorMetadata | None:
        meta = self._connector_metadata
        return meta if isinstance(meta, ProcessForkConnectorMetadata) else None

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        """Copies this step's loads (all layers) into the blocks before the forward reads
        them, ordered on the current stream and complete on return (vLLM calls this
        before the forward for synchronous loads). Failed loads are reported by
        :meth:`get_block_ids_with_load_errors`."""
        meta = self._meta()
        if self._worker is not None and meta is not None and meta.loads:
            self._worker.start_load_kv(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Returns at once: :meth:`start_load_kv` already copied every layer (the copies
        are blocking), so layer ``layer_name``'s KV is in place for its attention kernel."""
        return None

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: "AttentionMetadata", **kwargs: Any) -> None:
        """Copies this layer's newly full prompt blocks into their pages (ordered on the
        current stream on CUDA; complete on return)."""
        meta = self._meta()
        if self._worker is not None and meta is not None and meta.saves:
            self._worker.save_layer(meta, layer_name)

    def wait_for_save(self) -> None:
        """Copies the layers :meth:`save_kv_layer` did not (all of them under full CUDA
        graphs), waits for the copies and commits the pages into the daemon's prefix
        index. Blocking: when it returns the blocks may be reused."""
        meta = self._meta()
        if self._worker is not None and meta is not None and meta.saves:
            self._worker.finish_saves(meta)

    def get_finished(self, finished_req_ids: set[str]
                     ) -> tuple[set[str] | None, set[str] | None]:
        """Releases the save state of finished requests; (None, None): every transfer
        of this connector completes within its step."""
        if self._worker is not None and finished_req_ids:
            self._worker.finished(finished_req_ids)
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose load failed this step (vLLM recomputes or fails them per
        ``kv_load_failure_policy``)."""
        return self._worker.take_load_errors() if self._worker is not None else set()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()
        if self._scheduler is not None:
            self._scheduler.shutdown()

    # ==============================
    # Scheduler-side methods
    # ==============================
    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        """Whole blocks of ``request`` beyond ``num_computed_tokens`` that the daemon's
        prefix index holds on every rank (at least one token is left to compute);
        loaded synchronously (False). 0 when the daemon is unreachable."""
        assert self._scheduler is not None, "a scheduler-role call"
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        """Records which of the request's blocks receive which pages."""
        assert self._scheduler is not None, "a scheduler-role call"
        self._scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        """This step's loads and saves for the workers (resets the pending loads)."""
        assert self._scheduler is not None, "a scheduler-role call"
        return self._scheduler.build_connector_meta(scheduler_output)

    def request_finished(self, request: "Request", block_ids: list[int]
                         ) -> tuple[bool, dict[str, Any] | None]:
        """Frees the request's branches; (False, None): vLLM may free the blocks now."""
        assert self._scheduler is not None, "a scheduler-role call"
        self._scheduler.request_finished(request)
        return False, None
