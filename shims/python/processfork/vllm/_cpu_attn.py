"""Conversion between vLLM-CPU's packed KV blocks (``CPU_ATTN``) and ProcessFork's layout.

vLLM's CPU attention backend (``vllm/v1/attention/backends/cpu_attn.py``) hands the
connector the usual ``[blocks, H, N, 2*D]`` view, but does not store K and V per token
there: it views each (block, head) region as ``[2N, D]``, takes the first N rows as a K
area and the rest as a V area, and ``cpu_attn_reshape_and_cache`` writes K transposed
and both areas packed for its SIMD kernels, in an order that depends on the instruction
set it picked (``vec``, ``vec16``, ``amx``, ``neon``, ...). Copying such a block byte for
byte into a page gives a page that no other engine can read.

DESIGN
  The packing is learnt from vLLM's own packing kernel at start-up, never assumed: one
  scratch block is filled through ``cpu_attn_reshape_and_cache`` with the instruction set
  and dtype the backend uses, from K/V whose elements encode their own logical index
  (one base-16 digit per pass, so every value is a small integer, exact in fp16, bf16
  and fp32). Reading the scratch block back gives, for every element of a block, the
  logical ``(token, head, K|V, dim)`` it holds: the permutation ``perm`` with
  ``block.flatten()[perm[j]] == logical[j]`` for the logical order
  ``[token][head][K|V][dim]``. The permutation is then checked with random K/V through
  the same kernel (bit-exact round trip). Anything unexpected (a block element written
  twice or never, a value changed, another block touched, FP8 caches whose packing
  rescales values) refuses the layout with ValueError at start-up.

  ``unpack`` gathers blocks into that logical order and ``pack_into`` gathers the packed
  order back out of it (``index_select`` with the permutation or its inverse; a gather
  is several times faster than a scatter on CPU): both are exact element moves (no arithmetic), so a page saved by vLLM-CPU holds exactly
  the K/V values its attention reads, in ProcessFork's page layout.
"""
from __future__ import annotations

import torch

__all__ = ["CpuAttnCodec"]

_BASE = 16  # digit base of the probe values: 0..15 are exact in every supported dtype
_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)


