"""The step a ProcessForkCache has in progress, and the token ids of a manual update.

A *step* adds the same ``n`` tokens to every layer: each layer's ``update`` is called once
with ``n`` new positions, in any order; when the last layer has its K/V, the cache appends
the step's tokens to the branch (``_cache.py``). A step is opened either by the token hook
before a forward (ids = the forward's ``input_ids``) or, outside a forward, by the first
``Cache.update`` call (a *manual* step; ids from ``cache_kwargs["token_ids"]``, or unknown).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Step", "manual_token_ids"]

_MAX_TOKEN = 2**32 - 1  # token ids are uint32 on the wire (DESIGN §4)


@dataclass
class Step:
    n: int                   # new tokens per layer
    ids: list[int] | None    # their ids; None: unknown (a manual update without token ids)
    manual: bool             # opened by update() outside a forward
    updated: list[bool] = field(default_factory=list)  # per layer: has its K/V already

    def missing(self) -> list[int]:
        """Layers still waiting for their K/V."""
        return [i for i, done in enumerate(self.updated) if not done]


def manual_token_ids(args: tuple, kwargs: dict, n: int) -> list[int] | None:
    """The token ids passed to a manual ``update`` as ``cache_kwargs["token_ids"]``
    (``cache_kwargs`` as the 4th positional argument or by keyword, transformers' historic
    signature), or None when there are none.

    Raises:
        ValueError: ``cache_kwargs`` is not a dict, or the ids are not ``n`` ints in
            [0, 2**32) (a sequence, or a tensor of ``n`` elements).
    """
    cache_kwargs: Any = kwargs.get("cache_kwargs", args[0] if args else None)
    if cache_kwargs is None:
        return None
    if not isinstance(cache_kwargs, dict):
        raise ValueError(f"cache_kwargs must be a dict, got {type(cache_kwargs).__name__}")
    ids: Any = cache_kwargs.get("token_ids")
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex():
            raise ValueError(f"cache_kwargs['token_ids'] must hold integers, got {ids.dtype}")
        ids = ids.reshape(-1).tolist()
    try:
        out = [operator.index(t) for t in ids if not isinstance(t, bool)]
        ok = len(out) == len(ids) == n and all(0 <= t <= _MAX_TOKEN for t in out)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"cache_kwargs['token_ids'] must be {n} integer token ids in "
                         f"[0, 2**32), one per new position; got {ids!r:.200}")
    return out
