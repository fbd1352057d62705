"""SGLang HiCache host pool geometry and layouts, as ProcessFork sees them.

SGLang 0.5.23 keeps the L2 (host) copy of an MHA model's KV in
``sglang.srt.mem_cache.pool_host.mha.MHATokenToKVPoolHost``; its ``init_kv_buffer`` lays
``kv_buffer`` out in one of these shapes (S = host tokens, N = host pages, P = page_size,
L = layers, H = kv heads of this rank, D = head_dim; index 0 of the first axis is K, 1 is V):

=====================  ==========================  ======================================
layout                 ``kv_buffer`` shape         one flat data page (``get_data_page``)
=====================  ==========================  ======================================
``layer_first``        ``(2, L, S, H, D)``         ``kv_buffer[:, :, i:i+P]``  -> (2, L, P, H, D)
``page_first``         ``(2, S, L, H, D)``         ``kv_buffer[:, i:i+P]``     -> (2, P, L, H, D)
``page_first_direct``  ``(2, N, L, P, H, D)``      ``kv_buffer[:, i//P]``      -> (2, 1, L, P, H, D)
``page_head``          ``(2, N, H, P, L, D)``      ``kv_buffer[:, i//P]``      -> (2, 1, H, P, L, D)
=====================  ==========================  ======================================

A flat data page (the deprecated non-zero-copy ``get``/``set`` path) is that slice
flattened, so it has the same shape family as the whole buffer with S = P or N = 1. This
module turns either into per-layer K/V tensors plus the axes that
:meth:`processfork.KVLayout.from_torch` needs, and into canonical
``(L, 2, P, H, D)`` page views (the ProcessFork page layout) for the torch copy path.

Nothing here talks to the daemon.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

SUPPORTED_LAYOUTS = ("layer_first", "page_first", "page_first_direct", "page_head")

# torch dtype -> ProcessFork pool dtype name. SGLang keeps fp8 KV caches in uint8 storage
# (memory_pool.py: store_dtype = torch.uint8 for fp8), so a 1-byte uint8 host pool matches
# either fp8 pool dtype: the adapter only moves bytes.
_TORCH_TO_PF = {
    torch.bfloat16: ("bf16",),
    torch.float16: ("fp16",),
    torch.float32: ("fp32",),
    torch.float8_e4m3fn: ("fp8_e4m3",),
    torch.float8_e5m2: ("fp8_e5m2",),
    torch.uint8: ("fp8_e4m3", "fp8_e5m2"),
}
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


@dataclass(frozen=True)
class HostGeometry:
    """What ProcessFork needs to know about one SGLang MHA host pool."""
    layout: str
    layers: int
    kv_heads: int
    head_dim: int
    page_tokens: int
    dtype: torch.dtype
    size_tokens: int

    @property
    def page_numel(self) -> int:
        """Elements in one flat data page (K and V)."""
        return 2 * self.layers * self.page_tokens * self.kv_heads * self.head_dim

    def page_shape(self) -> Tuple[int, ...]:
        """The shape ``get_data_page(i, flat=False)`` returns for this layout."""
        L, P, H, D = self.layers, self.page_tokens, self.kv_heads, self.head_dim
        return {
            "layer_first": (2, L, P, H, D),
            "page_first": (2, P, L, H, D),
            "page_first_direct": (2, 1, L, P, H, D),
            "page_head": (2, 1, H, P, L, D),
        }[self.layout]

    def describe(self) -> str:
        return (f"layout={self.layout}, layers={self.layers}, kv_heads={self.kv_heads}, "
                f"head_dim={self.head_dim}, page_size={self.page_tokens}, "
                f"dtype={str(self.dtype).replace('torch.', '')}")


def host_geometry(pool: Any) -> HostGeometry:
    """Reads and checks an SGLang host pool (MHATokenToKVPoolHost or a pool with its
    attributes: ``layout, layer_num, head_num, head_dim, page_size, dtype, kv_buffer``).

    Raises:
        ValueError: an MLA or other non-MHA pool, an unsupported layout, K and V of
            different widths, or a ``kv_buffer`` whose shape does not match the layout.
    """
    name = type(pool).__name__
    if hasattr(pool, "kv_lora_rank") or "MLA" in name:
        raise ValueError(
            f"ProcessFork HiCache backend: {name} is an MLA host pool; ProcessFork pages hold "
            "separate K and V per kv head ([layer][K|V][token][kv_head][head_dim]) and cannot "
            "express MLA's single latent vector per token. MLA models are not supported.")
    missing = [a for a in ("layout", "layer_num", "head_num", "head_dim", "page_size", "dtype",
                           "kv_buffer") if not hasattr(pool, a)]
    if missing:
        raise ValueError(f"ProcessFork HiCache backend: {name} is not an MHA host pool "
                         f"(missing {', '.join(missing)}); only MHATokenToKVPoolHost is supported")
    layout = pool.layout
    if layout not in SUPPORTED_LAYOUTS:
        raise ValueError(
            f"ProcessFork HiCache backend: --hicache-mem-layout {layout} is not supported; "
            f"use one of {', '.join(SUPPORTED_LAYOUTS)}")
    v_head_dim = getattr(pool, "v_head_dim", pool.head_dim)
    if v_head_dim != pool.head_dim:
        raise ValueError(
            f"ProcessFork HiCache backend: K head_dim {pool.head_dim} != V head_dim "
            f"{v_head_dim}; ProcessFork pages need K and V of the same width")
    kv = pool.kv_buffer
    if not isinstance(kv, torch.Tensor):
        raise ValueError(f"ProcessFork HiCache backend: {name}.kv_buffer is not allocated")
    if pool.dtype not in _TORCH_TO_PF:
        raise ValueError(f"ProcessFork HiCache backend: host pool dtype {pool.dtype} has no "
                         "ProcessFork equivalent (bf16, fp16, fp32, fp8)")
    L, H, D, P = int(pool.layer_num), int(pool.head_num), int(pool.head_dim), int(pool.page_size)
    if layout in ("layer_first", "page_first"):
        s = kv.shape[2] if layout == "layer_first" else kv.shape[1]
        want = (2, L, s, H, D) if layout == "layer_first" else (2, s, L, H, D)
    else:
        n = kv.shape[1]
        s = n * P
        want = (2, n, L, P, H, D) if layout == "page_first_direct" else (2, n, H, P, L, D)
    if tuple(kv.shape) != want or kv.dtype != pool.dtype or kv.stride(-1) != 1:
        raise ValueError(
            f"ProcessFork HiCache backend: {name}.kv_buffer has shape {tuple(kv.shape)} "
            f"({kv.dtype}), expected {want} ({pool.dtype}) for layout {layout}")
    return HostGeometry(layout, L, H, D, P, pool.dtype, int(s))


def pool_dtype_names(torch_dtype: torch.dtype) -> tuple[str, ...]:
    """The ProcessFork pool dtype names (``--geometry ...,dtype=NAME``) a host pool of
    ``torch_dtype`` can use; for a dtype ProcessFork has no pool for, its torch name."""
    return _TORCH_TO_PF.get(torch_dtype, (str(torch_dtype).replace("torch.", ""),))


def pool_dtype_matches(torch_dtype: torch.dtype, pf_dtype: str) -> bool:
    """True when a host pool of ``torch_dtype`` may exchange bytes with a ProcessFork pool
    of ``pf_dtype``."""
    return pf_dtype in _TORCH_TO_PF.get(torch_dtype, ())


@dataclass(frozen=True)
class LayerViews:
    """Per-layer K and V tensors over a host buffer, with the axes of their shape."""
    k: List[torch.Tensor]
    v: List[torch.Tensor]
    token_axis: int
    head_axis: int
    block_axis: Optional[int]


def layer_views(kv: torch.Tensor, g: HostGeometry) -> LayerViews:
    """Per-layer K/V views of ``kv`` (the whole ``kv_buffer`` or one page reshaped to
    :meth:`HostGeometry.page_shape`). Views share memory with ``kv``; the token index of a
    view is SGLang's host index (for a single page: the slot in the page)."""
    L = g.layers
    if g.layout == "layer_first":
        # (2, L, S, H, D) -> per layer (S, H, D)
        return LayerViews([kv[0, l] for l in range(L)], [kv[1, l] for l in range(L)], 0, 1, None)
    if g.layout == "page_first":
        # (2, S, L, H, D) -> per layer (S, H, D), token stride L*H*D
        return LayerViews([kv[0, :, l] for l in range(L)], [kv[1, :, l] for l in range(L)],
                          0, 1, None)
    if g.layout == "page_first_direct":
        # (2, N, L, P, H, D) -> per layer (N, P, H, D)
        return LayerViews([kv[0, :, l] for l in range(L)], [kv[1, :, l] for l in range(L)],
                          1, 2, 0)
    # page_head: (2, N, H, P, L, D) -> per layer (N, H, P, D)
    return LayerViews([kv[0, :, :, :, l] for l in range(L)], [kv[1, :, :, :, l] for l in range(L)],
                      2, 1, 0)


