"""One :class:`processfork.KVLayout` over vLLM's per-layer KV cache tensors.

vLLM 0.33 hands ``register_kv_caches`` one tensor per attention layer, the standard
4-D view ``[B, H, N, C]`` (``vllm/v1/worker/utils.py: allocate_kv_cache`` ->
``vllm/v1/kv_cache_interface.py: create_kv_cache_views``): B kernel blocks, H KV
heads, N tokens per kernel block, C = K's ``head_size`` elements followed by V's
(FlashAttention splits it the same way: ``kv_cache.transpose(1, 2).split(head_size,
dim=-1)`` in ``vllm/v1/attention/backends/flash_attn.py``). The physical order of
B/H/N (NHD ``LBNHC``, HND ``LBHNC``, block-outermost ``BLHNC``, ...) is whatever the
resolved ``KVCacheLayout`` made it, so this module reads strides, never assumes them.

Engine token ``t`` is vLLM slot ``block_id * block_size + offset``. When vLLM splits a
manager block into kernel blocks of N < block_size tokens, they are consecutive and
uniformly strided, so ``(t // N) * block_stride + (t % N) * token_stride`` still
addresses slot ``t`` with N as the layout's ``block_tokens``.

That is what the view *addresses*; what the bytes *mean* is the attention backend's
business (_backends.py). For token-major backends the view's K and V rows are the
engine's K and V, and copies go straight between vLLM's tensors and pages. For
vLLM-CPU's ``CPU_ATTN`` the blocks are packed (_cpu_attn.py): :meth:`VllmKVLayout.store`
unpacks the saved blocks, one layer at a time, into a staging buffer in ProcessFork's
order and copies that into the pages; :meth:`VllmKVLayout.load` copies pages into the
staging buffer and packs it into the blocks. Either way a page holds ProcessFork's
layout (DESIGN §2), whichever engine wrote it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

import numpy as np

import processfork
from processfork._integration.fence import fence

from processfork.vllm._backends import BlockFormat
from processfork.vllm._cpu_attn import CpuAttnCodec
from processfork.vllm._geometry import KVGeometry

__all__ = ["VllmKVLayout"]


class VllmKVLayout:
    """The layout of one worker's KV caches, and the tensors it points into.

    Holds references to vLLM's tensors: the layout's addresses stay valid as long as
    this object lives (vLLM keeps its KV cache for the worker's lifetime).

    Raises ValueError when the tensors are not the geometry's layout.
    """

    def __init__(self, kv_caches: Mapping[str, torch.Tensor], geometry: KVGeometry,
                 block_format: BlockFormat = BlockFormat("token-major", "")) -> None:
        names = [n for n in geometry.layer_names if n in kv_caches]
        missing = [n for n in geometry.layer_names if n not in kv_caches]
        if missing or not names:
            raise ValueError(f"ProcessForkConnector: register_kv_caches lacks layers "
                             f"{missing or list(geometry.layer_names)}")
        tensors = [kv_caches[n] for n in names]
        t0 = tensors[0]
        for n, t in zip(names, tensors):
            if (t.shape != t0.shape or t.stride() != t0.stride() or t.dtype != t0.dtype
                    or t.device != t0.device):
                raise ValueError(f"ProcessForkConnector: layer {n}'s KV cache "
                                 f"{tuple(t.shape)}/{t.stride()}/{t.dtype}/{t.device} differs "
                                 f"from {names[0]}'s {tuple(t0.shape)}/{t0.stride()}/"
                                 f"{t0.dtype}/{t0.device}")
        if t0.dim() != 4:
            raise ValueError(f"ProcessForkConnector: expected vLLM's [blocks, heads, "
                             f"block_tokens, 2*head_size] KV views, got shape {tuple(t0.shape)}")
        n_blocks, heads, block_tokens, content = t0.shape
        if heads != geometry.kv_heads or content != 2 * geometry.head_dim:
            raise ValueError(f"ProcessForkConnector: KV view {tuple(t0.shape)} does not hold "
                             f"{geometry.kv_heads} heads of K+V head size {geometry.head_dim}")
        if t0.stride(3) != 1:
            raise ValueError("ProcessForkConnector: the KV content axis must be contiguous")
        if geometry.block_size % block_tokens:
            raise ValueError(f"ProcessForkConnector: kernel block of {block_tokens} tokens "
                             f"does not divide block_size {geometry.block_size}")
        elem = t0.element_size()
        v_offset = geometry.head_dim * elem
        device = "cpu" if t0.device.type == "cpu" else f"{t0.device.type}:{t0.device.index or 0}"
        self.layout = processfork.KVLayout(
            [t.data_ptr() for t in tensors],
            [t.data_ptr() + v_offset for t in tensors],
            block_tokens=int(block_tokens),
            block_stride=t0.stride(0) * elem,
            token_stride=t0.stride(2) * elem,
            head_stride=t0.stride(1) * elem,
            dtype=geometry.dtype,
            device=device,
            capacity_tokens=int(n_blocks) * int(block_tokens),  # a run past the end is refused
            keep_alive=tuple(tensors),
        )
        self.layer_names: tuple[str, ...] = tuple(names)
        self.layer_index = {n: i for i, n in enumerate(names)}
        self.block_size = geometry.block_size
        self.num_blocks = int(n_blocks) * int(block_tokens) // geometry.block_size
        self.device = t0.device
        self._tensors: Sequence[torch.Tensor] = tensors  # keep vLLM's memory alive
        self.block_format = block_format
        self._codec: CpuAttnCodec | None = None
        if block_format.kind == "cpu-attn":
            if any(not t[0].is_contiguous() for t in tensors):
                raise ValueError("ProcessForkConnector: vLLM-CPU's KV blocks are not "
                                 "contiguous; CPU_ATTN packs each block densely")
            self._codec = CpuAttnCodec(int(heads), int(block_tokens), geometry.head_dim,
                                       t0.dtype, block_format.isa)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def stream(self) -> int:
        """The current CUDA stream of the KV caches' device as ``cudaStream_t`` (0 on
        CPU): copies are ordered with vLLM's forward on that stream."""
        if not self.is_cuda:
            return 0
        return int(torch.cuda.current_stream(self.device).cuda_stream)

    def synchronize(self) -> bool:
        """The fence before a commit (``_integration.fence``): waits for the copies and the
        model's writes enqueued on :meth:`stream`. Returns whether it waited (False on CPU,
        where it costs nothing)."""
        return fence(self.device)

    # ---- copies --------------------------------------------------------------------------
    def store(self, client: processfork.Client, runs: np.ndarray, layers: range) -> None:
        """Copies ``runs`` (rows ``(page, page_slot, engine_token, count)``, engine tokens
        being vLLM slots) of ``layers`` from vLLM's blocks into pages. Blocking."""
        if self._codec is None:
            client.kv_store(self.layout, runs, layers=layers, stream=self.stream())
            return
        staged = _Staging(self, runs)
        for layer in layers:
            blocks = self._tensors[layer].index_select(0, staged.blocks)
            staged.buffer.copy_(self._codec.unpack(blocks))
            client.kv_store(staged.layout, staged.runs, layers=range(layer, layer + 1))

    def load(self, client: processfork.Client, runs: np.ndarray) -> None:
        """Copies ``runs`` of every layer from pages into vLLM's blocks. Blocking."""
        if self._codec is None:
            client.kv_load(self.layout, runs, stream=self.stream())
            return
        staged = _Staging(self, runs)
        for layer in range(len(self._tensors)):
            client.kv_load(staged.layout, staged.runs, layers=range(layer, layer + 1))
            self._codec.pack_into(self._tensors[layer], staged.blocks, staged.buffer)


