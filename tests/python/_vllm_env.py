"""A real vLLM 0.33 engine core on CPU around ProcessForkConnector, for the adapter tests.

What is real: vLLM's ``VllmConfig`` (with a ``ModelConfig`` of a tiny Llama whose HF
config is written to a temp dir), its ``Scheduler`` (which creates the SCHEDULER-role
connector through ``KVConnectorFactory`` from ``kv_connector_module_path``, and
calls it exactly as in serving), the WORKER-role connector built by the same
factory, and the per-layer KV cache tensors, allocated by vLLM's own
``create_kv_cache_views`` (the function ``vllm/v1/worker/utils.py:allocate_kv_cache``
calls for each ``KVCacheTensor``).

What stands in for the GPU model runner (which cannot run without vLLM's CUDA/CPU
kernels): :meth:`Engine.step` makes the worker calls in the order of
``vllm/v1/worker/kv_connector_model_runner_mixin.py:_get_kv_connector_output``
(bind metadata; start_load_kv before the forward when ``has_sync_kv_loads``; per
layer wait_for_layer_load / attention writes KV / save_kv_layer, the order of
``vllm/model_executor/layers/attention/kv_transfer_utils.py:maybe_transfer_kv_layer``;
wait_for_save; get_transfer_results; get_block_ids_with_load_errors; clear), and
"the forward" writes a deterministic KV for each computed token (:func:`token_kv`)
into the token's slot, as vLLM's reshape_and_cache writes slot
``block_id * block_size + offset``.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import torch

GEOMETRY = "layers=2,kv_heads=2,head_dim=16,dtype=fp16,page_tokens=4"
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn")
BLOCK_SIZE = 4
KV_HEADS = 2
HEAD_DIM = 16
DTYPE = torch.float16

sys.path.insert(0, str(Path(__file__).parent))


def tiny_model_dir(where: Path) -> str:
    """A Llama HF config (2 layers, 2 KV heads of 16, fp16) for vLLM's ModelConfig:
    the KV geometry of GEOMETRY. No weights: nothing here runs the model."""
    import transformers

    d = where / "tiny-llama"
    if not (d / "config.json").exists():
        transformers.LlamaConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
            max_position_embeddings=512, torch_dtype="float16",
            architectures=["LlamaForCausalLM"]).save_pretrained(d)
    return str(d)


def vllm_config(model_dir: str, socket: str | None, *, kv_role: str = "kv_both",
                num_blocks: int = 64, max_batched_tokens: int = 256,
                prefix_caching: bool = True, extra: dict[str, Any] | None = None,
                module_path: str | None = "processfork.vllm",
                connector: str = "ProcessForkConnector", block_size: int = BLOCK_SIZE):
    """A real VllmConfig selecting the connector as ``--kv-transfer-config`` would."""
    from vllm.config import (CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig,
                             SchedulerConfig, VllmConfig)

    ex = dict(extra or {})
    if socket is not None:
        ex.setdefault("socket", socket)
    ex.setdefault("timeout_ms", 5000)
    ex.setdefault("retry_interval_s", 0.0)
    kt = KVTransferConfig(kv_connector=connector, kv_connector_module_path=module_path,
                          kv_role=kv_role, kv_connector_extra_config=ex)
    mc = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float16",
                     max_model_len=512)
    vc = VllmConfig(model_config=mc, kv_transfer_config=kt,
                    device_config=DeviceConfig(device="cpu"),
                    cache_config=CacheConfig(block_size=block_size,
                                             enable_prefix_caching=prefix_caching),
                    scheduler_config=SchedulerConfig(
                        max_num_batched_tokens=max_batched_tokens,
                        max_num_seqs=min(8, max_batched_tokens),
                        max_model_len=512, is_encoder_decoder=False))
    vc.cache_config.num_gpu_blocks = num_blocks  # what the engine core sets after profiling
    return vc


def kv_cache_config(num_blocks: int, layout_name: str = "LBNHC", block_size: int = BLOCK_SIZE):
    """vLLM's KVCacheConfig for the two layers: one KVCacheTensor, strides per the
    KVCacheTensor docstring (vllm/v1/kv_cache_interface.py): layer-outermost layouts
    give each layer a region (layer_stride = page * num_blocks, block_stride = page),
    block-outermost ones interleave layers inside a block."""
    from vllm.v1.kv_cache_interface import (FullAttentionSpec, KVCacheConfig,
                                            KVCacheGroupSpec, KVCacheTensor)
    from vllm.v1.kv_cache_layout import KVCacheLayout

    spec = FullAttentionSpec(block_size=block_size, num_kv_heads=KV_HEADS,
                             head_size=HEAD_DIM, dtype=DTYPE)
    page = spec.page_size_bytes
    layout = KVCacheLayout[layout_name]
    if layout.is_layer_compact:
        layer_stride, block_stride = page * num_blocks, page
    else:
        layer_stride, block_stride = page, page * len(LAYERS)
    tensor = KVCacheTensor(size=page * num_blocks * len(LAYERS), layers=list(LAYERS),
                           layer_stride=layer_stride, block_stride=block_stride)
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[tensor],
                         kv_cache_groups=[KVCacheGroupSpec(list(LAYERS), spec)],
                         kv_cache_layout=layout_name)


def kv_caches(kcc, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The per-layer ``[B, H, N, 2*head_size]`` views vLLM allocates (see module doc)."""
    from vllm.v1.kv_cache_interface import create_kv_cache_views
    from vllm.v1.kv_cache_layout import KVCacheLayout

    tensor = kcc.kv_cache_tensors[0]
    spec = kcc.kv_cache_groups[0].kv_cache_spec
    buf = torch.zeros(tensor.size, dtype=torch.int8, device=device)
    views = create_kv_cache_views(buf, spec, kcc.num_blocks,
                                  KVCacheLayout[kcc.kv_cache_layout], tensor)
    return dict(zip(tensor.layers, views))


