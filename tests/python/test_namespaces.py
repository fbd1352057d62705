"""Prefix-index namespaces through the Python client against a real daemon
(docs/python.md "Namespaces"): isolation of token lookups, commits, keyed lookups and
publishes; inheritance by fork/checkout; argument checks; processfork.namespace and
processfork.model_fingerprint."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import processfork
from test_keyed_pages import chain_keys

NS_A = processfork.namespace("model-a")
NS_B = processfork.namespace("model-b")


def write_and_commit(c: processfork.Client, tokens: list[int], namespace) -> processfork.Branch:
    b = c.branch(namespace=namespace)
    for run in c.append(b, tokens):
        c.page(run.page)[...] = 1
    c.commit(b)
    return b


def test_token_lookups_and_commits_stay_in_their_namespace(client):
    pt = client.pool().page_tokens
    tokens = list(range(5000, 5000 + 3 * pt))
    write_and_commit(client, tokens, NS_A)
    assert client.branch(tokens, namespace=NS_A).reused_tokens == len(tokens)
    assert client.branch(tokens, namespace=NS_B).reused_tokens == 0
    assert client.branch(tokens).reused_tokens == 0
    # hex spelling (either case) names the same namespace
    assert client.branch(tokens, namespace=NS_A.hex().upper()).reused_tokens == len(tokens)
    # forks and checkouts of a namespaced branch commit into its namespace
    b = client.branch(tokens, namespace=NS_A)
    snap = client.snapshot(b)
    assert client.manifest(snap.cid)["namespace"] == NS_A.hex()
    kid = client.checkout(snap.cid)
    more = list(range(9000, 9000 + pt))
    for run in client.append(kid, more):
        client.page(run.page)[...] = 2
    client.commit(kid)
    assert client.branch(tokens + more, namespace=NS_A).reused_tokens == len(tokens) + pt
    assert client.branch(tokens + more).reused_tokens == 0


def test_keyed_pages_stay_in_their_namespace(client):
    pt = client.pool().page_tokens
    tokens = list(range(7000, 7000 + 2 * pt))
    keys = chain_keys(tokens, pt)
    pages = client.alloc_pages(2)
    assert client.publish_pages(keys, pages, namespace=NS_B) == 2
    assert client.lookup_keys(keys, hold=False, namespace=NS_B) == pages
    assert client.lookup_keys(keys, hold=False, namespace=NS_A) == []
    assert client.lookup_keys(keys, hold=False) == []
    # token lookups adopt key-published pages of their own namespace only
    assert client.branch(tokens, namespace=NS_B).reused_tokens == len(tokens)
    assert client.branch(tokens).reused_tokens == 0
    # the all-zero tag is the default namespace
    assert client.lookup_keys(keys, hold=False, namespace=bytes(32)) == []


@pytest.mark.parametrize("bad", [b"x" * 31, b"x" * 33, "ab" * 31, "zz" * 32, 7, ["a"]])
def test_malformed_namespace_is_a_value_error_and_changes_nothing(client, bad):
    before = client.stats()
    n_branches = len(client.branches())
    with pytest.raises(ValueError):
        client.branch([1, 2, 3, 4], namespace=bad)
    with pytest.raises(ValueError):
        client.lookup_keys(["00" * 32], namespace=bad)
    pages = client.alloc_pages(1)
    with pytest.raises(ValueError):
        client.publish_pages(["11" * 32], pages, namespace=bad)
    client.release_pages(pages)
    after = client.stats()
    assert after.used_pages == before.used_pages
    assert len(client.branches()) == n_branches


def test_namespace_encoding_is_length_prefixed_sha256():
    assert processfork.namespace() is None
    assert processfork.namespace(None, None) is None
    expect = hashlib.sha256(b"processfork-namespace-v1" + b"\x01" + (2).to_bytes(8, "little")
                            + b"ab" + b"\x00").digest()
    assert processfork.namespace("ab", None) == expect
    assert processfork.namespace(b"ab", None) == expect
    assert processfork.namespace("ab", None) != processfork.namespace("a", "b")
    assert processfork.namespace(None, "x") != processfork.namespace("x", None)
    assert processfork.namespace("", None) != processfork.namespace(None, None)
    with pytest.raises(ValueError):
        processfork.namespace(3)


def _tiny_model(d: Path, weights: bytes, *, name: str = "x", version: str = "4.0") -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(
        {"hidden_size": 8, "_name_or_path": name, "transformers_version": version}))
    (d / "model.safetensors").write_bytes(weights)
    (d / "README.md").write_text(name)  # not a weight file: ignored
    return d


def test_model_fingerprint_hashes_config_and_weights(tmp_path):
    a = _tiny_model(tmp_path / "a", b"\x00" * 3000)
    same = _tiny_model(tmp_path / "same", b"\x00" * 3000, name="elsewhere", version="5.1")
    other = _tiny_model(tmp_path / "other", b"\x00" * 2999 + b"\x01")
    fp = processfork.model_fingerprint(a)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert processfork.model_fingerprint(str(same)) == fp  # path and volatile keys ignored
    assert processfork.model_fingerprint(other) != fp
    (a / "config.json").write_text(json.dumps({"hidden_size": 9}))
    assert processfork.model_fingerprint(a) != fp  # memo keyed on (path, size, mtime)
    with pytest.raises(ValueError):
        processfork.model_fingerprint(tmp_path / "missing")


def test_cli_branch_create_takes_a_namespace(daemon, client):
    pt = client.pool().page_tokens
    tokens = list(range(8000, 8000 + 2 * pt))
    write_and_commit(client, tokens, NS_B)
    cli = processfork.cli_path()

    def create(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([cli, "--socket", daemon.socket, "--json", "branch", "create",
                               *args, *map(str, tokens)], capture_output=True, text=True)

    out = create("--namespace", NS_B.hex())
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["reused_tokens"] == len(tokens)
    client.free(made["branch"])
    out = create()
    assert out.returncode == 0 and json.loads(out.stdout)["reused_tokens"] == 0
    client.free(json.loads(out.stdout)["branch"])
    bad = create("--namespace", "xyz")
    assert bad.returncode == 2 and "--namespace" in bad.stderr


def test_transformers_cache_namespace_follows_the_model_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    from processfork.transformers import cache_namespace

    d = tmp_path / "tiny"
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1,
                                   vocab_size=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    model = transformers.LlamaForCausalLM.from_pretrained(d)
    fp = processfork.model_fingerprint(d)
    assert cache_namespace(model) == processfork.namespace(fp, None, None, None)
    assert cache_namespace(model, "pinned") == processfork.namespace("pinned", None, None, None)
    in_memory = transformers.LlamaForCausalLM(cfg)  # no directory: the default namespace
    assert cache_namespace(in_memory) is None
