"""processfork.transformers: a real transformers Llama generating on a ProcessForkCache.

Every test runs a real ``transformers.LlamaForCausalLM`` (random weights from a fixed
seed, _transformers_model.py) against a real daemon whose pool has the model's geometry
(fp32, page_tokens=4 so that every prompt crosses page boundaries). The reference is the
same model on transformers' own ``DynamicCache``.

Exactness: on CPU fp32 the adapter does the same arithmetic in the same order as
DynamicCache (the K/V bytes are copied, never recomputed or converted), so logits are
compared with ``torch.equal``. The fork test gets exact equality too because each child's
forwards have the same shapes as the uninterrupted run's (one token per forward: the
restored cache holds every token but the last generated one).
"""
from __future__ import annotations

import copy
import inspect
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

import processfork
from processfork.transformers import (
    ProcessForkCache,
    ProcessForkCacheError,
    ProcessForkLayer,
    geometry_for,
    model_geometry,
)

sys.path.insert(0, str(Path(__file__).parent))
from _fence_spy import record_fences_and_seals  # noqa: E402
from _transformers_model import PAGE_TOKENS, ForceToken, ForwardLog, prompt_ids, tiny_llama  # noqa: E402
from conftest import start_cuda_daemon, start_daemon, stop_daemon  # noqa: E402

HERE = Path(__file__).parent
CHILD = HERE / "_transformers_child.py"


# ---- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return tiny_llama("cpu")


@pytest.fixture(scope="module")
def llama_daemon(model):
    geometry = geometry_for(model, page_tokens=PAGE_TOKENS)
    assert geometry == "layers=3,kv_heads=2,head_dim=16,dtype=fp32,page_tokens=4"
    with tempfile.TemporaryDirectory(prefix="pftf-") as tmp:
        d = start_daemon(Path(tmp), geometry=geometry)
        yield d
        stop_daemon(d)


@pytest.fixture
def pf(llama_daemon):
    with llama_daemon.connect() as c:
        yield c


def dynamic_generate(model, ids, **kw):
    return model.generate(ids, past_key_values=DynamicCache(config=model.config),
                          output_logits=True, return_dict_in_generate=True, **kw)


