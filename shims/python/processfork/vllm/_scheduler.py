"""The scheduler role: prefix lookups, load plans and save plans.

DESIGN
  One instance lives in vLLM's scheduler (engine core) process, with one daemon
  session per worker rank (one daemon per rank when TP/PP > 1; see _config.py).

  Lookup. ``get_num_new_matched_tokens`` opens a branch on the request's tokens in
  every rank's daemon, in the request's namespace (``Client.branch(tokens,
  namespace)``: the longest prefix of whole pages in that namespace of the daemon's
  prefix index, reused without a copy; vllm/_namespace.py). The hit is the shortest of
  the ranks' reused lengths, capped so at least one token is left to compute (vLLM
  samples from the last prompt token's logits; its own prefix cache caps at
  ``num_tokens - 1`` the same way). The branches are held until the request
  finishes, so the pages cannot be evicted before the workers have copied them.

  Load. ``update_state_after_alloc`` learns the blocks vLLM allocated and records a
  :class:`LoadSpec`: page ``i`` of each rank's branch -> block ``i`` of the request,
  for the blocks the external hit covers. Loads are synchronous (vLLM's
  ``has_sync_kv_loads`` path): the workers copy before the step's forward.

  Save. ``build_connector_meta`` follows each request's computed tokens and emits a
  :class:`SaveSpec` for every prompt block that becomes full during the step. The
  *worker* of each rank writes and commits those pages in its own session, after its
  own copy has completed (``wait_for_save``): a branch belongs to the lease that
  made it, so the session that writes a page is the one that seals it, and nothing
  is published before its bytes are complete. Each SaveSpec carries the request's
  namespace, so the worker's branch (and every page it commits) lands in it. Blocks entirely covered by the hit are
  not saved again (the daemon already has them).

  Finish. ``request_finished`` frees the request's branches (its pages stay in the
  daemon's prefix index, shared, for the next request of any engine on that daemon)
  and returns ``(False, None)``: saves are synchronous, so vLLM may free the blocks
  at once.

  Failure. Any ProcessFork error drops the session (processfork._integration.session:
  the reconnect policy): lookups report 0 matched tokens until the daemon is back; a
  load already promised to vLLM is sent with ``pages=None`` so the worker reports the
  blocks as failed loads, which vLLM recomputes or fails per ``kv_load_failure_policy``.

  Namespaces. The KV of a request depends on its model, LoRA adapter, cache salt and
  (prompt-embeds requests) embeddings as well as its token ids: all of them go into
  its namespace, so such requests are cached and reused only among equals.
  Multimodal requests are neither looked up nor saved: their placeholder tokens stand
  for inputs that no namespace here covers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from vllm.logger import init_logger

import processfork

from processfork._integration.session import Session
from processfork.vllm._config import ConnectorSettings, RankAddress
from processfork.vllm._geometry import KVGeometry, check_pool
from processfork.vllm._metadata import LoadSpec, ProcessForkConnectorMetadata, SaveSpec
from processfork.vllm._namespace import RequestNamespaces

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.metrics.cache_hit_source import CacheHitSource
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.request import Request

__all__ = ["SchedulerSide"]

# Under "vllm": vLLM's logging config (handler, format, VLLM_LOGGING_LEVEL) applies.
logger = init_logger("vllm.processfork")


@dataclass
class _Request:
    """What the scheduler role knows about one live request."""
    tokens: list[int]  # prompt token ids (placeholders for prompt embeds)
    eligible: bool
    namespace: bytes | None  # the request's prefix-index namespace (None: default)
    save_end: int  # the prompt's whole-block length: tokens the request may save
    branches: list[processfork.Branch | None] = field(default_factory=list)  # per rank
    generation: list[int] = field(default_factory=list)  # session generation per branch
    hit: int = 0  # tokens the branches reuse on every rank (whole blocks)
    load: LoadSpec | None = None  # planned, not yet sent
    block_ids: list[int] = field(default_factory=list)
    saved: int = 0  # tokens whose save has been sent to the workers


def _eligible(request: "Request") -> bool:
    """Multimodal requests are excluded; everything else that made the KV differ
    (LoRA, cache salt, prompt embeds) is in the request's namespace."""
    return (request.prompt_token_ids is not None or request.prompt_embeds is not None) \
        and not request.mm_features


