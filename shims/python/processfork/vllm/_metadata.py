"""What the scheduler-side connector tells the workers each step.

The metadata is built by :meth:`ProcessForkConnector.build_connector_meta` in the
scheduler process and reaches every worker through vLLM (pickled with the
``SchedulerOutput``), so it holds plain data only: ints, strings and lists.

Token ``t`` of a request lives in vLLM block ``block_ids[t // block_size]`` at offset
``t % block_size``; ProcessFork page ``i`` of a branch holds tokens
``[i * page_tokens, (i + 1) * page_tokens)``; ``page_tokens == block_size``, so page
``i`` and block ``i`` of a request hold the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata

__all__ = ["LoadSpec", "SaveSpec", "ProcessForkConnectorMetadata"]


@dataclass
class LoadSpec:
    """Copy pages into blocks before this step's forward (a synchronous load).

    ``pages[r]`` lists rank ``r``'s page ids (``r = pp_rank * tp_size + tp_rank``),
    one per entry of ``block_ids``; ``None`` when the scheduler could not read that
    rank's pages (the worker then reports ``block_ids`` as failed loads, and vLLM
    recomputes or fails the request per ``kv_load_failure_policy``). The scheduler
    holds the pages (a branch of its session) until the request finishes.
    ``boot_epochs[r]``: the boot epoch of the daemon rank ``r``'s page ids belong to
    (0: unknown); a worker whose daemon restarted since reports the blocks as failed
    loads instead of reading another daemon's pages under those ids.
    """
    req_id: str
    block_ids: list[int]
    pages: list[list[int] | None]
    boot_epochs: list[int] = field(default_factory=list)


@dataclass
class SaveSpec:
    """Store whole blocks of a request's prompt after this step's forward.

    ``tokens`` are the request's tokens ``[first_token, first_token + len(tokens))``
    and ``block_ids`` the blocks holding them (``len(tokens) / block_size`` of them).
    ``first_token == 0`` starts the request's save: the worker opens a branch on
    ``tokens`` (reusing what the daemon already has) and writes the rest; later specs
    continue that branch. ``last``: the prompt's final whole block is in this spec.
    ``namespace``: the request's prefix-index namespace (vllm/_namespace.py; None: the
    default one), in which the worker opens that branch.
    """
    req_id: str
    first_token: int
    tokens: list[int]
    block_ids: list[int]
    last: bool
    namespace: bytes | None = None


@dataclass
class ProcessForkConnectorMetadata(KVConnectorMetadata):
    """One step's loads and saves (see the module docstring)."""
    loads: list[LoadSpec] = field(default_factory=list)
    saves: list[SaveSpec] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.loads or self.saves)