def assert_pages_hold(client, cache_branch, layers_kv, n_tokens):
    """The branch's pages hold exactly ``layers_kv[l] = (K, V)`` (each (1, kv_heads, seq,
    head_dim), transformers' layout) for tokens [0, n_tokens)."""
    view = client.view(cache_branch)
    assert view.n_tokens == n_tokens
    pt = client.pool().page_tokens
    for t in range(n_tokens):
        page = client.page_torch(view.pages[t // pt])  # [layer, K|V, slot, kv_head, head_dim]
        for layer, (k, v) in enumerate(layers_kv):
            assert torch.equal(page[layer, 0, t % pt], k[0, :, t, :]), (layer, t)
            assert torch.equal(page[layer, 1, t % pt], v[0, :, t, :]), (layer, t)


# ---- 1. conformance --------------------------------------------------------------------
def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_subclasses_the_real_cache_classes_with_their_signatures():
    assert issubclass(ProcessForkCache, Cache)
    assert issubclass(ProcessForkLayer, CacheLayerMixin)
    assert not inspect.isabstract(ProcessForkLayer)
    checked = set()
    for cls, bases in ((ProcessForkCache, (Cache,)), (ProcessForkLayer, (DynamicLayer, CacheLayerMixin))):
        for name, fn in vars(cls).items():
            if name.startswith("_") or not callable(fn):
                continue
            for base in bases:
                if callable(getattr(base, name, None)):
                    assert _params(fn) == _params(getattr(base, name)), f"{cls.__name__}.{name}"
                    checked.add(f"{cls.__name__}.{name}")
                    break
    assert {"ProcessForkCache.update", "ProcessForkCache.crop", "ProcessForkCache.reset",
            "ProcessForkLayer.update", "ProcessForkLayer.lazy_initialization",
            "ProcessForkLayer.get_mask_sizes", "ProcessForkLayer.get_seq_length",
            "ProcessForkLayer.get_max_length", "ProcessForkLayer.crop",
            "ProcessForkLayer.reorder_cache"} <= checked


def test_geometry_helper_follows_the_config(model):
    g = model_geometry(model)
    assert (g.layers, g.kv_heads, g.head_dim, g.dtype) == (3, 2, 16, "fp32")
    assert geometry_for(model.config, page_tokens=16, dtype=torch.bfloat16) == \
        "layers=3,kv_heads=2,head_dim=16,dtype=bf16,page_tokens=16"
    # any block size the daemon takes, e.g. 128 (vLLM's CPU backend's default)
    assert geometry_for(model.config, page_tokens=128).endswith(",page_tokens=128")
    assert geometry_for(model.config, page_tokens=65536).endswith(",page_tokens=65536")
    for bad in (0, 65537, 16.0, True):
        with pytest.raises(processfork.InvalidArgument, match="page_tokens"):
            geometry_for(model, page_tokens=bad)


# ---- 2. generate matches DynamicCache; 3. the pages hold DynamicCache's K/V ---------------
def test_generate_matches_dynamic_cache_exactly_and_pages_hold_its_kv(pf, model):
    ids = prompt_ids(11)
    ref_cache = DynamicCache(config=model.config)
    ref = model.generate(ids, past_key_values=ref_cache, max_new_tokens=9,
                         output_logits=True, return_dict_in_generate=True)
    with ProcessForkCache(pf, model) as cache:
        out = model.generate(ids, past_key_values=cache, max_new_tokens=9,
                             output_logits=True, return_dict_in_generate=True)
        assert out.sequences.tolist() == ref.sequences.tolist()
        assert len(out.logits) == len(ref.logits) == 9
        for a, b in zip(out.logits, ref.logits):
            assert torch.equal(a, b)  # same math, same order, copied bytes: exact
        n = ids.shape[1] + 9 - 1  # the last generated token is never fed back
        assert cache.get_seq_length() == ref_cache.get_seq_length() == n
        assert cache.tokens == ref.sequences[0, :n].tolist()
        assert pf.view(cache.branch, tokens=True).tokens == cache.tokens
        assert pf.view(cache.branch).n_pages == -(-n // PAGE_TOKENS)
        layers_kv = [(layer.keys, layer.values) for layer in ref_cache.layers]
        assert_pages_hold(pf, cache.branch, layers_kv, n)
        # the dense working copy is the same as DynamicCache's too
        for mine, theirs in zip(cache.layers, ref_cache.layers):
            assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)


def test_continue_from_snapshot_with_full_input_ids(pf, model):
    """generate(input_ids=<all ids>, past_key_values=restored cache) skips the cached part,
    as with DynamicCache, and gives the uninterrupted run's tokens and logits."""
    ids = prompt_ids(9)
    ref = dynamic_generate(model, ids, max_new_tokens=12)
    with ProcessForkCache(pf, model) as cache:
        first = model.generate(ids, past_key_values=cache, max_new_tokens=5)
        snap = cache.snapshot(name="half-way")
    assert snap.n_tokens == ids.shape[1] + 5 - 1
    restored = ProcessForkCache.from_snapshot(pf, snap.cid, model)
    with restored:
        assert restored.tokens == first[0, :-1].tolist()
        forwards = ForwardLog(model)
        out = model.generate(input_ids=first, past_key_values=restored, max_new_tokens=7,
                             output_logits=True, return_dict_in_generate=True)
        forwards.remove()
        assert forwards.seen == [1] * 7  # only the uncached last token, then one per step
        assert out.sequences.tolist() == ref.sequences.tolist()
        for a, b in zip(out.logits, ref.logits[5:]):
            assert torch.equal(a, b)
    assert pf.ref_get("half-way") == snap.cid  # the snapshot's name is a ref
    pf.ref_delete("half-way")
    pf.unpin(snap.cid)


def test_two_caches_on_one_model_interleave(pf, model):
    """The token hook dispatches on the forward's past_key_values: several live caches
    (branches) on one model do not see each other's steps."""
    a_ids, b_ids = prompt_ids(6), prompt_ids(13)
    ref_a = dynamic_generate(model, a_ids, max_new_tokens=4)
    ref_b = dynamic_generate(model, b_ids, max_new_tokens=4)
    with ProcessForkCache(pf, model) as a, ProcessForkCache(pf, model) as b:
        a1 = model.generate(a_ids, past_key_values=a, max_new_tokens=2)
        b1 = model.generate(b_ids, past_key_values=b, max_new_tokens=2)
        a2 = model.generate(a1, past_key_values=a, max_new_tokens=2)
        b2 = model.generate(b1, past_key_values=b, max_new_tokens=2)
        dyn = DynamicCache(config=model.config)
        model.generate(a_ids, past_key_values=dyn, max_new_tokens=4)  # no ProcessFork step
        assert a2.tolist() == ref_a.sequences.tolist()
        assert b2.tolist() == ref_b.sequences.tolist()
        assert a.tokens == a2[0, :-1].tolist() and b.tokens == b2[0, :-1].tolist()


def test_prefix_reuse_across_caches_loads_pages_instead_of_recomputing(pf, model):
    ids = prompt_ids(14)
    ref = dynamic_generate(model, ids, max_new_tokens=3)
    with ProcessForkCache(pf, model) as writer:
        model.generate(ids, past_key_values=writer, max_new_tokens=1)
        writer.commit()  # full pages go to the prefix index
        with ProcessForkCache.from_prefix(pf, ids[0].tolist(), model) as reader:
            reused = (ids.shape[1] // PAGE_TOKENS) * PAGE_TOKENS
            assert reader.tokens == ids[0, :reused].tolist()
            assert pf.view(reader.branch).pages == pf.view(writer.branch).pages[:reused // PAGE_TOKENS]
            forwards = ForwardLog(model)
            out = model.generate(ids, past_key_values=reader, max_new_tokens=3,
                                 output_logits=True, return_dict_in_generate=True)
            forwards.remove()
            assert forwards.seen == [ids.shape[1] - reused, 1, 1]
            assert out.sequences.tolist() == ref.sequences.tolist()
            # The 2 uncached prompt tokens run in a 2-token forward here and inside a
            # 14-token forward in the reference: a different matmul shape, so their K/V and
            # every later logit may differ in the last bits (BLAS blocking), not more.
            # The reused 12 tokens' KV is loaded bit for bit (checked below).
            for a, b in zip(out.logits, ref.logits):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            for mine, theirs in zip(reader.layers, writer.layers):
                assert torch.equal(mine.keys[:, :, :reused], theirs.keys[:, :, :reused])
                assert torch.equal(mine.values[:, :, :reused], theirs.values[:, :, :reused])


def test_crop_and_reset_shrink_the_branch(pf, model):
    ids = prompt_ids(10)
    ref_cache = DynamicCache(config=model.config)
    model.generate(ids, past_key_values=ref_cache, max_new_tokens=4)
    with ProcessForkCache(pf, model) as cache:
        out = model.generate(ids, past_key_values=cache, max_new_tokens=4)
        n = out.shape[1] - 1
        cache.crop(-5)
        assert cache.get_seq_length() == n - 5 and len(cache.tokens) == n - 5
        assert pf.view(cache.branch).n_tokens == n - 5
        ref_cache.crop(-5)
        assert_pages_hold(pf, cache.branch, [(l.keys, l.values) for l in ref_cache.layers], n - 5)
        # generation goes on from the cropped state like DynamicCache does
        again = model.generate(out[:, :n - 4], past_key_values=cache, max_new_tokens=3)
        assert again.tolist() == model.generate(
            out[:, :n - 4], past_key_values=ref_cache, max_new_tokens=3).tolist()
        cache.reset()
        assert cache.get_seq_length() == 0 and cache.tokens == []
        assert pf.view(cache.branch).n_tokens == 0


# ---- 4. the fork test: three processes continue one generation --------------------------
def _run_fork_test(daemon, model, device: str, exact: bool, tmp: Path) -> None:
    gen, steps = 6, 5
    prompt = prompt_ids(11, device)
    with daemon.connect() as pf:
        cache = ProcessForkCache(pf, model)
        full = model.generate(prompt, past_key_values=cache, max_new_tokens=gen)
        snap = cache.snapshot(name="fork-point")
        used_before = pf.stats().used_pages
        kids = cache.fork(2, detach=True)
        assert pf.stats().used_pages == used_before  # the fork added 0 pages
        greedy = int(dynamic_generate(model, full, max_new_tokens=1).sequences[0, -1])
        forced = [t for t in (5, 77, 120, 42) if t != greedy][:3]
        sources = [("branch", str(kids[0].id)), ("branch", str(kids[1].id)), ("snapshot", snap.cid)]
        ids_arg = ",".join(str(t) for t in full[0].tolist())
        procs, outs = [], []
        for i, ((mode, source), force) in enumerate(zip(sources, forced)):
            out = tmp / f"child{i}.pt"
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, str(CHILD), daemon.socket, mode, source, ids_arg, str(force),
                 str(steps), str(out), device],
                cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for p in procs:
            log, _ = p.communicate(timeout=300)
            assert p.returncode == 0, log.decode()
        for out, force in zip(outs, forced):
            got = torch.load(out)
            ref = dynamic_generate(model, prompt, max_new_tokens=gen + 1 + steps,
                                   logits_processor=[ForceToken(full.shape[1], force)])
            assert got["restored"] == full[0, :-1].tolist()  # loaded, with its token ids
            assert got["seen"] == [1] * (1 + steps)  # first forward: only the uncached token
            assert got["sequence"] == ref.sequences[0].tolist()
            assert got["sequence"][full.shape[1]] == force
            assert got["in_sync"] and got["branch_tokens"] == full.shape[1] + steps
            want = torch.stack(ref.logits[gen:]).cpu()
            assert got["logits"].shape == want.shape
            if exact:
                assert torch.equal(got["logits"], want)
            else:
                torch.testing.assert_close(got["logits"], want, rtol=1e-5, atol=1e-5)
        assert len({tuple(torch.load(o)["sequence"]) for o in outs}) == 3  # three branches
        # the children freed what they adopted (no branch but the parent's is left in the
        # daemon); the parent's state is untouched
        assert [b.branch for b in pf.branches()] == [cache.branch.id]
        assert pf.view(cache.branch, tokens=True).tokens == full[0, :-1].tolist()
        cache.close()
        pf.ref_delete("fork-point")
        pf.unpin(snap.cid)


def test_fork_into_three_processes_matches_uninterrupted_runs(llama_daemon, model, tmp_path):
    _run_fork_test(llama_daemon, model, "cpu", exact=True, tmp=tmp_path)


# ---- 5. bad input ----------------------------------------------------------------------
# ---- 4b. copy.deepcopy: a fork -----------------------------------------------------------
def _kv(cache):
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def _same_kv(cache, kv):
    return all(torch.equal(layer.keys, k) and torch.equal(layer.values, v)
               for layer, (k, v) in zip(cache.layers, kv))


def test_deepcopy_of_a_prompt_cache_is_an_independent_fork(pf, model):
    """transformers' prompt-reuse pattern: prefill a prompt once, then generate each
    continuation on a copy.deepcopy of that cache. Each copy is a fork (pages shared, none
    copied), generates exactly as a deep-copied DynamicCache does, and neither the original
    nor the other copy sees its writes."""
    prompt = prompt_ids(9)  # 2 full pages + 1 token: the shared last page is copied on write
    suffixes = [torch.tensor([[5, 6, 7]]), torch.tensor([[40, 41]]), torch.tensor([[90]])]
    ref_prompt = DynamicCache(config=model.config)
    cache = ProcessForkCache(pf, model)
    with torch.no_grad():
        model(prompt, past_key_values=ref_prompt)
        model(prompt, past_key_values=cache)
    kv0, pages0 = _kv(cache), pf.view(cache.branch).pages
    copies = []
    for suffix in suffixes[:2]:
        ids = torch.cat([prompt, suffix], dim=1)
        ref = model.generate(ids, past_key_values=copy.deepcopy(ref_prompt), max_new_tokens=5,
                             output_logits=True, return_dict_in_generate=True)
        fresh = dynamic_generate(model, ids, max_new_tokens=5)
        twin = copy.deepcopy(cache)
        copies.append(twin)
        assert twin.branch.id != cache.branch.id and twin.tokens == cache.tokens
        assert pf.view(twin.branch).pages == pages0  # a fork: the same pages
        assert _same_kv(twin, kv0)
        out = model.generate(ids, past_key_values=twin, max_new_tokens=5,
                             output_logits=True, return_dict_in_generate=True)
        assert out.sequences.tolist() == ref.sequences.tolist() == fresh.sequences.tolist()
        for mine, theirs, full in zip(out.logits, ref.logits, fresh.logits):
            assert torch.equal(mine, theirs)
            # the full prefill runs the prompt in a wider matmul: last bits only
            torch.testing.assert_close(mine, full, rtol=1e-5, atol=1e-6)
        # the original did not move: tokens, dense KV, pages and their bytes
        assert cache.tokens == prompt[0].tolist() and cache.get_seq_length() == 9
        assert _same_kv(cache, kv0) and pf.view(cache.branch).pages == pages0
        assert_pages_hold(pf, cache.branch, kv0, 9)
    a, b = copies
    a_kv, b_kv = _kv(a), _kv(b)
    assert a.tokens[:9] == b.tokens[:9] == cache.tokens and a.tokens[9] != b.tokens[9]
    for twin, kv in ((a, a_kv), (b, b_kv)):
        assert pf.view(twin.branch, tokens=True).tokens == twin.tokens
        assert_pages_hold(pf, twin.branch, kv, len(twin.tokens))
    # the original goes on after its copies; they do not see it
    model.generate(torch.cat([prompt, suffixes[2]], dim=1), past_key_values=cache,
                   max_new_tokens=3)
    assert cache.tokens[9] == 90
    for twin, kv in ((a, a_kv), (b, b_kv)):
        assert _same_kv(twin, kv)
        assert_pages_hold(pf, twin.branch, kv, len(twin.tokens))
    # own lifetimes: closing the original leaves the copies working; each frees its branch
    cache.close()
    more = model.generate(torch.tensor([a.tokens + [3]]), past_key_values=a, max_new_tokens=2)
    assert a.tokens == more[0, :-1].tolist()
    for twin in copies:
        gone = twin.branch.id
        twin.close()
        with pytest.raises(processfork.NotFound):
            pf.view(gone)


def test_deepcopy_memo_and_refusals(pf, model):
    with ProcessForkCache(pf, model) as cache, torch.no_grad():
        model(prompt_ids(5), past_key_values=cache)
        pair = copy.deepcopy([cache, cache])
        assert pair[0] is pair[1] and pair[0] is not cache
        pair[0].close()
        k = torch.zeros(1, 2, 1, 16)
        cache.update(k, k, 0, {"token_ids": [9]})  # a step in progress
        with pytest.raises(ProcessForkCacheError, match="in progress"):
            copy.deepcopy(cache)
    with pytest.raises(ProcessForkCacheError, match="closed"):
        copy.deepcopy(cache)


# ---- 4c. update() outside a forward --------------------------------------------------------
def _prefilled_elsewhere(model, prompt, n, max_new_tokens):
    """A DynamicCache holding the K/V of ``prompt[:, :n]`` (the K/V to feed to update()),
    and the reference: generation from a deep copy of it."""
    src = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prompt[:, :n], past_key_values=src)
    ref = model.generate(prompt, past_key_values=copy.deepcopy(src),
                         max_new_tokens=max_new_tokens, output_logits=True,
                         return_dict_in_generate=True)
    return src, ref


def test_update_outside_a_forward_matches_dynamic_cache(pf, model):
    """K/V computed elsewhere (here: by the model on a DynamicCache) fed to update() layer
    by layer, with their token ids: every return value and per-layer length equals
    DynamicCache's given the same calls, the branch records the tokens, and generation
    from there equals generation from the source cache (and a full prefill, to the last
    bits)."""
    prompt = prompt_ids(10)
    src, ref = _prefilled_elsewhere(model, prompt, 6, max_new_tokens=4)
    fresh = dynamic_generate(model, prompt, max_new_tokens=4)
    dyn = DynamicCache(config=model.config)
    n_layers = len(src.layers)
    with ProcessForkCache(pf, model) as cache:
        # two manual steps: tokens [0, 4) layer by layer in reverse order, cache_kwargs as
        # the 4th positional argument; tokens [4, 6) in order, cache_kwargs by keyword
        for lo, hi, order, by_kw in ((0, 4, reversed(range(n_layers)), False),
                                     (4, 6, range(n_layers), True)):
            ids = prompt[0, lo:hi].tolist()
            for i in order:
                k = src.layers[i].keys[:, :, lo:hi]
                v = src.layers[i].values[:, :, lo:hi]
                kw = {"cache_kwargs": {"token_ids": ids}} if by_kw else {}
                args = () if by_kw else ({"token_ids": torch.tensor(ids)},)
                mine = cache.update(k, v, i, *args, **kw)
                theirs = dyn.update(k, v, i)
                assert mine[0].shape == theirs[0].shape == (1, 2, hi, 16)
                assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1])
                assert [cache.get_seq_length(j) for j in range(n_layers)] == \
                    [dyn.get_seq_length(j) for j in range(n_layers)]
            assert cache.tokens == prompt[0, :hi].tolist() and cache.in_sync
            assert pf.view(cache.branch, tokens=True).tokens == cache.tokens
        assert_pages_hold(pf, cache.branch, [(lay.keys, lay.values) for lay in src.layers], 6)
        forwards = ForwardLog(model)
        out = model.generate(prompt, past_key_values=cache, max_new_tokens=4,
                             output_logits=True, return_dict_in_generate=True)
        forwards.remove()
        assert forwards.seen == [4, 1, 1, 1]  # the 6 updated tokens are not recomputed
        assert out.sequences.tolist() == ref.sequences.tolist() == fresh.sequences.tolist()
        for mine, theirs, full in zip(out.logits, ref.logits, fresh.logits):
            assert torch.equal(mine, theirs)
            torch.testing.assert_close(mine, full, rtol=1e-5, atol=1e-6)
        snap = cache.snapshot()
        assert snap.n_tokens == 13
        pf.unpin(snap.cid)