def _prompt(request: "Request") -> list[int]:
    """The prompt's token ids (for prompt embeds, vLLM's placeholder ids: the embeddings
    themselves are hashed into the namespace)."""
    return list(request.all_token_ids[:request.num_prompt_tokens])


class SchedulerSide:
    """See the module docstring. Methods mirror the scheduler-side connector calls.

    Args:
        settings: the connector's settings.
        geometry: the model's KV geometry (checked against every rank's pool).
        ranks: the worker ranks, in the order of ``LoadSpec.pages``.
        namespaces: each request's prefix-index namespace.
        load, save: whether this instance loads (kv_consumer / kv_both) and saves
            (kv_producer / kv_both).
        check_layers: compare layer counts (False for pipeline parallelism).
    """

    def __init__(self, settings: ConnectorSettings, geometry: KVGeometry,
                 ranks: Sequence[RankAddress], namespaces: RequestNamespaces, *,
                 load: bool, save: bool, check_layers: bool = True) -> None:
        self._bs = geometry.block_size
        self._namespaces = namespaces
        self._load = load
        self._save = save
        self._reqs: dict[str, _Request] = {}

        def check(client: processfork.Client, where: str) -> None:
            check_pool(geometry, client.pool(), where, check_layers=check_layers)

        self._sessions = []
        for r in ranks:
            sock = settings.socket_for(r)
            self._sessions.append(Session(
                sock, settings.timeout_ms, settings.retry_interval_s,
                lambda c, w=sock or "the default socket": check(c, w), logger=logger))
        for session in self._sessions:
            try:
                session.connect_now()  # a geometry mismatch (ValueError) stops vLLM here
            except processfork.Error:
                pass  # logged; lookups are misses until a reconnect succeeds

    # ---- sessions ----------------------------------------------------------------------
    def _clients(self) -> list[processfork.Client] | None:
        clients = []
        for session in self._sessions:
            c = session.get()
            if c is None:
                return None
            clients.append(c)
        return clients

    def _release(self, st: _Request) -> None:
        """Frees the request's branches (in sessions that are still the ones that made
        them; a dropped session's branches are gone already)."""
        for i, b in enumerate(st.branches):
            if b is None:
                continue
            session = self._sessions[i]
            client = session.get() if session.generation == st.generation[i] else None
            if client is None:
                continue
            try:
                client.free(b)
            except processfork.Error as e:
                session.drop(e)
        st.branches, st.generation, st.hit = [], [], 0

    # ---- scheduler-side connector calls ------------------------------------------------
    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[int, bool]:
        st = self._reqs.get(request.request_id)
        if st is None:
            eligible = _eligible(request)
            prompt = _prompt(request) if eligible else []
            st = _Request(prompt, eligible, self._namespaces.of(request) if eligible else None,
                          len(prompt) // self._bs * self._bs)
            self._reqs[request.request_id] = st
        if not (self._load and st.eligible):
            return 0, False
        # Leave at least one token to compute; whole blocks only.
        limit = (request.num_tokens - 1) // self._bs * self._bs
        self._release(st)  # an earlier lookup of this request (it was not scheduled)
        if limit <= num_computed_tokens:
            return 0, False
        clients = self._clients()
        if clients is None:
            return 0, False
        tokens = list(request.all_token_ids[:limit])
        branches: list[processfork.Branch | None] = []
        try:
            for c in clients:
                branches.append(c.branch(tokens, namespace=st.namespace))
        except processfork.Error as e:
            failed = self._sessions[len(branches)]
            for i, b in enumerate(branches):
                if b is not None:
                    try:
                        clients[i].free(b)
                    except processfork.Error:
                        pass
            failed.drop(e)
            return 0, False
        st.branches = branches
        st.generation = [session.generation for session in self._sessions]
        st.hit = min(b.reused_tokens for b in branches if b is not None)
        st.hit -= st.hit % self._bs
        if st.hit <= num_computed_tokens:
            self._release(st)
            return 0, False
        return st.hit - num_computed_tokens, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int) -> None:
        st = self._reqs.get(request.request_id)
        if st is None:
            return
        if num_external_tokens <= 0:
            self._release(st)  # vLLM took no external tokens: nothing to hold
            return
        block_ids = list(blocks.get_block_ids()[0])
        start = st.hit - num_external_tokens
        first = max(start, 0) // self._bs
        n = -(-(start + num_external_tokens) // self._bs) - first
        if start < 0 or start % self._bs or num_external_tokens % self._bs:
            # Not a plan this connector made: fail these blocks' load (vLLM recomputes
            # or fails the request per kv_load_failure_policy) rather than guess.
            logger.error("ProcessFork: vLLM asked request %s to load %d tokens of a "
                         "%d-token hit, not on block boundaries", request.request_id,
                         num_external_tokens, st.hit)
            st.load = LoadSpec(request.request_id, block_ids[first:first + n],
                               [None] * len(self._sessions))
            return
        pages: list[list[int] | None] = []
        epochs: list[int] = []
        for i, b in enumerate(st.branches):
            session = self._sessions[i]
            current = b is not None and session.generation == st.generation[i]
            client = session.get() if current else None
            epochs.append(0)
            if client is None:
                pages.append(None)
                continue
            try:
                pages.append(list(client.view(b).pages[first:first + n]))
                epochs[-1] = client.pool().boot_epoch
            except processfork.Error as e:
                session.drop(e)
                pages.append(None)
        st.load = LoadSpec(request.request_id, block_ids[first:first + n], pages, epochs)

    def build_connector_meta(self, scheduler_output: "SchedulerOutput"
                             ) -> ProcessForkConnectorMetadata:
        meta = ProcessForkConnectorMetadata()
        for st in self._reqs.values():
            if st.load is not None:
                meta.loads.append(st.load)
                st.load = None
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is None:
                continue
            st.block_ids = list(new.block_ids[0]) if new.block_ids else []
            self._plan_save(new.req_id, st,
                            new.num_computed_tokens + scheduled.get(new.req_id, 0), meta)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                st.block_ids = list(new_ids[0]) if new_ids else []
            elif new_ids is not None:
                st.block_ids.extend(new_ids[0])
            self._plan_save(req_id, st,
                            cached.num_computed_tokens[i] + scheduled.get(req_id, 0), meta)
        return meta

    def _plan_save(self, req_id: str, st: _Request, computed: int,
                   meta: ProcessForkConnectorMetadata) -> None:
        if not (self._save and st.eligible):
            return
        end = min(computed, st.save_end) // self._bs * self._bs
        if end <= st.saved:
            return
        if end <= st.hit:
            return  # the daemon gave us these blocks: it has them
        if len(st.block_ids) * self._bs < end:
            logger.warning("ProcessFork: request %s has %d blocks for %d tokens; not saved",
                           req_id, len(st.block_ids), end)
            return
        first = st.saved
        meta.saves.append(SaveSpec(req_id, first, st.tokens[first:end],
                                   st.block_ids[first // self._bs:end // self._bs],
                                   end == st.save_end, st.namespace))
        st.saved = end

    def request_finished(self, request: "Request") -> None:
        st = self._reqs.pop(request.request_id, None)
        if st is not None:
            self._release(st)

    def shutdown(self) -> None:
        for st in self._reqs.values():
            self._release(st)
        self._reqs.clear()
        for session in self._sessions:
            session.close()

    # ---- introspection (tests, logs) ---------------------------------------------------
    def hit_source(self) -> "CacheHitSource | None":
        """Where hits come from for vLLM's metrics: DEVICE for a pool in GPU memory,
        HOST for a host pool; None while no daemon is reachable."""
        from vllm.v1.metrics.cache_hit_source import CacheHitSource

        client = self._sessions[0].get() if self._sessions else None
        if client is None:
            return None
        return CacheHitSource.DEVICE if client.pool().device_memory else CacheHitSource.HOST

    def held_branches(self) -> int:
        """Branches this role holds for live requests."""
        return sum(b is not None for st in self._reqs.values() for b in st.branches)