def token_kv(seed: int, token_id: int, position: int) -> torch.Tensor:
    """The KV "the model" computes for a token: ``[layers, 2, kv_heads, head_dim]``,
    a function of (seed, token id, position) only, so two engines computing the same
    prefix get the same bytes."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + token_id * 4099 + position)
    return torch.randn((len(LAYERS), 2, KV_HEADS, HEAD_DIM), generator=g).to(DTYPE)


def read_slot(kv: dict[str, torch.Tensor], block_id: int, offset: int) -> torch.Tensor:
    """``[layers, 2, kv_heads, head_dim]`` of one slot (FlashAttention's split:
    K = content[:head_size], V = content[head_size:], flash_attn.py)."""
    rows = []
    for name in LAYERS:
        c = kv[name][block_id, :, offset, :]  # [heads, 2*head_dim]
        rows.append(torch.stack([c[:, :HEAD_DIM], c[:, HEAD_DIM:]]))
    return torch.stack(rows).cpu()


def write_slot(kv: dict[str, torch.Tensor], layer: int, block_id: int, offset: int,
               value: torch.Tensor) -> None:
    c = kv[LAYERS[layer]][block_id, :, offset, :]
    c[:, :HEAD_DIM] = value[layer, 0].to(c.device)
    c[:, HEAD_DIM:] = value[layer, 1].to(c.device)


def request_block_hasher(config: Any, hash_block_size: int) -> Any:
    """vLLM's own request block hasher, made as ``EngineCore.__init__`` makes it
    (vllm/v1/engine/core.py, 0.32 and 0.33): the hash function named by
    ``cache_config.prefix_caching_hash_algo``, ``init_none_hash`` seeded with it, then
    ``get_request_block_hasher``. vLLM 0.33 also passes ``num_hash_lookahead_tokens``;
    0.32's ``get_request_block_hasher`` has no such parameter. Requests made without a
    hasher have no block hashes, and 0.32's block pool indexes them (IndexError)."""
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    hash_fn = get_hash_fn_by_name(config.cache_config.prefix_caching_hash_algo)
    init_none_hash(hash_fn)
    extra = {}
    if "num_hash_lookahead_tokens" in inspect.signature(get_request_block_hasher).parameters:
        extra["num_hash_lookahead_tokens"] = config.num_hash_lookahead_tokens
    return get_request_block_hasher(hash_block_size, hash_fn, **extra)