def test_update_outside_a_forward_refusals_change_nothing(pf, model):
    k1, k2 = torch.ones(1, 2, 2, 16), torch.ones(1, 2, 3, 16)
    with ProcessForkCache(pf, model) as cache:
        cache.update(k1, k1, 0, {"token_ids": [4, 5]})
        lengths = [cache.get_seq_length(j) for j in range(3)]
        assert lengths == [2, 0, 0]
        with pytest.raises(ValueError, match="updated twice: True"):
            cache.update(k1, k1, 0, {"token_ids": [4, 5]})
        with pytest.raises(ValueError, match="got 3 new tokens"):
            cache.update(k2, k2, 1)
        with pytest.raises(ValueError, match="differ"):
            cache.update(k1, k1, 1, {"token_ids": [4, 6]})
        for bad in ([4], [4.5, 5], [-1, 5], [2**32, 5], "ab", [True, 5]):
            with pytest.raises(ValueError, match="token_ids"):
                cache.update(k1, k1, 2, {"token_ids": bad})
        with pytest.raises(ValueError, match="cache_kwargs must be a dict"):
            cache.update(k1, k1, 2, [4, 5])
        assert [cache.get_seq_length(j) for j in range(3)] == lengths
        # a forward cannot start on a half-done step; crop() rolls the step back
        with pytest.raises(ValueError, match=r"layers \[1, 2\] have not had yet"):
            model(prompt_ids(3), past_key_values=cache)
        cache.crop(0)
        assert [cache.get_seq_length(j) for j in range(3)] == [0, 0, 0]
        ref = dynamic_generate(model, prompt_ids(5), max_new_tokens=3)
        out = model.generate(prompt_ids(5), past_key_values=cache, max_new_tokens=3)
        assert out.tolist() == ref.sequences.tolist() and cache.in_sync
        assert pf.view(cache.branch, tokens=True).tokens == cache.tokens
    with ProcessForkCache(pf, model, strict=True) as strict:
        with pytest.raises(ValueError, match="strict=True"):
            strict.update(k1, k1, 0)
        assert strict.get_seq_length(0) == 0 and strict.in_sync


