"""Token capture: tells a ProcessForkCache which token ids a forward is about to cache.

DESIGN: ``Cache.update`` only sees K/V tensors, but a ProcessFork branch is a token
sequence (the prefix index, snapshot manifests and merge all work on token ids). So the
cache installs one ``forward_pre_hook`` (``with_kwargs=True``) on the model's decoder
(``model.base_model``, e.g. ``LlamaModel``), the module whose ``forward`` receives both
``input_ids`` and ``past_key_values`` on every path: ``generate`` →
``LlamaForCausalLM.forward`` → ``self.model(input_ids=..., past_key_values=...)``
(transformers/models/llama/modeling_llama.py, ``LlamaForCausalLM.forward``), and a
direct call of the decoder itself.

The hook is installed once per decoder module and shared by every cache (a model can
run many caches: one per branch); on each call it looks at the ``past_key_values``
argument and, when that is a ProcessForkCache, hands it the ``input_ids``. Forwards with
another cache, or none, pass through untouched. The hook holds no reference to any
cache, so a cache's lifetime is its own.
"""
from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, Optional

import torch

__all__ = ["install_token_hook", "BeginStep"]

# module -> its hook handle (weak keys: the hook dies with the model)
_HOOKS: "weakref.WeakKeyDictionary[torch.nn.Module, Any]" = weakref.WeakKeyDictionary()

BeginStep = Callable[[Optional[torch.Tensor]], None]


def _argument(module: torch.nn.Module, name: str, args: tuple, kwargs: dict) -> Any:
    """The forward's argument ``name``, passed by keyword (transformers' own calls) or by
    position (a user calling ``decoder(input_ids, ...)``)."""
    if name in kwargs:
        return kwargs[name]
    if args:
        names = _POSITIONAL.get(type(module))
        if names is None:
            params = inspect.signature(module.forward).parameters.values()
            names = [p.name for p in params
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            _POSITIONAL[type(module)] = names
        if name in names and names.index(name) < len(args):
            return args[names.index(name)]
    return None


_POSITIONAL: dict[type, list[str]] = {}


def _pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    cache = _argument(module, "past_key_values", args, kwargs)
    begin = getattr(cache, "_processfork_begin_step", None)
    if begin is None:
        return None
    begin(_argument(module, "input_ids", args, kwargs))
    return None


def install_token_hook(decoder: torch.nn.Module) -> None:
    """Installs the shared pre-hook on ``decoder`` (idempotent)."""
    if decoder in _HOOKS:
        return
    _HOOKS[decoder] = decoder.register_forward_pre_hook(_pre_hook, with_kwargs=True)
