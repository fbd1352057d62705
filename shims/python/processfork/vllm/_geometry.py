"""The model's per-rank KV geometry as vLLM sees it, and its match with the pool.

A ProcessFork page is one vLLM block: ``page_tokens == block_size``, and the pool's
``layers / kv_heads / head_dim / dtype`` equal this rank's KV share (its KV heads under
tensor parallelism, its layers under pipeline parallelism). Anything else is refused
with a ValueError naming both sides, at connector start-up, never mid-request.

Supported KV caches: one KV cache group of full attention (``FullAttentionSpec``,
sliding-window layers included because vLLM keeps their blocks for every token when
the hybrid KV cache manager is off), K and V of the same head size, unquantized or
FP8 with per-tensor scales. MLA, Mamba/linear attention, per-token-head quantization
and packed formats are refused: their pages do not have the pool's layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.kv_cache_interface import KVCacheConfig

    from processfork import PoolInfo

__all__ = ["KVGeometry", "geometry_from_vllm", "check_pool", "torch_dtype_name"]

_TORCH_DTYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float8_e4m3fn: "fp8_e4m3",
    torch.float8_e5m2: "fp8_e5m2",
}
_FP8_CACHE_DTYPES = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}


def torch_dtype_name(dtype: torch.dtype, cache_dtype: str = "auto") -> str:
    """The pool dtype name of a vLLM KV cache element type.

    vLLM stores FP8 caches as ``torch.uint8``; ``cache_dtype`` (``--kv-cache-dtype``)
    tells which FP8 format. Raises ValueError for anything the pool cannot hold.
    """
    if dtype == torch.uint8 and cache_dtype in _FP8_CACHE_DTYPES:
        return _FP8_CACHE_DTYPES[cache_dtype]
    name = _TORCH_DTYPES.get(dtype)
    if name is None:
        raise ValueError(f"ProcessForkConnector: KV cache dtype {dtype} "
                         f"(--kv-cache-dtype {cache_dtype}) has no ProcessFork pool dtype; "
                         f"supported: fp16, bf16, fp32, fp8_e4m3, fp8_e5m2")
    return name


@dataclass(frozen=True)
class KVGeometry:
    """This rank's KV as the pool must hold it."""
    layers: int  # attention layers in this rank's KV cache group
    kv_heads: int  # KV heads of this rank
    head_dim: int
    dtype: str  # pool dtype name
    block_size: int  # tokens per vLLM block (== page_tokens)
    layer_names: tuple[str, ...]  # vLLM layer names, in pool layer order


def _layer_order(names: list[str]) -> list[str]:
    """Layer names in model order: by the layer index in the name
    (``model.layers.7.self_attn.attn`` -> 7), which is also the order every other
    instance of the model (and SGLang's ``layer_id``) uses."""
    from vllm.model_executor.models.utils import extract_layer_index

    try:
        return sorted(names, key=extract_layer_index)
    except (AssertionError, ValueError):
        return list(names)


def geometry_from_vllm(vllm_config: "VllmConfig",
                       kv_cache_config: "KVCacheConfig") -> KVGeometry:
    """Reads this rank's KV geometry from the KV cache config vLLM hands the connector.

    Raises ValueError for KV caches a page cannot represent (module docstring).
    """
    from vllm.v1.kv_cache_interface import (
        FullAttentionSpec,
        KVQuantMode,
        MLAAttentionSpec,
        UniformTypeKVCacheSpecs,
    )

    groups = [g for g in kv_cache_config.kv_cache_groups if g.layer_names]
    if len(groups) != 1:
        kinds = [type(g.kv_cache_spec).__name__ for g in groups]
        raise ValueError(f"ProcessForkConnector needs exactly one KV cache group of full "
                         f"attention; this model has {len(groups)}: {kinds}")
    group = groups[0]
    spec: Any = group.kv_cache_spec
    if isinstance(spec, UniformTypeKVCacheSpecs):
        specs = list(spec.kv_cache_specs.values())
        if any(s != specs[0] for s in specs[1:]):
            raise ValueError("ProcessForkConnector: the attention layers' KV specs differ")
        spec = specs[0]
    if not isinstance(spec, FullAttentionSpec) or isinstance(spec, MLAAttentionSpec):
        raise ValueError(f"ProcessForkConnector supports full attention KV caches, not "
                         f"{type(spec).__name__}")
    if spec.head_size_v != spec.head_size:
        raise ValueError(f"ProcessForkConnector: K head size {spec.head_size} != V head "
                         f"size {spec.head_size_v}; a page holds equal K and V rows")
    if spec.kv_quant_mode not in (KVQuantMode.NONE, KVQuantMode.FP8_PER_TENSOR):
        raise ValueError(f"ProcessForkConnector: KV quantization {spec.kv_quant_mode.name} "
                         f"stores scales inside vLLM's blocks; pages cannot hold them")
    if (spec.num_head_slots is not None or spec.state_content_bytes is not None
            or spec.tokens_per_state != 1):
        raise ValueError("ProcessForkConnector: packed KV pages (head slots, packed content "
                         "or multi-token states) are not supported")
    cache_dtype = str(getattr(vllm_config.cache_config, "cache_dtype", "auto"))
    return KVGeometry(
        layers=len(group.layer_names),
        kv_heads=int(spec.num_kv_heads),
        head_dim=int(spec.head_size),
        dtype=torch_dtype_name(spec.dtype, cache_dtype),
        block_size=int(spec.block_size),
        layer_names=tuple(_layer_order(list(group.layer_names))),
    )


def check_pool(geom: KVGeometry, pool: "PoolInfo", where: str, *,
               check_layers: bool = True) -> None:
    """Raises ValueError unless the pool at ``where`` holds exactly ``geom``'s pages.

    ``check_layers=False``: skip the layer count (the scheduler of a pipeline-parallel
    engine sees every stage's layers; each stage's worker checks its own)."""
    want = (geom.layers, geom.kv_heads, geom.head_dim, geom.dtype, geom.block_size)
    have = (pool.layers, pool.kv_heads, pool.head_dim, pool.dtype, pool.page_tokens)
    if not check_layers:
        want = (have[0],) + want[1:]
    if want != have:
        raise ValueError(
            f"ProcessForkConnector: the daemon at {where} has geometry layers={have[0]}, "
            f"kv_heads={have[1]}, head_dim={have[2]}, dtype={have[3]}, page_tokens={have[4]} "
            f"but this vLLM rank needs layers={want[0]}, kv_heads={want[1]}, "
            f"head_dim={want[2]}, dtype={want[3]}, page_tokens={want[4]} (= --block-size); "
            f"start the daemon with --geometry layers={want[0]},kv_heads={want[1]},"
            f"head_dim={want[2]},dtype={want[3]},page_tokens={want[4]}")