def test_update_without_token_ids_goes_on_untracked(pf, model, caplog):
    """Without token ids the branch cannot record the tokens: the cache goes on from its
    dense KV exactly as DynamicCache does, says so (a warning, ``untracked``), and refuses
    what needs the branch (snapshot, fork, commit, deepcopy)."""
    prompt = prompt_ids(8)
    src, ref = _prefilled_elsewhere(model, prompt, 5, max_new_tokens=3)
    with ProcessForkCache(pf, model) as cache:
        with caplog.at_level(logging.WARNING, logger="processfork.transformers"):
            for i, layer in enumerate(src.layers):
                cache.update(layer.keys, layer.values, i)
        assert "without their ids" in caplog.text
        assert not cache.in_sync and "tokens [0, 5)" in cache.untracked
        assert cache.get_seq_length() == 5 and cache.tokens == []
        out = model.generate(prompt, past_key_values=cache, max_new_tokens=3,
                             output_logits=True, return_dict_in_generate=True)
        assert out.sequences.tolist() == ref.sequences.tolist()
        assert all(torch.equal(a, b) for a, b in zip(out.logits, ref.logits))
        assert pf.view(cache.branch).n_tokens == 0  # nothing was written to the branch
        for share in (cache.snapshot, lambda: cache.fork(1), cache.commit,
                      lambda: copy.deepcopy(cache)):
            with pytest.raises(ProcessForkCacheError, match="without their ids"):
                share()
        assert "untracked" in repr(cache)


