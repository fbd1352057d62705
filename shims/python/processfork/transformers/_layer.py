"""One layer's dense working KV buffer: what attention reads.

DESIGN: the pool pages are the durable, shareable KV state; attention kernels of
transformers want each layer's K and V as dense ``(batch, kv_heads, seq, head_dim)``
tensors. A :class:`ProcessForkLayer` keeps that dense copy in a buffer with spare
capacity along the sequence axis, ``(1, kv_heads, capacity, head_dim)``, so appending a
token writes in place (no ``torch.cat`` of the whole history per step, unlike
``DynamicLayer``), and ``keys`` / ``values`` are views of the first ``length`` positions.
The buffer's address only changes when :meth:`reserve` grows it; the owning
:class:`~processfork.transformers.ProcessForkCache` then rebuilds its ``KVLayout``.

Buffer position ``t`` is token ``t`` of the branch (no sliding window, no offset), which
is what lets the cache copy between pages and buffers with engine token = position.
Batch size is 1: a branch is one sequence.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import CacheLayerMixin

__all__ = ["ProcessForkLayer"]


def _check_batch(what: str, n: int) -> None:
    if n != 1:
        raise ValueError(f"ProcessForkCache holds one sequence (a branch); {what} has batch size {n}. "
                         "Use one cache per sequence (fork the cache for several branches).")


class ProcessForkLayer(CacheLayerMixin):
    """A full-attention layer cache over a growable dense buffer (batch size 1).

    ``keys`` / ``values`` are views ``(1, kv_heads, length, head_dim)`` into the buffers;
    they stay valid until the next :meth:`reserve` that grows the buffer (transformers
    reads them only within the forward that produced them).
    """

    is_sliding = False
    is_croppable = True
    is_compileable = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.length = 0
        self.k_buf: torch.Tensor | None = None  # (1, kv_heads, capacity, head_dim)
        self.v_buf: torch.Tensor | None = None

    # ---- CacheLayerMixin ------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocates empty buffers shaped like ``key_states`` (capacity 0)."""
        _check_batch("key_states", key_states.shape[0])
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.k_buf = torch.empty((b, h, 0, d), dtype=self.dtype, device=self.device)
        self.v_buf = torch.empty((b, h, 0, value_states.shape[-1]), dtype=self.dtype, device=self.device)
        self.length = 0
        self._refresh_views()
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the new tokens' K/V at ``[length, length + q)`` (growing the buffer when
        needed) and returns the dense views of the whole sequence."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        _check_batch("key_states", key_states.shape[0])
        q = key_states.shape[-2]
        end = self.length + q
        if end > self.capacity:
            self.reserve(end)
        self.k_buf[:, :, self.length:end].copy_(key_states)
        self.v_buf[:, :, self.length:end].copy_(value_states)
        self.length = end
        self._refresh_views()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) for the mask: the whole history plus the query."""
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        """-1: the layer grows without a maximum (the pool's capacity bounds it)."""
        return -1

    def reset(self) -> None:
        """Forgets every token (keeps the buffers for reuse)."""
        self.length = 0
        if self.is_initialized:
            self._refresh_views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Only the identity reorder of a batch of one is possible."""
        if beam_idx.numel() != 1 or int(beam_idx.reshape(-1)[0]) != 0:
            raise ValueError("ProcessForkCache holds one sequence; beam search needs one cache per beam")

    def crop(self, tokens_to_remove: int) -> None:
        """``DynamicLayer.crop`` semantics: a negative value removes that many tokens; a
        positive value is the length to keep (transformers' deprecated form)."""
        self.truncate(_new_length(self.length, tokens_to_remove))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if repeats != 1:
            raise ValueError("ProcessForkCache holds one sequence; it cannot be repeated in the batch "
                             "dimension (num_return_sequences/num_beams > 1). Fork the cache instead.")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if indices.numel() != 1 or int(indices.reshape(-1)[0]) != 0:
            raise ValueError("ProcessForkCache holds one sequence; only index 0 can be selected")

    def offload(self) -> None:
        """Not supported: the dense buffer is the layout the pool copies use."""
        raise ValueError("ProcessForkCache does not offload layers (its KV lives in the pool)")

    def prefetch(self) -> None:
        raise ValueError("ProcessForkCache does not offload layers (its KV lives in the pool)")

    # ---- used by ProcessForkCache ---------------------------------------------------
    @property
    def capacity(self) -> int:
        return 0 if self.k_buf is None else self.k_buf.shape[2]

    def reserve(self, capacity: int) -> bool:
        """Grows the buffers to hold ``capacity`` positions (keeping the first ``length``);
        returns True when the buffers moved. Requires :meth:`lazy_initialization` first."""
        if capacity <= self.capacity:
            return False
        b, h, _, d = self.k_buf.shape
        k = torch.empty((b, h, capacity, d), dtype=self.dtype, device=self.device)
        v = torch.empty((b, h, capacity, self.v_buf.shape[-1]), dtype=self.dtype, device=self.device)
        k[:, :, :self.length].copy_(self.k_buf[:, :, :self.length])
        v[:, :, :self.length].copy_(self.v_buf[:, :, :self.length])
        self.k_buf, self.v_buf = k, v
        self._refresh_views()
        return True

    def clone(self) -> "ProcessForkLayer":
        """An independent layer with a copy of this one's first ``length`` positions (the
        same capacity, dtype and device)."""
        twin = ProcessForkLayer()
        if not self.is_initialized:
            return twin
        twin.dtype, twin.device = self.dtype, self.device
        twin.k_buf = torch.empty_like(self.k_buf)
        twin.v_buf = torch.empty_like(self.v_buf)
        twin.k_buf[:, :, :self.length].copy_(self.k_buf[:, :, :self.length])
        twin.v_buf[:, :, :self.length].copy_(self.v_buf[:, :, :self.length])
        twin.length = self.length
        twin.is_initialized = True
        twin._refresh_views()
        return twin

    def truncate(self, length: int) -> None:
        """Keeps the first ``length`` positions."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a layer of {self.length} tokens to {length}")
        self.length = length
        if self.is_initialized:
            self._refresh_views()

    def set_length(self, length: int) -> None:
        """Declares the first ``length`` positions valid (after the cache loaded them)."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"length {length} exceeds the buffer's capacity {self.capacity}")
        self.length = length
        self._refresh_views()

    def _refresh_views(self) -> None:
        self.keys = self.k_buf[:, :, :self.length]
        self.values = self.v_buf[:, :, :self.length]


def _new_length(length: int, tokens_to_remove: int) -> int:
    if tokens_to_remove > 0:  # legacy form: the absolute length to keep
        return min(length, tokens_to_remove)
    return max(0, length + tokens_to_remove)
