"""The durable store through the Python package and the CLI (docs/store.md): a real daemon
with ``--store``, snapshots made durable with ``sync=True`` / ``snapshot --sync``, a
restart, and the same bytes checked out again."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import processfork
from conftest import start_daemon, stop_daemon


def _fill(client, branch, n: int, seed: int) -> None:
    """Appends n tokens and writes a seeded pattern into every slot they got."""
    rng = np.random.default_rng(seed)
    for run in client.append(branch, list(range(seed, seed + n))):
        page = client.page(run.page)  # [layer][K|V][token][kv_head][head_dim]
        slots = page[:, :, run.first_slot:run.first_slot + run.count]
        slots[...] = rng.standard_normal(slots.shape).astype(slots.dtype)


def _tokens_bytes(client, branch) -> bytes:
    """The KV of every token of the branch, in order, read through this client's mapping."""
    v = client.view(branch)
    pt = client.pool().page_tokens
    parts = []
    for i, page_id in enumerate(v.pages):
        used = pt if i + 1 < len(v.pages) else v.fill_in_last_page
        parts.append(np.ascontiguousarray(client.page(page_id)[:, :, :used]).tobytes())
    return b"".join(parts)


def _written_branch(c, n: int, seed: int):
    """A branch of n tokens with seeded KV, and those bytes."""
    b = c.branch()
    _fill(c, b, n, seed)
    return b, _tokens_bytes(c, b)


@pytest.fixture
def store_dir():
    """(a short temporary directory, the serve flags of a store inside it)."""
    with tempfile.TemporaryDirectory(prefix="pfst-") as tmp:
        yield Path(tmp), ("--store", str(Path(tmp) / "store"))


def test_sync_snapshot_survives_a_restart_bit_identical(store_dir):
    where, store = store_dir
    d = start_daemon(where, extra=store)
    try:
        with d.connect() as c:
            b, expected = _written_branch(c, 13, seed=5)
            snap = c.snapshot(b, "py-kept", sync=True)
            c.wait_durable("py-kept")  # a ref works too, and a durable one returns at once
            # The CLI's --sync: the answer says it is durable.
            b2 = c.branch()
            _fill(c, b2, 6, seed=9)
            c.detach(b2)
            out = subprocess.run(
                [os.environ.get("PF_CLI") or processfork.cli_path(), "--socket", d.socket,
                 "--json", "snapshot", str(b2.id), "--sync"],
                check=True, capture_output=True, text=True)
            cli_snap = json.loads(out.stdout)
            assert cli_snap["durable"] is True
    finally:
        os.kill(d.proc.pid, 9)  # a crash: only what is durable may survive, and it must
        d.proc.wait()
    d = start_daemon(where, extra=store)
    try:
        with d.connect() as c:
            cids = {s.cid for s in c.snapshots()}
            assert {snap.cid, cli_snap["cid"]} <= cids
            assert c.ref_get("py-kept") == snap.cid
            back = c.checkout("py-kept")
            # Lazy page-in: the checkout returned before its pages were read. A view that
            # waits for none says how many are readable so far; one that waits for the
            # first page has it; the default view waits for every page.
            early = c.view(back, wait_pages=0)
            assert 0 <= early.ready_pages <= early.n_pages
            assert c.view(back, wait_pages=1).ready_pages >= 1
            full = c.view(back)
            assert full.ready_pages == full.n_pages == early.n_pages
            assert _tokens_bytes(c, back) == expected
    finally:
        stop_daemon(d)


def test_wait_durable_without_a_store_is_unavailable(client):
    b = client.branch()
    client.append(b, [1, 2, 3])
    snap = client.snapshot(b)
    with pytest.raises(processfork.Unavailable, match="--store"):
        client.wait_durable(snap.cid)
    with pytest.raises(processfork.Unavailable):
        client.snapshot(b, sync=True)


def test_an_attached_client_continues_on_the_restarted_daemon(store_dir):
    """A client stays open across a crash and restart of a daemon with a store: its next call
    reconnects (a new mapping, generation + 1), the stored snapshot checks out with its
    bytes, and a branch handle of the old boot epoch is refused as stale."""
    where, store = store_dir
    d = start_daemon(where, extra=store)
    try:
        with d.connect() as c:
            b, expected = _written_branch(c, 11, seed=21)
            snap = c.snapshot(b, sync=True)
            generation = c.generation
            os.kill(d.proc.pid, 9)
            d.proc.wait()
            d = start_daemon(where, extra=store)
            back = c.checkout(snap.cid)  # reconnects, pages the snapshot in
            assert c.generation == generation + 1
            assert _tokens_bytes(c, back) == expected
            with pytest.raises(processfork.StaleHandle):
                c.view(b)
    finally:
        stop_daemon(d)
