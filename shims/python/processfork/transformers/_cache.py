"""ProcessForkCache: a transformers ``Cache`` whose KV lives in ProcessFork pages.

DESIGN (docs/adapter-transformers.md has the user's view):

* One cache = one ProcessFork branch = one sequence (batch size 1). The branch's token
  ids come from the model's ``input_ids`` (token hook, ``_hook.py``); its KV rows go to
  the pool pages that ``Client.append`` hands out, with ``Client.kv_store`` (the layout
  API: engine token = sequence position).
* Attention reads dense per-layer tensors ``(1, kv_heads, seq, head_dim)``
  (transformers/models/llama/modeling_llama.py, ``LlamaAttention.forward`` calls
  ``past_key_values.update(key_states, value_states, self.layer_idx)`` and attends over
  what it returns). Each :class:`~._layer.ProcessForkLayer` keeps that dense working copy;
  the pages are the durable, shareable state. A cache made from a snapshot, fork or
  branch fills its dense copy from the pages with ``Client.kv_load``: no recompute.
* A forward is one *step* (``_step.py``): the hook announces the step's token ids; every
  layer's ``update`` writes its K/V into its buffer; after the last layer, the step's
  tokens are appended to the branch and all layers' new rows are stored in one
  ``kv_store`` call. A forward that raised half-way is rolled back at the next step.
  ``update`` outside a forward opens a *manual* step, whose token ids come with the
  update (``cache_kwargs["token_ids"]``) or are unknown: then the branch cannot record
  them and the cache goes on from its dense KV alone (``untracked``).
* ``copy.deepcopy(cache)`` is a fork: a new cache on a new branch sharing every page
  copy-on-write, with a copy of the dense buffers; the two are independent afterwards.
* ProcessFork errors during a step never break the host's generation: the dense state is
  complete without the pool, so the cache logs the error, stops writing to the pool and
  remembers the error (``pool_error``); ``snapshot``/``fork``/``commit`` then raise
  :class:`ProcessForkCacheError`. ``strict=True`` raises at once instead.

Namespace: the branch a cache creates (a new one, or ``from_prefix``) lives in the prefix-
index namespace ``processfork.namespace(model_fp)``, so only pages of the same weights are
reused. ``model_fp`` is the ``model_fingerprint=`` argument, else
``processfork.model_fingerprint`` of ``model.config._name_or_path`` when that is a local
model directory; with neither, the cache uses the default namespace (shared with every
client that names none: the caller then vouches that the daemon serves one model).
Adopted branches (``from_branch``, ``from_snapshot``) keep their own namespace.

Lifetimes: the cache holds its branch until :meth:`close` (which frees it when the cache
owns it) or until the client's session ends. On a CUDA pool, copies are enqueued on
torch's current stream of the model's device; the cache synchronizes that stream before
anything another process can read (snapshot, fork, commit, close).
"""
from __future__ import annotations

import logging
import os
from typing import Iterable

import torch
from transformers.cache_utils import Cache

import processfork
from processfork import Branch, Client, KVLayout, Snapshot
from processfork._integration.fence import fence

from processfork.transformers._geometry import check_geometry, model_geometry, torch_dtype
from processfork.transformers._hook import install_token_hook
from processfork.transformers._layer import ProcessForkLayer, _check_batch, _new_length
from processfork.transformers._step import Step, manual_token_ids

__all__ = ["ProcessForkCache", "ProcessForkCacheError", "cache_namespace"]

log = logging.getLogger("processfork.transformers")

_MIN_CAPACITY = 64


def cache_namespace(model: torch.nn.Module, model_fingerprint: str | None = None) -> bytes | None:
    """The prefix-index namespace of the branches a cache for ``model`` creates (module
    docstring): from ``model_fingerprint``, else from the weights in the model's local
    directory; None (the default namespace) when neither is available."""
    if model_fingerprint is None:
        path = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not path or not os.path.isfile(os.path.join(path, "config.json")):
            return None
        model_fingerprint = processfork.model_fingerprint(path)
    return processfork.namespace(model_fingerprint, None, None, None)