def test_geometry_mismatch_is_refused(pf):
    before = len(pf.branches())
    with pytest.raises(processfork.InvalidArgument, match=r"layers: pool 3 != model 2"):
        ProcessForkCache(pf, tiny_llama(layers=2))
    with pytest.raises(processfork.InvalidArgument, match=r"dtype: pool fp32 != model fp16"):
        ProcessForkCache(pf, tiny_llama().half())
    assert len(pf.branches()) == before  # nothing was created


def test_batch_of_two_is_refused(pf, model):
    with ProcessForkCache(pf, model) as cache:
        with pytest.raises(ValueError, match="batch size 2"):
            model.generate(torch.cat([prompt_ids(5)] * 2), past_key_values=cache, max_new_tokens=2)
        with pytest.raises(ValueError, match="one sequence"):
            model.generate(prompt_ids(5), past_key_values=cache, max_new_tokens=2,
                           num_beams=2)
        assert pf.view(cache.branch).n_tokens == cache.get_seq_length()


def test_closed_client_and_closed_cache(llama_daemon, model):
    c = llama_daemon.connect()
    c.close()
    with pytest.raises(processfork.Unavailable, match="closed"):
        ProcessForkCache(c, model)
    with pytest.raises(processfork.Unavailable):
        ProcessForkCache.from_snapshot(c, "nothing", model)
    with llama_daemon.connect() as c2:
        cache = ProcessForkCache(c2, model)
        cache.close()
        cache.close()  # idempotent
        with pytest.raises(ProcessForkCacheError, match="closed"):
            model.generate(prompt_ids(4), past_key_values=cache, max_new_tokens=1)


