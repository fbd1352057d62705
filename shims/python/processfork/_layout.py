"""KV layout copies: where an engine keeps its KV, for :meth:`Client.kv_store` / ``kv_load``.

ProcessFork pages are page-first ``[layer][K|V][token][kv_head][head_dim]``. Engines keep KV
their own way (vLLM 0.33: per layer ``[blocks, H, block_size, 2*D]``, K then V in the last
axis, in a stride order its KVCacheLayout picks; SGLang's host pool: ``(2, layers, size, H,
D)`` and friends; transformers: per layer ``(batch, H, seq, D)``).
A :class:`KVLayout` describes an engine's layout by addresses and strides, so one copy kernel
(kernels/kv_layout.h; the host memcpy kernel, or the CUDA kernel on a CUDA pool) serves them
all (docs/python.md, "KV layout copies").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, Union

import numpy as np

from processfork import _core
from processfork._errors import InvalidArgument

__all__ = ["KVLayout", "KVRuns", "DTYPE_BYTES", "runs_array"]

# Element bytes by dtype name: the library's one table (base/dtype.h, via the C ABI).
DTYPE_BYTES = {_core.dtype_name(code): _core.dtype_bytes(code)
               for code in range(256) if _core.dtype_name(code)}

# The torch dtype name each pool dtype corresponds to.
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32",
                 "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
_NUMPY_DTYPES = {"fp16": np.float16, "fp32": np.float32}

KVRuns = Union[np.ndarray, Iterable[Sequence[int]]]
"""Runs of tokens: rows of ``(page, page_slot, engine_token, count)``."""


@dataclass(frozen=True)
class KVLayout:
    """Where an engine keeps KV, by address (docs/python.md, "KV layout copies").

    For layer ``l``, the K row of engine token ``t`` and kv head ``h`` starts at byte address
    ``k_ptrs[l] + (t // block_tokens) * block_stride + (t % block_tokens) * token_stride
    + h * head_stride`` (V likewise from ``v_ptrs[l]``) and holds ``head_dim`` contiguous
    elements of ``dtype`` (a pool dtype name: the engine's tensors must be the pool's dtype).
    ``device`` is ``"cpu"`` or ``"cuda:N"``. ``capacity_tokens`` (0 = unknown) bounds the engine
    tokens a copy may touch; layouts built from tensors set it, so a run past the tensors'
    end is an error instead of a stray write.

    Lifetime: the addresses must stay valid while the layout is used; layouts built by
    :meth:`from_torch` / :meth:`from_numpy` keep the tensors alive (``keep_alive``).
    """

    k_ptrs: tuple[int, ...]
    v_ptrs: tuple[int, ...]
    block_tokens: int
    block_stride: int
    token_stride: int
    head_stride: int
    dtype: str
    device: str = "cpu"
    capacity_tokens: int = 0
    keep_alive: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise InvalidArgument(f"KVLayout: unknown dtype {self.dtype!r}; one of "
                                  f"{sorted(DTYPE_BYTES)}")
        if len(self.k_ptrs) != len(self.v_ptrs) or not self.k_ptrs:
            raise InvalidArgument("KVLayout: k_ptrs and v_ptrs must be non-empty and of equal "
                                  f"length (got {len(self.k_ptrs)} and {len(self.v_ptrs)})")
        if self.block_tokens < 1:
            raise InvalidArgument(f"KVLayout: block_tokens must be >= 1, got {self.block_tokens}")
        for name in ("block_stride", "token_stride", "head_stride"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"KVLayout: {name} must be >= 0")
        if not (self.device == "cpu" or self.device.startswith("cuda:")):
            raise InvalidArgument(f"KVLayout: device must be 'cpu' or 'cuda:N', got {self.device!r}")

    @property
    def layers(self) -> int:
        return len(self.k_ptrs)

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @classmethod
    def from_torch(cls, k: Sequence[Any], v: Sequence[Any], *, token_axis: int, head_axis: int,
                   block_axis: int | None = None) -> "KVLayout":
        """A layout over per-layer torch tensors ``k[l]``, ``v[l]``.

        Every tensor has the same shape, strides, dtype and device; its last axis is
        ``head_dim`` and contiguous. ``token_axis`` indexes tokens within a block (or within
        the whole tensor when ``block_axis`` is None), ``head_axis`` kv heads, ``block_axis``
        blocks. Example, a per-layer ``kv[l]`` of shape ``(2, blocks, block_size, H, D)``
        (vLLM before 0.33's FlashAttention): ``from_torch([t[0] for t in kv], [t[1] for t in
        kv], block_axis=0, token_axis=1, head_axis=2)``. (vLLM 0.33 interleaves K and V in
        one last axis of ``2*D``; its adapter builds the KVLayout from strides directly,
        with ``v_ptrs = k_ptrs + D * elem_bytes``.)
        """
        import torch  # noqa: PLC0415 (optional dependency)

        tensors = list(k) + list(v)
        if not k or len(k) != len(v):
            raise InvalidArgument("KVLayout.from_torch: k and v must be non-empty lists of the "
                                  "same length (one tensor per layer)")
        t0 = tensors[0]
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                raise InvalidArgument(f"KVLayout.from_torch: expected torch tensors, got "
                                      f"{type(t).__name__}")
            if t.shape != t0.shape or t.stride() != t0.stride() or t.dtype != t0.dtype \
                    or t.device != t0.device:
                raise InvalidArgument("KVLayout.from_torch: every layer's K and V tensor must "
                                      "have the same shape, strides, dtype and device")
        dtype = _pool_dtype_of_torch(t0.dtype)
        device = "cpu" if t0.device.type == "cpu" else f"cuda:{t0.device.index or 0}"
        if t0.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"KVLayout.from_torch: unsupported device {t0.device}")
        return cls._from_strides([int(t.data_ptr()) for t in k], [int(t.data_ptr()) for t in v],
                                 tuple(t0.shape), tuple(t0.stride()), t0.element_size(), dtype,
                                 device, token_axis, head_axis, block_axis, tuple(tensors))

    @classmethod
    def from_numpy(cls, k: Sequence[np.ndarray], v: Sequence[np.ndarray], *, token_axis: int,
                   head_axis: int, block_axis: int | None = None,
                   dtype: str | None = None) -> "KVLayout":
        """As :meth:`from_torch`, over NumPy arrays (host memory). ``dtype`` names the pool
        dtype when NumPy cannot (bf16 stored as uint16, fp8 as uint8)."""
        arrays = list(k) + list(v)
        if not k or len(k) != len(v):
            raise InvalidArgument("KVLayout.from_numpy: k and v must be non-empty lists of the "
                                  "same length (one array per layer)")
        a0 = arrays[0]
        for a in arrays:
            if not isinstance(a, np.ndarray):
                raise InvalidArgument(f"KVLayout.from_numpy: expected numpy arrays, got "
                                      f"{type(a).__name__}")
            if a.shape != a0.shape or a.strides != a0.strides or a.dtype != a0.dtype:
                raise InvalidArgument("KVLayout.from_numpy: every layer's K and V array must "
                                      "have the same shape, strides and dtype")
        if dtype is None:
            matches = [n for n, t in _NUMPY_DTYPES.items() if np.dtype(t) == a0.dtype]
            if not matches:
                raise InvalidArgument(f"KVLayout.from_numpy: pass dtype= for numpy dtype "
                                      f"{a0.dtype} (bf16 as uint16, fp8 as uint8)")
            dtype = matches[0]
        if DTYPE_BYTES.get(dtype) != a0.itemsize:
            raise InvalidArgument(f"KVLayout.from_numpy: dtype {dtype!r} does not match the "
                                  f"arrays' {a0.itemsize}-byte elements")
        strides = tuple(s // a0.itemsize for s in a0.strides)
        return cls._from_strides([a.ctypes.data for a in k], [a.ctypes.data for a in v],
                                 a0.shape, strides, a0.itemsize, dtype, "cpu", token_axis,
                                 head_axis, block_axis, tuple(arrays))

    @classmethod
    def _from_strides(cls, k_ptrs: list[int], v_ptrs: list[int], shape: tuple[int, ...],
                      strides: tuple[int, ...], itemsize: int, dtype: str, device: str,
                      token_axis: int, head_axis: int, block_axis: int | None,
                      keep_alive: tuple[Any, ...]) -> "KVLayout":
        nd = len(shape)
        axes = [token_axis, head_axis] + ([block_axis] if block_axis is not None else [])
        norm = []
        for a in axes:
            if not -nd <= a < nd:
                raise InvalidArgument(f"KVLayout: axis {a} is out of range for a {nd}-d tensor")
            norm.append(a % nd)
        if len(set(norm)) != len(norm) or (nd - 1) in norm:
            raise InvalidArgument("KVLayout: token, head and block axes must be distinct and "
                                  "not the last (head_dim) axis")
        if strides[-1] != 1 and shape[-1] > 1:
            raise InvalidArgument("KVLayout: the last (head_dim) axis must be contiguous")
        for a in range(nd):
            if a not in norm and a != nd - 1 and shape[a] != 1:
                raise InvalidArgument(f"KVLayout: axis {a} (size {shape[a]}) is neither the "
                                      "token, head, block nor head_dim axis; index it away "
                                      "(one tensor per layer, K and V separately)")
        t_ax, h_ax = norm[0], norm[1]
        b_ax = norm[2] if block_axis is not None else None
        block_tokens = max(shape[t_ax], 1)
        blocks = shape[b_ax] if b_ax is not None else 1
        block_stride = strides[b_ax] * itemsize if b_ax is not None else \
            shape[t_ax] * strides[t_ax] * itemsize
        return cls(tuple(k_ptrs), tuple(v_ptrs), int(block_tokens), int(block_stride),
                   int(strides[t_ax] * itemsize), int(strides[h_ax] * itemsize), dtype, device,
                   int(blocks * shape[t_ax]), keep_alive)


def _pool_dtype_of_torch(torch_dtype: Any) -> str:
    name = str(torch_dtype).removeprefix("torch.")
    for pool, t in _TORCH_DTYPES.items():
        if t == name:
            return pool
    raise InvalidArgument(f"KVLayout: torch dtype {torch_dtype} is not a pool dtype "
                          f"({', '.join(_TORCH_DTYPES.values())})")


def runs_array(runs: KVRuns) -> np.ndarray:
    """``runs`` as a C-contiguous int64 array of shape (n, 4): page, page_slot,
    engine_token, count."""
    if isinstance(runs, np.ndarray):
        arr = runs
    else:
        arr = np.asarray([tuple(r) for r in runs], dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidArgument(f"kv copy: runs must be rows of (page, page_slot, engine_token, "
                              f"count); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgument(f"kv copy: runs must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)
