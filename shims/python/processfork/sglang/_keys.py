"""SGLang HiCache keys -> ProcessFork prefix keys.

SGLang's ``HiCacheStorage`` types a page's key as ``str`` and puts no other constraint on
it. ProcessFork's prefix index is keyed by 32-byte SHA-256 values, written as 64 lowercase
hex digits (DESIGN §4). The mapping is total and deterministic:

* a key of exactly 64 lowercase hex digits is used as the prefix key itself: it is
  SGLang's page hash (``get_hash_str``: ``hashlib.sha256(...).hexdigest()``), which equals
  ProcessFork's token-chain key for the same tokens, so pages stored by SGLang are found by
  ``Client.branch(tokens)`` in any other process and vice versa;
* any other string -- uppercase hex, another length, the empty string, any unicode --
  maps to ``SHA-256(b"processfork-sglang-key-v1\\x00" + utf-8 bytes)``. The domain prefix
  keeps those keys apart from token-chain keys (a collision is a SHA-256 collision), and
  ``surrogatepass`` makes every Python ``str`` encodable, lone surrogates included.

The same mapping applies to the parent key of a chain (``extra_info.prefix_keys[-1]``), so
a chain of arbitrary keys links exactly as a chain of page hashes does.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, List

__all__ = ["KEY_DOMAIN", "prefix_key", "prefix_keys"]

# Versioned: a different encoding would need a new domain, never a reuse of this one.
KEY_DOMAIN = b"processfork-sglang-key-v1\x00"

_PAGE_HASH = re.compile(r"[0-9a-f]{64}")


def prefix_key(key: str) -> str:
    """The prefix key (64 lowercase hex digits) for SGLang key ``key``.

    Raises:
        TypeError: ``key`` is not a ``str``.
    """
    if not isinstance(key, str):
        raise TypeError(f"a HiCache key must be a str, got {type(key).__name__}")
    if _PAGE_HASH.fullmatch(key):
        return key
    return hashlib.sha256(KEY_DOMAIN + key.encode("utf-8", "surrogatepass")).hexdigest()


def prefix_keys(keys: Iterable[str]) -> List[str]:
    """:func:`prefix_key` of each key, in order."""
    return [prefix_key(k) for k in keys]
