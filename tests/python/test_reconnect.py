"""A client across daemon restarts (docs/python.md "Daemon restarts"), through real processes.

A daemon is stopped under a connected client (SIGTERM: the clean shutdown; SIGKILL: a crash)
and a new one started on the same socket (waited for by its ready file, no sleeps). The
client's next call reconnects; ``generation`` counts it; the new pool is mapped at a new
base and pages written through new views read back in another client; branch ids and page
holds of the earlier daemon raise ``StaleHandle`` naming both epochs, and reach no daemon.
"""
from __future__ import annotations

import re
import signal

import numpy as np
import pytest

import processfork
from conftest import restart_daemon, stop_daemon


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_client_reconnects_and_refuses_old_handles(private_daemon, sig):
    c = processfork.connect(private_daemon.socket, reconnect_timeout_ms=30_000)
    try:
        before = c.pool()
        assert before.boot_epoch == before.lease >> 32 != 0
        assert c.generation == 0
        old = c.branch()
        old_runs = c.append(old, range(8))
        held = c.alloc_pages(1)
        base = c.mapping()["base"]

        d2 = restart_daemon(private_daemon, sig)
        try:
            # the next call reconnects and the new daemon answers it
            assert c.stats().used_pages == 0
            assert c.generation == 1
            after = c.pool()
            assert after.boot_epoch != before.boot_epoch
            assert after.boot_epoch == after.lease >> 32
            assert after.daemon_pid == d2.proc.pid
            assert c.mapping()["attached"] and c.mapping()["base"] != base

            both = (f"belongs to daemon boot epoch {before.boot_epoch}; the daemon restarted "
                    f"(epoch {after.boot_epoch})")
            with pytest.raises(processfork.StaleHandle, match=re.escape(both)):
                c.append(old, [1])
            with pytest.raises(processfork.Error) as e:  # what existing handlers catch
                c.view(old)
            assert (e.value.code, e.value.code_name) == (14, "PF_STALE")
            assert isinstance(e.value, LookupError)
            with pytest.raises(processfork.StaleHandle, match=re.escape(both)):
                c.fork(old, 2)
            with pytest.raises(processfork.StaleHandle):
                c.snapshot(old)
            with pytest.raises(processfork.StaleHandle,
                               match=f"daemon boot epoch {before.boot_epoch}"):
                c.release_pages(held)
            assert not c.page_writable(old_runs[0].page)
            assert c.pool_json()["branches"] == 0  # no stale call reached the daemon

            # the new mapping is the new daemon's pool
            b = c.branch()
            assert b.id >> 32 == after.boot_epoch
            pages = sorted({r.page for r in c.append(b, range(100, 108))})
            for p in pages:
                c.page(p)[...] = 0x5A5A
            c.snapshot(b, "after-restart")
            with d2.connect() as other:
                co = other.checkout("after-restart")
                assert sorted(other.view(co).pages) == pages
                for p in pages:
                    assert np.all(other.page(p) == 0x5A5A)
        finally:
            stop_daemon(d2)
    finally:
        c.close()


def test_mutation_naming_no_handle_works_after_restart(private_daemon):
    c = processfork.connect(private_daemon.socket, reconnect_timeout_ms=30_000)
    try:
        d2 = restart_daemon(private_daemon, signal.SIGKILL)
        try:
            # the send finds the daemon gone, so the request never left: it is sent again
            b = c.branch(range(5))
            assert c.generation == 1
            assert c.view(b).n_tokens == 0
            assert c.pool_json()["branches"] == 1
        finally:
            stop_daemon(d2)
    finally:
        c.close()


def test_reconnect_false_keeps_a_dead_client_dead(private_daemon):
    c = processfork.connect(private_daemon.socket, reconnect=False)
    try:
        d2 = restart_daemon(private_daemon, signal.SIGTERM)
        try:
            with pytest.raises(processfork.Unavailable):
                c.stats()
            with pytest.raises(processfork.Unavailable):
                c.stats()
            assert c.generation == 0
        finally:
            stop_daemon(d2)
    finally:
        c.close()