def page_as_canonical(kv: torch.Tensor, g: HostGeometry, start: int) -> torch.Tensor:
    """The host page whose first host index is ``start`` (page aligned), as a view of shape
    ``(L, 2, P, H, D)`` -- ProcessFork's page layout -- over ``kv`` (the whole buffer)."""
    P = g.page_tokens
    if g.layout == "layer_first":
        return kv[:, :, start:start + P].permute(1, 0, 2, 3, 4)       # (2,L,P,H,D)
    if g.layout == "page_first":
        return kv[:, start:start + P].permute(2, 0, 1, 3, 4)          # (2,P,L,H,D)
    n = start // P
    if g.layout == "page_first_direct":
        return kv[:, n].permute(1, 0, 2, 3, 4)                         # (2,L,P,H,D)
    return kv[:, n].permute(3, 0, 2, 1, 4)                             # (2,H,P,L,D)


def as_int(t: torch.Tensor) -> torch.Tensor:
    """``t`` reinterpreted as a same-width integer tensor (bit-exact copies of any dtype)."""
    return t.view(_INT_VIEW[t.element_size()])


def page_starts(host_indices: torch.Tensor, n_pages: int, page_tokens: int) -> Optional[List[int]]:
    """The first host index of each of ``n_pages`` pages in ``host_indices``, or None when
    the indices are not ``n_pages`` whole, page-aligned, consecutive runs (SGLang's host
    allocator hands out whole pages, so this holds for every index list it passes)."""
    idx = host_indices.detach().reshape(-1).to("cpu", torch.int64)
    if idx.numel() != n_pages * page_tokens:
        return None
    if n_pages == 0:
        return []
    rows = idx.view(n_pages, page_tokens)
    starts = rows[:, 0]
    if bool((starts % page_tokens != 0).any()):
        return None
    if page_tokens > 1 and not bool(
            (rows - starts[:, None] == torch.arange(page_tokens)).all()):
        return None
    return starts.tolist()


def runs_for(pages: Sequence[int], starts: Sequence[int], page_tokens: int) -> List[Tuple[int, int, int, int]]:
    """KVLayout runs: page ``pages[i]`` slots [0, P) <-> engine tokens [starts[i], +P)."""
    return [(int(p), 0, int(s), page_tokens) for p, s in zip(pages, starts)]