class Engine:
    """vLLM's Scheduler plus one worker-role connector over vLLM-laid-out tensors."""

    def __init__(self, model_dir: str, socket: str | None, *, seed: int = 1,
                 num_blocks: int = 64, layout: str = "LBNHC", device: str = "cpu",
                 block_size: int = BLOCK_SIZE, **config_kw: Any) -> None:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
        from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
        from vllm.v1.core.kv_cache_utils import resolve_kv_cache_block_sizes
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.structured_output import StructuredOutputManager

        self.seed = seed
        self.block_size = block_size
        self.config = vllm_config(model_dir, socket, num_blocks=num_blocks,
                                  block_size=block_size, **config_kw)
        self.kcc = kv_cache_config(num_blocks, layout, block_size)
        # block sizes, block hasher and requests as vLLM's EngineCore makes them
        block_size, hash_block_size = resolve_kv_cache_block_sizes(self.kcc, self.config)
        self.scheduler = Scheduler(self.config, self.kcc,
                                   StructuredOutputManager(self.config),
                                   block_size=block_size, hash_block_size=hash_block_size)
        self.block_hasher = request_block_hasher(self.config, hash_block_size)
        self.worker = KVConnectorFactory.create_connector(self.config, KVConnectorRole.WORKER,
                                                          self.kcc)
        self.kv = kv_caches(self.kcc, device)
        self.worker.register_kv_caches(self.kv)
        self.load_errors: set[int] = set()
        self.tokens: dict[str, list[int]] = {}

    @property
    def connector(self):
        """The scheduler-role connector the Scheduler made."""
        return self.scheduler.connector

    def add(self, req_id: str, tokens: list[int], max_tokens: int = 4, *,
            prompt_embeds: torch.Tensor | None = None, **request_kw: Any) -> None:
        """Adds a request; ``request_kw`` go to vLLM's Request (``cache_salt``,
        ``lora_request``). With ``prompt_embeds`` the prompt has no token ids (``tokens``
        must be vLLM's placeholders, ``[0] * len(prompt_embeds)``)."""
        from vllm.sampling_params import SamplingParams
        from vllm.v1.request import Request

        self.tokens[req_id] = list(tokens)
        ids = None if prompt_embeds is not None else list(tokens)
        self.scheduler.add_request(Request(req_id, ids, SamplingParams(max_tokens=max_tokens),
                                           None, prompt_embeds=prompt_embeds,
                                           block_hasher=self.block_hasher, **request_kw))

    def block_ids(self, req_id: str) -> list[int]:
        return list(self.scheduler.kv_cache_manager.get_block_ids(req_id)[0])

    def step(self):
        """One scheduler step and its worker side; returns the SchedulerOutput."""
        return self.run_worker(self.scheduler.schedule())

    def run_worker(self, out):
        """The worker side of a step the scheduler planned (``out``)."""
        w = self.worker
        w.bind_connector_metadata(out.kv_connector_metadata)
        if out.has_sync_kv_loads:
            w.start_load_kv(None)  # the connector does not read the forward context
        computed: list[tuple[list[int], int, int, list[int]]] = []
        for new in out.scheduled_new_reqs:
            n = out.num_scheduled_tokens[new.req_id]
            computed.append((self.tokens[new.req_id], new.num_computed_tokens, n,
                             self.block_ids(new.req_id)))
        cached = out.scheduled_cached_reqs
        for i, rid in enumerate(cached.req_ids):
            computed.append((self.tokens[rid], cached.num_computed_tokens[i],
                             out.num_scheduled_tokens[rid], self.block_ids(rid)))
        for layer, name in enumerate(LAYERS):
            w.wait_for_layer_load(name)
            for tokens, start, n, blocks in computed:  # attention writes this layer's KV
                for pos in range(start, min(start + n, len(tokens))):
                    write_slot(self.kv, layer, blocks[pos // self.block_size],
                               pos % self.block_size, token_kv(self.seed, tokens[pos], pos))
            w.save_kv_layer(name, self.kv[name], None)
        if not out.has_sync_kv_loads:
            w.start_load_kv(None)
        w.wait_for_save()
        w.get_transfer_results(out.finished_req_ids)
        self.load_errors |= w.get_block_ids_with_load_errors()
        w.clear_connector_metadata()
        return out

    def finish(self, req_id: str) -> None:
        from vllm.v1.request import RequestStatus

        self.scheduler.finish_requests(req_id, RequestStatus.FINISHED_ABORTED)

    def slot_kv(self, req_id: str, position: int) -> torch.Tensor:
        blocks = self.block_ids(req_id)
        return read_slot(self.kv, blocks[position // self.block_size],
                         position % self.block_size)

    def close(self) -> None:
        self.worker.shutdown()
        self.scheduler.connector.shutdown()