def test_other_bad_input(llama_daemon, pf, model):
    with pytest.raises(processfork.NotFound):
        ProcessForkCache.from_snapshot(pf, "no-such-ref", model)
    with pytest.raises(TypeError):
        ProcessForkCache("not a client", model)
    with ProcessForkCache(pf, model) as cache:
        with pytest.raises(ValueError, match="input_ids"):
            model(inputs_embeds=torch.zeros(1, 3, 64), past_key_values=cache)
    # another session's branch cannot be adopted (it is not detached)
    with llama_daemon.connect() as other:
        b = other.branch()
        with pytest.raises(processfork.Conflict, match="another client"):
            ProcessForkCache.from_branch(pf, b, model)


def test_pool_error_degrades_without_breaking_generate(pf, model, caplog):
    """A ProcessFork failure mid-generation (here: the branch freed behind the cache's
    back) is logged; generation completes from the dense KV; sharing then raises."""
    ids = prompt_ids(7)
    ref = dynamic_generate(model, ids, max_new_tokens=6)
    cache = ProcessForkCache(pf, model)
    model.generate(ids, past_key_values=cache, max_new_tokens=1)
    pf.free(cache.branch)
    with caplog.at_level(logging.WARNING, logger="processfork.transformers"):
        out = model.generate(ids, past_key_values=cache, max_new_tokens=6)
    assert out.tolist() == ref.sequences.tolist()
    assert not cache.in_sync and isinstance(cache.pool_error, processfork.NotFound)
    assert "no longer written" in caplog.text
    with pytest.raises(ProcessForkCacheError, match="pool error") as e:
        cache.snapshot()
    assert e.value.__cause__ is cache.pool_error
    with pytest.raises(ProcessForkCacheError):
        cache.fork(2)
    cache.close()
    # strict=True raises the ProcessFork error itself
    strict = ProcessForkCache(pf, model, strict=True)
    pf.free(strict.branch)
    with pytest.raises(processfork.NotFound):
        model.generate(ids, past_key_values=strict, max_new_tokens=1)
    strict.close()