class _Staging:
    """One layer of the kernel blocks ``runs`` touch, in ProcessFork's token order
    (``[n_blocks * N, H, 2, D]``), and the runs re-aimed at it. The layout's every layer
    points at the same buffer: copies go one layer at a time."""

    def __init__(self, kv: VllmKVLayout, runs: np.ndarray) -> None:
        codec = kv._codec
        assert codec is not None
        n = codec.block_tokens
        runs = np.asarray(runs, dtype=np.int64).reshape(-1, 4)
        first, count = runs[:, 2], runs[:, 3]
        if len(runs) and bool(((first % n) + count > n).any()):
            raise processfork.InvalidArgument("kv copy: a run crosses a vLLM kernel block")
        block_of_run = first // n
        blocks, slot = np.unique(block_of_run, return_inverse=True)
        self.blocks = torch.from_numpy(blocks)
        self.runs = runs.copy()
        self.runs[:, 2] = slot.reshape(-1) * n + first % n
        t0 = kv._tensors[0]
        self.buffer = torch.empty(len(blocks) * n, codec.heads, 2, codec.head_dim,
                                  dtype=t0.dtype)
        elem = self.buffer.element_size()
        ptr = self.buffer.data_ptr()
        layers = len(kv._tensors)
        self.layout = processfork.KVLayout(
            (ptr,) * layers, (ptr + codec.head_dim * elem,) * layers,
            block_tokens=max(len(blocks), 1) * n,
            block_stride=self.buffer.numel() * elem,
            token_stride=self.buffer.stride(0) * elem,
            head_stride=self.buffer.stride(1) * elem,
            dtype=kv.layout.dtype, device="cpu",
            capacity_tokens=len(blocks) * n, keep_alive=(self.buffer,))
