"""Model fingerprints: what a namespace needs to tell two models' KV apart
(docs/python.md "Namespaces").

Two engines may share KV pages only when they run the same weights: a fingerprint hashes
the model's configuration and the bytes of every weight file, so two checkpoints of one
architecture (identical config.json, different weights) get different fingerprints, and
two copies of one checkpoint get the same one wherever they live. An explicit fingerprint
(an adapter's ``model_fingerprint`` setting) overrides it, e.g. to skip hashing very large
checkpoints or to share KV between byte-different but equivalent files.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from processfork._errors import InvalidArgument

_DOMAIN = b"processfork-model-fingerprint-v1"
_CHUNK = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# Fields that name where or with what a config was saved, not what the model computes.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version")

_memo: dict[tuple[Any, ...], str] = {}
_memo_lock = threading.Lock()


def _canonical_config(config: dict[str, Any]) -> bytes:
    cleaned = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    return json.dumps(cleaned, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _weight_files(root: Path) -> list[tuple[str, Path]]:
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(_WEIGHT_SUFFIXES):
                path = Path(dirpath, name)
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def _file_state(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def model_fingerprint(model_dir_or_config: str | os.PathLike[str] | Any) -> str:
    """Hex SHA-256 of a model: its config.json (JSON-loaded, keys sorted, without
    ``_name_or_path`` and ``transformers_version``) and the raw bytes of every weight file
    (``*.safetensors``, ``*.bin``, ``*.pt`` under the directory, sorted by relative path,
    each preceded by its path and size), read in 1 MiB chunks.

    Accepts a model directory, or a transformers ``PretrainedConfig`` whose
    ``_name_or_path`` is one. Memoized per process on (path, size, mtime) of every file it
    reads, so a second call is a few ``stat``s.

    Raises:
        InvalidArgument (a ValueError): not a directory holding config.json.
    """
    target = model_dir_or_config
    if not isinstance(target, (str, os.PathLike)):
        target = getattr(target, "_name_or_path", None) or getattr(target, "name_or_path", None)
        if not target:
            raise InvalidArgument("model_fingerprint: the config names no model directory "
                                  "(_name_or_path)")
    root = Path(target)
    config_path = root / "config.json"
    if not root.is_dir() or not config_path.is_file():
        raise InvalidArgument(f"model_fingerprint: {str(root)!r} is not a model directory "
                              "with a config.json")
    weights = _weight_files(root)
    key = (str(root.resolve()), _file_state(config_path),
           tuple(_file_state(p) for _, p in weights))
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    h = hashlib.sha256(_DOMAIN)
    config = _canonical_config(json.loads(config_path.read_text(encoding="utf-8")))
    h.update(len(config).to_bytes(8, "little") + config)
    for rel, path in weights:
        name = rel.encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    digest = h.hexdigest()
    with _memo_lock:
        _memo[key] = digest
    return digest
