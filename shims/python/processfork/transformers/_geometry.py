"""Pool geometry for a Hugging Face transformers model, and the check that the two match.

A ProcessFork pool has one geometry (DESIGN §2): ``layers, kv_heads, head_dim, dtype,
page_tokens``. A :class:`~processfork.transformers.ProcessForkCache` stores every KV
row of the model in the pool's pages, so the pool must have been started with the
model's own numbers: ``num_hidden_layers`` layers, ``num_key_value_heads`` KV heads,
``head_dim`` (``hidden_size // num_attention_heads`` when the config has none) and the
model's torch dtype. :func:`geometry_for` gives the ``--geometry`` string for
``processfork serve``; :func:`check_geometry` compares a live pool with a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import get_layer_types_and_kwargs

from processfork import InvalidArgument, PoolInfo

__all__ = ["ModelGeometry", "geometry_for", "model_geometry", "check_geometry", "torch_dtype"]

# pool dtype name <-> torch dtype. fp8 pools have no torch compute dtype a model runs in.
_TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_POOL_DTYPES: dict[torch.dtype, str] = {v: k for k, v in _TORCH_DTYPES.items()}
_MAX_PAGE_TOKENS = 65536  # the daemon's limit (base/page_format.cpp, Geometry::validate)


@dataclass(frozen=True)
class ModelGeometry:
    """What a model needs from a pool (``page_tokens`` is free: any value works)."""
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str  # pool dtype name: "fp32", "fp16" or "bf16"

    def geometry_string(self, page_tokens: int) -> str:
        """The ``processfork serve --geometry`` value for this model."""
        return (f"layers={self.layers},kv_heads={self.kv_heads},head_dim={self.head_dim},"
                f"dtype={self.dtype},page_tokens={page_tokens}")


def torch_dtype(pool_dtype: str) -> torch.dtype:
    """The torch dtype of a pool dtype name; InvalidArgument for fp8 and unknown names."""
    try:
        return _TORCH_DTYPES[pool_dtype]
    except KeyError:
        raise InvalidArgument(
            f"pool dtype {pool_dtype!r} has no torch compute dtype a transformers model runs in "
            f"(supported: {sorted(_TORCH_DTYPES)})") from None


def _pool_dtype(dtype: torch.dtype) -> str:
    try:
        return _POOL_DTYPES[dtype]
    except KeyError:
        raise InvalidArgument(
            f"model dtype {dtype} has no ProcessFork pool dtype (supported: "
            f"{sorted(str(d) for d in _POOL_DTYPES)})") from None


def _text_config(model_or_config: Any) -> Any:
    config = getattr(model_or_config, "config", model_or_config)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    return config


def model_geometry(model_or_config: Any, dtype: torch.dtype | None = None) -> ModelGeometry:
    """The geometry a model (or its config) needs.

    ``dtype``: the dtype the model runs in; default: the model's parameter dtype, else the
    config's ``dtype``, else torch's default dtype. Raises InvalidArgument for models whose
    layers are not all full attention (sliding-window, chunked, linear-attention and hybrid
    layers keep a different KV shape than "every token of every layer").
    """
    config = _text_config(model_or_config)
    if dtype is None:
        dtype = getattr(model_or_config, "dtype", None) if hasattr(model_or_config, "config") else None
    if dtype is None:
        dtype = getattr(config, "dtype", None)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.get_default_dtype()
    layer_types, _ = get_layer_types_and_kwargs(config)
    other = sorted({t for t in layer_types if t != "full_attention"})
    if other:
        raise InvalidArgument(
            f"ProcessForkCache supports full-attention layers only; this model has {other} layers")
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    return ModelGeometry(layers=len(layer_types), kv_heads=int(kv_heads), head_dim=int(head_dim),
                         dtype=_pool_dtype(dtype))


def geometry_for(model_or_config: Any, *, page_tokens: int = 16,
                 dtype: torch.dtype | None = None) -> str:
    """The ``--geometry`` string for ``processfork serve`` that fits this model, e.g.
    ``"layers=32,kv_heads=8,head_dim=128,dtype=bf16,page_tokens=16"`` for Llama-3-8B.

    ``page_tokens`` is free for transformers (any value works); when vLLM or SGLang share
    the daemon it must be their block size (vLLM's CPU backend: a multiple of 32, 128 by
    default). The daemon takes 1..65536."""
    if (isinstance(page_tokens, bool) or not isinstance(page_tokens, int)
            or not 1 <= page_tokens <= _MAX_PAGE_TOKENS):
        raise InvalidArgument(f"page_tokens must be an int in 1..{_MAX_PAGE_TOKENS}, "
                              f"got {page_tokens!r}")
    return model_geometry(model_or_config, dtype).geometry_string(page_tokens)


def check_geometry(pool: PoolInfo, needed: ModelGeometry) -> None:
    """Raises InvalidArgument naming every field where the pool differs from the model."""
    wrong = [f"{name}: pool {getattr(pool, name)} != model {getattr(needed, name)}"
             for name in ("layers", "kv_heads", "head_dim", "dtype")
             if getattr(pool, name) != getattr(needed, name)]
    if wrong:
        raise InvalidArgument(
            "the pool's geometry does not fit the model (" + "; ".join(wrong) + "); start the "
            "daemon with --geometry " + needed.geometry_string(pool.page_tokens))
