"""Prefix-index namespaces (docs/python.md "Namespaces").

A namespace is a 32-byte tag that partitions the daemon's prefix index: pages cached or
published in one namespace are never reused from another, even for identical token ids or
prefix keys. An engine puts into it everything its KV depends on besides the token ids.
``None`` (and the all-zero tag) is the default namespace, the index of clients that name
none.
"""
from __future__ import annotations

import hashlib
import re

from processfork._errors import InvalidArgument

NAMESPACE_BYTES = 32
_DOMAIN = b"processfork-namespace-v1"
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def namespace(*parts: str | bytes | None) -> bytes | None:
    """The namespace of an ordered tuple of parts, or None when every part is None.

    ``SHA-256("processfork-namespace-v1" || enc(part_0) || enc(part_1) ...)`` where an absent
    part encodes as ``b"\\x00"`` and a present one as ``b"\\x01"``, its byte length as 8-byte
    little-endian, then its bytes (``str`` as UTF-8). The length prefix and presence byte
    make the encoding injective: ``("ab", None)`` and ``("a", "b")`` differ.
    """
    if all(p is None for p in parts):
        return None
    h = hashlib.sha256(_DOMAIN)
    for i, p in enumerate(parts):
        if p is None:
            h.update(b"\x00")
            continue
        if isinstance(p, str):
            data = p.encode("utf-8")
        elif isinstance(p, (bytes, bytearray, memoryview)):
            data = bytes(p)
        else:
            raise InvalidArgument(f"namespace: part {i} must be str, bytes or None, "
                                  f"got {type(p).__name__}")
        h.update(b"\x01" + len(data).to_bytes(8, "little") + data)
    return h.digest()


def namespace_tag(ns: bytes | str | None, what: str = "namespace") -> bytes | None:
    """A namespace argument as the 32 bytes the client library takes, or None for the
    default namespace. Accepts 32 bytes or 64 hex digits (either case); the all-zero tag is
    the default namespace. ValueError (InvalidArgument) otherwise."""
    if ns is None:
        return None
    if isinstance(ns, str):
        if _HEX.fullmatch(ns) is None:
            raise InvalidArgument(f"{what}: expected 32 bytes or 64 hex digits, got {ns!r}")
        tag = bytes.fromhex(ns)
    elif isinstance(ns, (bytes, bytearray, memoryview)):
        tag = bytes(ns)
        if len(tag) != NAMESPACE_BYTES:
            raise InvalidArgument(f"{what}: expected {NAMESPACE_BYTES} bytes, got {len(tag)}")
    else:
        raise InvalidArgument(f"{what}: expected 32 bytes or 64 hex digits, "
                              f"got {type(ns).__name__}")
    return None if tag == bytes(NAMESPACE_BYTES) else tag
