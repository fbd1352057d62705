"""Test helpers: SGLang HiCache host pools and storage configs, built on CPU.

SGLang 0.5.23's ``MHATokenToKVPoolHost`` (sglang/srt/mem_cache/pool_host/mha.py) cannot be
constructed here: importing sglang.srt.mem_cache.pool_host pulls in
sglang.srt.mem_cache.memory_pool -> sglang.srt.configs -> torchvision, which this
environment lacks (and the class wants device KV buffers of a model runner). ``HostPool``
therefore builds torch tensors with exactly the shapes and the page accessors of that
class, written from its source:

- ``init_kv_buffer`` (mha.py lines 305-339): ``kv_buffer`` dims per layout
  layer_first (2, L, S, H, D); page_first (2, S, L, H, D);
  page_first_direct (2, N, L, P, H, D); page_head (2, N, H, P, L, D).
- ``get_data_page`` (lines 713-725), ``get_dummy_flat_data_page`` (727-733),
  ``set_from_flat_data_page`` (735-767): a flat page is the layout's page slice flattened.
- attributes read by storage backends: ``layout, layer_num, head_num, head_dim,
  v_head_dim, page_size, dtype, size, page_num, kv_buffer`` (mha.py lines 191-207,
  base.py lines 202-229).
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any, Dict, List, Optional, Sequence

import torch

import processfork

from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig

LAYOUTS = ("layer_first", "page_first", "page_first_direct", "page_head")
PF_DTYPE = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


class HostPool:
    """An MHA host pool's tensors as SGLang lays them out (see the module docstring)."""

    def __init__(self, layout: str, layers: int, heads: int, head_dim: int, page_size: int,
                 pages: int, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> None:
        self.layout = layout
        self.layer_num, self.head_num, self.head_dim = layers, heads, head_dim
        self.v_head_dim = head_dim
        self.page_size, self.page_num = page_size, pages
        self.size = pages * page_size
        self.dtype, self.device = dtype, device
        L, H, D, P, N, S = layers, heads, head_dim, page_size, pages, self.size
        dims = {
            "layer_first": (2, L, S, H, D),
            "page_first": (2, S, L, H, D),
            "page_first_direct": (2, N, L, P, H, D),
            "page_head": (2, N, H, P, L, D),
        }[layout]
        self.kv_buffer = torch.zeros(dims, dtype=dtype, device=device)

    # -- SGLang's page accessors ----------------------------------------------------------
    def get_data_page(self, index: int, flat: bool = True) -> torch.Tensor:
        if self.layout == "layer_first":
            page = self.kv_buffer[:, :, index:index + self.page_size]
        elif self.layout == "page_first":
            page = self.kv_buffer[:, index:index + self.page_size]
        else:
            real = index // self.page_size
            page = self.kv_buffer[:, real:real + 1]
        return page.flatten() if flat else page

    def get_dummy_flat_data_page(self) -> torch.Tensor:
        return torch.zeros((2, self.layer_num, self.page_size, self.head_num, self.head_dim),
                           dtype=self.dtype, device=self.device).flatten()

    def set_from_flat_data_page(self, index: int, data_page: torch.Tensor) -> None:
        self.get_data_page(index, flat=False)[...] = data_page.reshape(
            self.get_data_page(index, flat=False).shape)

    # -- test helpers ---------------------------------------------------------------------
    def row(self, kv: int, layer: int, t: int, head: int) -> torch.Tensor:
        """The head_dim vector of K (kv=0) or V (kv=1) of host token t, by direct indexing."""
        P = self.page_size
        b = self.kv_buffer
        if self.layout == "layer_first":
            return b[kv, layer, t, head]
        if self.layout == "page_first":
            return b[kv, t, layer, head]
        if self.layout == "page_first_direct":
            return b[kv, t // P, layer, t % P, head]
        return b[kv, t // P, head, t % P, layer]

    def fill_random(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.kv_buffer.copy_(torch.randn(self.kv_buffer.shape, generator=g).to(self.dtype))

    def indices(self, pages: Sequence[int]) -> torch.Tensor:
        """Host indices of whole host pages, as SGLang passes them (int64)."""
        P = self.page_size
        return torch.tensor([p * P + i for p in pages for i in range(P)], dtype=torch.int64)

    def page_equal(self, other: "HostPool", page_a: int, page_b: int) -> bool:
        a = self.get_data_page(page_a * self.page_size, flat=False)
        b = other.get_data_page(page_b * other.page_size, flat=False)
        return torch.equal(a.view(torch.int16) if a.dtype == torch.bfloat16 else a,
                           b.view(torch.int16) if b.dtype == torch.bfloat16 else b)


def geometry_string(layers: int, heads: int, head_dim: int, dtype: torch.dtype, page_size: int) -> str:
    return (f"layers={layers},kv_heads={heads},head_dim={head_dim},dtype={PF_DTYPE[dtype]},"
            f"page_tokens={page_size}")


# The prefix-index namespace of a backend made from storage_config() (model_name "pf-test",
# not a directory: the name stands for the weights; processfork.sglang._config).
NAMESPACE = processfork.namespace("pf-test", None, None, None)


def storage_config(extra: Optional[Dict[str, Any]] = None, *, tp_rank: int = 0, tp_size: int = 1,
                   pp_rank: int = 0, pp_size: int = 1, is_mla: bool = False,
                   layout: str = "page_first") -> HiCacheStorageConfig:
    """What HiCacheController._generate_storage_config builds (cache_controller.py 748-810)."""
    return HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=pp_rank, pp_size=pp_size, attn_cp_rank=0,
        attn_cp_size=1, is_mla_model=is_mla, enable_storage_metrics=False,
        is_page_first_layout=layout == "page_first", model_name="pf-test",
        extra_config=dict(extra or {}))


def dynamic_extra(socket: str, **more: Any) -> Dict[str, Any]:
    """--hicache-storage-backend-extra-config of the dynamic backend."""
    d = {"backend_name": "processfork", "module_path": "processfork.sglang",
         "class_name": "ProcessForkStorage", "interface_v1": 1, "socket": socket}
    d.update(more)
    return d


def chain_keys(tokens: Sequence[int], page_size: int, prior: Optional[str] = None) -> List[str]:
    """DESIGN §4 prefix keys (docs/formats.md), written from the spec with hashlib."""
    keys: List[str] = []
    prev = bytes.fromhex(prior) if prior else None
    for i in range(0, len(tokens) - len(tokens) % page_size, page_size):
        h = hashlib.sha256()
        if prev is not None:
            h.update(prev)
        h.update(struct.pack(f"<{page_size}I", *tokens[i:i + page_size]))
        prev = h.digest()
        keys.append(h.hexdigest())
    return keys