class ProcessForkCacheError(RuntimeError):
    """The cache's branch no longer holds its KV (an earlier pool error, see
    ``ProcessForkCache.pool_error``, which is also this exception's ``__cause__``; or tokens
    added by ``update`` without their ids, see ``ProcessForkCache.untracked``), a step is in
    progress, or the cache is closed."""


class ProcessForkCache(Cache):
    """A transformers ``Cache`` for one sequence whose KV is stored in a ProcessFork branch.

    Args:
        client: a connected :class:`processfork.Client`; its pool's geometry must fit the
            model (:func:`~processfork.transformers.geometry_for`) and its device must be
            the model's (host pool: CPU model; ``cuda:N`` pool: model on ``cuda:N``).
        model: the ``PreTrainedModel`` this cache serves (the token hook is installed on
            ``model.base_model``; the model is not kept alive by the cache).
        branch: None: a new empty branch of ``client``. A :class:`processfork.Branch` or
            id: adopt that branch (of this client, or detached) and load its KV from the
            pages — prefer :meth:`from_branch`, :meth:`from_snapshot`, :meth:`from_prefix`.
        strict: raise ProcessFork errors from ``update`` instead of degrading.
        free_on_close: :meth:`close` frees the branch (default).
        model_fingerprint: stands for the model's weights in the namespace of a branch the
            cache creates (see the module docstring); overrides the computed fingerprint.

    Raises:
        processfork.Unavailable: the client is closed.
        processfork.InvalidArgument: the pool's geometry, dtype or device does not fit.
        processfork.Conflict: ``branch`` belongs to another client's session.
    """

    def __init__(self, client: Client, model: torch.nn.Module, branch: Branch | int | None = None,
                 *, strict: bool = False, free_on_close: bool = True,
                 model_fingerprint: str | None = None) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a processfork.Client, got {type(client).__name__}")
        if client.closed:
            raise processfork.Unavailable("ProcessForkCache: the processfork.Client is closed")
        info = client.pool()
        needed = model_geometry(model)
        check_geometry(info, needed)
        device = _model_device(model)
        _check_device(info, device)
        dtype = torch_dtype(info.dtype)
        layers = [ProcessForkLayer() for _ in range(needed.layers)]
        empty = torch.empty((1, needed.kv_heads, 0, needed.head_dim), dtype=dtype, device=device)
        for layer in layers:
            layer.lazy_initialization(empty, empty)
        super().__init__(layers=layers)

        self._client = client
        self._info = info
        self._device = device
        self._strict = bool(strict)
        self._free_on_close = bool(free_on_close)
        self._closed = False
        self._layout: KVLayout | None = None
        self._length = 0  # tokens every layer and (while in sync) the branch hold
        self._tokens: list[int] = []
        self._step: Step | None = None  # the step in progress (_step.py)
        self.pool_error: processfork.Error | None = None
        # why the branch stopped recording the cache's tokens without a pool error
        self.untracked: str | None = None

        if branch is None:
            self._branch_id = client.branch(
                namespace=cache_namespace(model, model_fingerprint)).id
        else:
            self._branch_id = int(branch)
            try:
                self._adopt()
            except BaseException:
                self._closed = True
                raise
        install_token_hook(model.base_model if hasattr(model, "base_model") else model)

    # ---- constructors ---------------------------------------------------------------
    @classmethod
    def from_branch(cls, client: Client, branch: Branch | int, model: torch.nn.Module, *,
                    strict: bool = False, free_on_close: bool = True) -> "ProcessForkCache":
        """A cache continuing ``branch`` (one of this client's, or a detached one, e.g. from
        ``fork(n, detach=True)`` in another process): its tokens and KV are loaded from the
        pages (``kv_load``), nothing is recomputed. The cache takes the branch over and
        frees it on close, unless ``free_on_close=False``. A detached branch taken over is
        first forked into this client's session (metadata only) and the detached original
        freed, so ``cache.branch.id`` differs from ``branch`` and a crash of this process
        leaks nothing."""
        return cls(client, model, branch, strict=strict, free_on_close=free_on_close)

    @classmethod
    def from_snapshot(cls, client: Client, cid_or_ref: str, model: torch.nn.Module, *,
                      strict: bool = False) -> "ProcessForkCache":
        """A cache at a snapshot (CID or ref): a checkout (metadata only) into a new branch
        of ``client``, whose KV is loaded from the pages."""
        if client.closed:
            raise processfork.Unavailable("ProcessForkCache: the processfork.Client is closed")
        b = client.checkout(cid_or_ref)
        try:
            return cls(client, model, b, strict=strict, free_on_close=True)
        except BaseException:
            _free_quietly(client, b.id)
            raise

    @classmethod
    def from_prefix(cls, client: Client, tokens: Iterable[int], model: torch.nn.Module, *,
                    strict: bool = False,
                    model_fingerprint: str | None = None) -> "ProcessForkCache":
        """A cache holding the longest prefix of ``tokens`` that the daemon's prefix index has
        in whole committed pages (written by any process): ``len(cache.tokens)`` of them are
        loaded, not recomputed. Run the model on the full ``tokens`` next
        (``generate(input_ids=all ids, past_key_values=cache)``): it computes the rest only.
        Only pages of this model's namespace are reused (module docstring)."""
        if client.closed:
            raise processfork.Unavailable("ProcessForkCache: the processfork.Client is closed")
        b = client.branch(tokens, namespace=cache_namespace(model, model_fingerprint))
        try:
            return cls(client, model, b, strict=strict, free_on_close=True)
        except BaseException:
            _free_quietly(client, b.id)
            raise

    # ---- the Cache interface --------------------------------------------------------
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Caches layer ``layer_idx``'s new K/V ``(1, kv_heads, q, head_dim)`` and returns the
        layer's whole dense K/V ``(1, kv_heads, seq + q, head_dim)``, as ``DynamicCache``
        does; ``get_seq_length(layer_idx)`` then counts the q tokens.

        In a forward of the model, q is the forward's token count (the token hook announced
        its ``input_ids``); after the model's last layer the step's tokens and KV are
        written to the branch's pages.

        Outside a forward (the Cache API allows it; e.g. filling the cache with K/V computed
        elsewhere) the first ``update`` opens a *manual step* of q tokens, which every
        layer then gets once, in any order, with the same q; meanwhile each layer's length
        is its own, as in ``DynamicCache``. When the last layer has its K/V, the step ends
        as a forward's does. Its token ids come with the update that opened it, as
        ``cache_kwargs={"token_ids": <q ints>}`` (the 4th positional argument or by
        keyword). Without them the branch cannot record the tokens: the cache goes on from
        its dense KV only (``in_sync`` False, ``untracked`` says why; snapshot, fork,
        commit and deepcopy raise ``ProcessForkCacheError``), or, with ``strict=True``,
        the update raises ``ValueError``.

        Raises:
            ValueError: a bad layer index, batch size, dtype or device; q other than the
                step's; a layer updated twice in one step; malformed token ids, or ids that
                differ from those of the update that opened the step; ``strict`` and no
                token ids outside a forward. Nothing changes.
        """
        self._check_open()
        if not 0 <= layer_idx < len(self.layers):
            raise ValueError(f"layer_idx {layer_idx} out of range (the cache has {len(self.layers)} layers)")
        _check_batch("key_states", key_states.shape[0])
        layer = self.layers[layer_idx]
        if key_states.dtype != layer.dtype or key_states.device != layer.device:
            raise ValueError(f"key_states are {key_states.dtype} on {key_states.device}; the cache "
                             f"holds {layer.dtype} on {layer.device} (the pool's dtype and device)")
        q = key_states.shape[-2]
        step = self._step
        if step is None:
            step = self._manual_step(q, manual_token_ids(args, kwargs, q))
        elif step.manual:
            ids = manual_token_ids(args, kwargs, q)
            if ids is not None and ids != step.ids:
                raise ValueError(f"layer {layer_idx}: cache_kwargs['token_ids'] differ from those "
                                 "of the update() that opened this step")
        if q != step.n or step.updated[layer_idx]:
            how = "outside a forward" if step.manual else "in a forward whose input_ids have"
            raise ValueError(
                f"layer {layer_idx} got {q} new tokens (updated twice: {step.updated[layer_idx]}); "
                f"the step in progress ({how} {step.n} tokens) gives every layer {step.n}, once")
        self._step = step
        keys, values = layer.update(key_states, value_states, *args, **kwargs)
        step.updated[layer_idx] = True
        if not step.missing():
            self._end_step()
        return keys, values

    def crop(self, tokens_to_remove: int) -> None:
        """Removes the last ``-tokens_to_remove`` tokens (a positive value: the length to
        keep, transformers' deprecated form) from the dense state and the branch. A step
        still in progress (some layers updated) is rolled back first."""
        self._check_open()
        self._abandon_step()
        self._truncate(_new_length(self._length, tokens_to_remove))

    def reset(self):
        """Forgets every token: the branch is truncated to 0 (its pages are released)."""
        self._check_open()
        self._abandon_step()
        self._truncate(0)

    # ---- ProcessFork ----------------------------------------------------------------
    @property
    def client(self) -> Client:
        return self._client

    @property
    def branch(self) -> Branch:
        """The branch holding this cache's tokens and KV."""
        return Branch(self._branch_id, self._length)

    @property
    def tokens(self) -> list[int]:
        """The token ids whose KV the cache holds (a copy); once ``untracked``, the ids known
        before the first token added without its id."""
        return list(self._tokens)

    @property
    def in_sync(self) -> bool:
        """True while the branch holds exactly the cache's tokens and KV (no pool error, no
        tokens added without their ids)."""
        return self.pool_error is None and self.untracked is None

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self, name: str | None = None) -> Snapshot:
        """Seals and pins the cache's state under a CID; a ``name`` also becomes a ref to it
        (``Client.snapshot``)."""
        self._check_shareable()
        return self._client.snapshot(self._branch_id, name)

    def fork(self, n: int, *, detach: bool = False) -> list[Branch]:
        """``n`` new branches at the cache's current state (metadata only: no page is
        copied). They belong to this client; ``detach=True`` makes them outlive it, so
        other processes can adopt them with :meth:`from_branch` (which then frees them)."""
        self._check_shareable()
        kids = self._client.fork(self._branch_id, n)
        if detach:
            for k in kids:
                self._client.detach(k)
        return kids

    def commit(self) -> None:
        """Seals the branch's full pages and offers them to the prefix index, so any
        process can reuse them (:meth:`from_prefix`, ``Client.branch(tokens)``)."""
        self._check_shareable()
        self._client.commit(self._branch_id)

    def __deepcopy__(self, memo: dict) -> "ProcessForkCache":
        """``copy.deepcopy(cache)``: an independent cache at this cache's state, by a fork.

        The copy's branch is a fork of this cache's branch into the same client's session
        (metadata only: every page shared copy-on-write, DESIGN §5), and its dense buffers
        are copies of this cache's. Afterwards writes to either never show in the other:
        each appends to its own branch (a shared last page is copied first) and its own
        buffers. The copy has its own lifetime: it frees its branch on :meth:`close`,
        whatever this cache does. The client is shared, not copied (it is a connection).

        Raises:
            ProcessForkCacheError: the cache is closed, a step is in progress, or its branch
                does not hold its KV (``in_sync`` False).
            processfork.Error: the fork failed (nothing was created).
        """
        self._check_shareable()
        kid = self._client.fork(self._branch_id, 1)[0]
        try:
            layers = [layer.clone() for layer in self.layers]
        except BaseException:
            _free_quietly(self._client, kid.id)
            raise
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.layers = layers
        twin._branch_id = kid.id
        twin._free_on_close = True
        twin._layout = None
        twin._tokens = list(self._tokens)
        memo[id(self)] = twin
        return twin

    def close(self) -> None:
        """Frees the branch (when the cache owns it) and drops the dense buffers.
        Idempotent; never raises a ProcessFork error (they are logged)."""
        if self._closed:
            return
        self._closed = True
        self._sync()
        if self._free_on_close and not self._client.closed:
            _free_quietly(self._client, self._branch_id)
        self._layout = None
        for layer in self.layers:
            layer.reset()
            layer.k_buf = layer.v_buf = layer.keys = layer.values = None
            layer.is_initialized = False

    def __enter__(self) -> "ProcessForkCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "in sync" if self.in_sync
                 else "pool error" if self.pool_error is not None else "untracked")
        return (f"ProcessForkCache(branch={self._branch_id}, tokens={self._length}, "
                f"layers={len(self.layers)}, device={self._device}, {state})")

    # ---- steps ----------------------------------------------------------------------
    def _processfork_begin_step(self, input_ids: torch.Tensor | None) -> None:
        """Called by the token hook before the decoder runs with this cache."""
        self._check_open()
        if input_ids is None:
            raise ValueError("ProcessForkCache needs the forward's input_ids (the branch records "
                             "token ids); a forward with inputs_embeds only cannot be cached")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        _check_batch("input_ids", input_ids.shape[0])
        if self._step is not None and self._step.manual:
            raise ValueError(
                f"update() outside a forward began a step of {self._step.n} tokens that layers "
                f"{self._step.missing()} have not had yet: finish it (every layer once) or "
                "roll it back with crop() or reset() before running the model")
        self._abandon_step()
        ids = [int(t) for t in input_ids[0].tolist()]
        if not ids:
            return
        self._reserve(self._length + len(ids))
        self._step = Step(len(ids), ids, manual=False, updated=[False] * len(self.layers))

    def _manual_step(self, n: int, ids: list[int] | None) -> Step:
        """A manual step of ``n`` tokens (not yet recorded in ``self._step``: the caller
        does that once the first update is known to be valid)."""
        if ids is None and self._strict:
            raise ValueError(
                "ProcessForkCache(strict=True).update() outside a forward needs the tokens' ids "
                "(cache_kwargs={'token_ids': [...]}): the branch records token ids")
        self._reserve(self._length + n)
        return Step(n, ids, manual=True, updated=[False] * len(self.layers))

    def _end_step(self) -> None:
        step, start = self._step, self._length
        self._step = None
        self._length = start + step.n
        if step.ids is None:
            if self.untracked is None and self.pool_error is None:
                self.untracked = (f"update() outside a forward added tokens [{start}, "
                                  f"{self._length}) without their ids (cache_kwargs['token_ids'])")
                log.warning("ProcessForkCache(branch %d): %s; generation goes on from the dense "
                            "KV, the branch is no longer written (snapshot/fork/commit will raise)",
                            self._branch_id, self.untracked)
            return
        ids = step.ids
        if self.untracked is not None:
            return  # cache.tokens stays the known prefix
        self._tokens.extend(ids)
        if self.pool_error is not None:
            return
        try:
            res = self._client.append_ex(self._branch_id, ids)
            if res.first_token != start:
                raise processfork.InternalError(
                    f"branch {self._branch_id} appended at token {res.first_token}, the cache "
                    f"holds {start} (was the branch changed behind the cache's back?)")
            runs = [(r.page, r.first_slot, r.first_token, r.count) for r in res.runs]
            self._client.kv_store(self._layout_now(), runs, stream=self._stream())
        except processfork.Error as e:
            self._pool_failed("storing the KV of tokens "
                              f"[{start}, {start + len(ids)})", e)

    def _abandon_step(self) -> None:
        """Rolls back the layers of a step that did not finish (a forward that raised, or
        a manual step that crop/reset cut short)."""
        if self._step is None:
            return
        for layer, done in zip(self.layers, self._step.updated):
            if done:
                layer.truncate(self._length)
        self._step = None

    def _truncate(self, length: int) -> None:
        if length == self._length:
            return
        for layer in self.layers:
            layer.truncate(length)
        self._length = length
        del self._tokens[length:]
        if self.in_sync:
            try:
                self._sync()
                self._client.truncate(self._branch_id, length)
            except processfork.Error as e:
                self._pool_failed(f"truncating the branch to {length} tokens", e)

    def _pool_failed(self, what: str, err: processfork.Error) -> None:
        self.pool_error = err
        if self._strict:
            raise err
        log.warning("ProcessForkCache(branch %d): %s failed (%s); generation goes on from the "
                    "dense KV, the branch is no longer written (snapshot/fork/commit will raise)",
                    self._branch_id, what, err)

    # ---- pool copies ----------------------------------------------------------------
    def _adopt(self) -> None:
        """Loads the branch's tokens and KV into the dense buffers (kv_load)."""
        view = self._client.view(self._branch_id, tokens=True)
        if view.owner not in (0, self._info.lease):
            raise processfork.Conflict(
                f"branch {self._branch_id} belongs to another client's session (lease "
                f"{view.owner}); fork or snapshot it there, or detach it")
        if view.owner == 0 and self._free_on_close:
            # Take a detached branch over: a fork into this session (metadata only, the
            # same pages), then free the detached original, so that a crash of this
            # process leaks nothing (the daemon frees a dead session's branches).
            mine = self._client.fork(self._branch_id, 1)[0]
            _free_quietly(self._client, self._branch_id)
            self._branch_id = mine.id
        n, pt = view.n_tokens, self._info.page_tokens
        self._reserve(n)
        runs = []
        for i, page in enumerate(view.pages):
            count = min(pt, n - i * pt)
            if count > 0:
                runs.append((page, 0, i * pt, count))
        if runs:
            self._client.kv_load(self._layout_now(), runs, stream=self._stream())
        for layer in self.layers:
            layer.set_length(n)
        self._length = n
        self._tokens = list(view.tokens or [])
        if len(self._tokens) != n:
            raise processfork.InternalError(
                f"branch {self._branch_id} has {n} tokens but its view lists {len(self._tokens)}")

    def _reserve(self, need: int) -> None:
        """Grows every layer's buffer to hold ``need`` positions (amortized doubling)."""
        cap = self.layers[0].capacity
        if need <= cap:
            return
        pt = self._info.page_tokens
        new = max(need, 2 * cap, _MIN_CAPACITY)
        new = -(-new // pt) * pt
        for layer in self.layers:
            layer.reserve(new)
        self._layout = None

    def _layout_now(self) -> KVLayout:
        """The layout of the dense buffers: layer l's K row of token t, head h at
        ``k_buf[l][0, h, t, :]`` (rebuilt whenever the buffers move)."""
        if self._layout is None:
            self._layout = KVLayout.from_torch(
                [layer.k_buf[0] for layer in self.layers],
                [layer.v_buf[0] for layer in self.layers],
                token_axis=1, head_axis=0)
        return self._layout

    def _stream(self) -> int:
        if self._device.type == "cuda":
            return torch.cuda.current_stream(self._device).cuda_stream
        return 0

    def _sync(self) -> bool:
        """The fence before anything that seals or shares the branch (``_integration.fence``):
        waits for this cache's copies and the model's writes on torch's current stream.
        Returns whether it waited (False on CPU, where it costs nothing)."""
        return fence(self._device)

    def _check_open(self) -> None:
        """The cache must be open (a closed *client* only stops the pool writes: see
        ``_pool_failed``)."""
        if self._closed:
            raise ProcessForkCacheError("the ProcessForkCache is closed")

    def _check_shareable(self) -> None:
        self._check_open()
        if self._client.closed:
            raise processfork.Unavailable("ProcessForkCache: the processfork.Client is closed")
        if self._step is not None:
            what = "an update() step outside a forward" if self._step.manual else "a forward"
            raise ProcessForkCacheError(f"{what} is in progress on this cache")
        if self.pool_error is not None:
            raise ProcessForkCacheError(
                f"branch {self._branch_id} does not hold this cache's KV since a pool error: "
                f"{self.pool_error}") from self.pool_error
        if self.untracked is not None:
            raise ProcessForkCacheError(
                f"branch {self._branch_id} does not hold this cache's KV: {self.untracked}")
        self._sync()


def _model_device(model: torch.nn.Module) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_device(info: processfork.PoolInfo, device: torch.device) -> None:
    if not info.device_memory:
        if device.type != "cpu":
            raise processfork.InvalidArgument(
                f"the pool is in host memory ({info.device}) but the model runs on {device}; "
                "serve a CUDA pool (processfork serve --device cuda:N) for a GPU model")
        return
    want = torch.device(info.device)
    if device.type != "cuda" or (device.index or 0) != (want.index or 0):
        raise processfork.InvalidArgument(
            f"the pool is on {info.device} but the model runs on {device}")


def _free_quietly(client: Client, branch: int) -> None:
    try:
        client.free(branch)
    except processfork.Error as e:
        log.warning("ProcessForkCache: freeing branch %d failed: %s", branch, e)