# ---- 6. GPU ----------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_fork_on_cuda_pool_matches_uninterrupted_runs(tmp_path):
    model = tiny_llama("cuda")
    with tempfile.TemporaryDirectory(prefix="pftc-") as tmp:
        d = start_cuda_daemon(Path(tmp), geometry_for(model, page_tokens=PAGE_TOKENS))
        try:
            with d.connect() as c:
                assert c.pool().device_memory
            # GPU kernels (cuBLAS, SDPA) may choose different algorithms for the strided
            # dense views than for DynamicCache's contiguous tensors: tight allclose.
            _run_fork_test(d, model, "cuda", exact=False, tmp=tmp_path)
        finally:
            stop_daemon(d)


def test_sealing_calls_are_fenced_and_the_fence_is_skipped_on_cpu(pf, model, monkeypatch):
    """processfork.h "GPU fences": before commit, snapshot and fork the cache waits for
    torch's current stream of the model's device; with CPU tensors the fence is skipped
    (returns False without touching CUDA) and the sealed pages still hold the KV."""
    from processfork.transformers import _cache

    events = record_fences_and_seals(monkeypatch, _cache, ("commit", "snapshot", "fork"))
    ids = prompt_ids(9)
    ref_cache = DynamicCache(config=model.config)
    model.generate(ids, past_key_values=ref_cache, max_new_tokens=3)
    with ProcessForkCache(pf, model) as cache:
        model.generate(ids, past_key_values=cache, max_new_tokens=3)
        events.clear()
        cache.commit()
        snap = cache.snapshot()
        kids = cache.fork(1)
        cpu_fence = ("fence", "cpu", False)
        assert events == [cpu_fence, ("commit",), cpu_fence, ("snapshot",), cpu_fence,
                          ("fork",)]
        n = cache.get_seq_length()
        assert snap.n_tokens == n
        assert_pages_hold(pf, kids[0].id, [(la.keys, la.values) for la in ref_cache.layers], n)
        pf.free(kids[0].id)