class CpuAttnCodec:
    """The block packing of vLLM-CPU's attention kernels for one KV cache geometry.

    Args:
        heads, block_tokens, head_dim: the ``[blocks, H, N, 2*D]`` view's H, N and D.
        dtype: the KV cache's torch dtype.
        isa: the instruction set name the CPU backend uses for these layers
            (``layer.isa``, or ``cpu_attn._get_attn_isa(...)``).

    Raises ValueError when the packing cannot be learnt or is not a pure permutation.
    """

    def __init__(self, heads: int, block_tokens: int, head_dim: int, dtype: torch.dtype,
                 isa: str) -> None:
        if dtype not in _SUPPORTED:
            raise ValueError(f"ProcessForkConnector: vLLM-CPU KV cache dtype {dtype} is "
                             f"not convertible to ProcessFork pages (FP8 blocks are packed "
                             f"with scales); supported: fp16, bf16, fp32")
        self.heads, self.block_tokens, self.head_dim = heads, block_tokens, head_dim
        self.dtype, self.isa = dtype, isa
        self.block_elems = heads * block_tokens * 2 * head_dim
        self.perm = self._learn()  # logical index -> block position
        self.source = torch.empty_like(self.perm)  # block position -> logical index
        self.source[self.perm] = torch.arange(self.block_elems, dtype=torch.int64)
        self._check_round_trip()

    # ---- the packing kernel ----------------------------------------------------------
    def _pack_with_vllm(self, key: torch.Tensor, value: torch.Tensor,
                        fill: float) -> torch.Tensor:
        """Two blocks filled with ``fill``, then ``key``/``value`` ([N, H, D]) written into
        block 1 by vLLM's ``cpu_attn_reshape_and_cache`` exactly as the backend's
        ``do_kv_cache_update`` does. Returns the ``[2, H, N, 2D]`` scratch."""
        from vllm import _custom_ops as ops

        h, n, d = self.heads, self.block_tokens, self.head_dim
        scratch = torch.full((2, h, n, 2 * d), fill, dtype=self.dtype)
        key_cache, value_cache = scratch.view(2, h, 2 * n, d).chunk(2, dim=2)
        slots = torch.arange(n, 2 * n, dtype=torch.int64)
        ops.cpu_attn_reshape_and_cache(key, value, key_cache, value_cache, slots, self.isa,
                                       k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto")
        return scratch

    def _logical_index(self) -> torch.Tensor:
        """Logical index of every K/V element, as ``[N, H, 2, D]`` (int64)."""
        h, n, d = self.heads, self.block_tokens, self.head_dim
        return torch.arange(n * h * 2 * d, dtype=torch.int64).view(n, h, 2, d)

    def _learn(self) -> torch.Tensor:
        logical = self._logical_index()
        source = torch.zeros(self.block_elems, dtype=torch.int64)
        scale, passes = 1, 0
        while scale < self.block_elems or passes == 0:
            digit = ((logical // scale) % _BASE).to(self.dtype)
            out = self._pack_with_vllm(digit[:, :, 0].contiguous(), digit[:, :, 1].contiguous(),
                                       fill=-1.0)
            untouched, block = out[0].flatten(), out[1].flatten()
            if not bool((untouched == -1).all()):
                raise ValueError(f"ProcessForkConnector: vLLM-CPU's packing (isa {self.isa}) "
                                 f"wrote outside the block it was given; cannot convert")
            if bool((block < 0).any()) or bool((block >= _BASE).any()):
                raise ValueError(f"ProcessForkConnector: vLLM-CPU's packing (isa {self.isa}) "
                                 f"leaves block elements unwritten or changes values; its "
                                 f"blocks cannot be converted to ProcessFork pages")
            source += block.to(torch.int64) * scale
            scale *= _BASE
            passes += 1
        if not bool((torch.bincount(source, minlength=self.block_elems) == 1).all()):
            raise ValueError(f"ProcessForkConnector: vLLM-CPU's packing (isa {self.isa}) is "
                             f"not a permutation of the block's elements; cannot convert")
        perm = torch.empty_like(source)
        perm[source] = torch.arange(self.block_elems, dtype=torch.int64)
        return perm

    def _check_round_trip(self) -> None:
        gen = torch.Generator().manual_seed(1234)
        h, n, d = self.heads, self.block_tokens, self.head_dim
        kv = torch.randn(n, h, 2, d, generator=gen).to(self.dtype)
        out = self._pack_with_vllm(kv[:, :, 0].contiguous(), kv[:, :, 1].contiguous(),
                                   fill=0.0)
        if not torch.equal(self.unpack(out[1:]).view(n, h, 2, d), kv):
            raise ValueError(f"ProcessForkConnector: vLLM-CPU's packing (isa {self.isa}) "
                             f"does not round-trip through the learnt permutation")

    # ---- conversions -----------------------------------------------------------------
    def unpack(self, blocks: torch.Tensor) -> torch.Tensor:
        """``[n, H, N, 2D]`` packed blocks (any strides) -> ``[n * N, H, 2, D]`` tokens in
        ProcessFork's order (a new tensor)."""
        flat = blocks.reshape(blocks.shape[0], self.block_elems)
        return flat.index_select(1, self.perm).view(-1, self.heads, 2, self.head_dim)

    def pack_into(self, cache: torch.Tensor, block_ids: torch.Tensor,
                  tokens: torch.Tensor) -> None:
        """Writes ``tokens`` (``[n * N, H, 2, D]``, ProcessFork's order) into blocks
        ``block_ids`` (int64, n of them) of the layer view ``cache`` (``[B, H, N, 2D]``)."""
        n = block_ids.numel()
        packed = tokens.reshape(n, self.block_elems).index_select(1, self.source)
        cache.index_copy_(0, block_ids,
                          packed.view(n, self.heads, self.block_tokens, 2 * self.head_dim))
