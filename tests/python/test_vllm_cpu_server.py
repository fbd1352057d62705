"""vLLM-CPU's OpenAI server with the connector and the ``/v1/processfork/*`` routes.

A real ``python -m vllm.entrypoints.openai.api_server`` (the way docs/adapter-vllm.md
serves on vLLM-CPU, whose ``vllm`` console script does not start) with
``VLLM_PLUGINS=processfork`` (the general plug-in registers ``ProcessForkConnector`` by
name, so the transfer config needs no module path), the connector on a real daemon, and
the routes mounted by ``--middleware processfork.vllm.ProcessForkRoutes`` (vLLM 0.32 has
no endpoint plug-ins). Every route is called over HTTP, with ``--api-key`` enforced.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")

import processfork  # noqa: E402

from _real_engines import (ServerProcess, free_port, prompt as _prompt,  # noqa: E402
                           wait_until_listening)
from _vllm_cpu import STARTUP_S, engine_env, make_model, python_or_skip  # noqa: E402
from conftest import start_daemon, stop_daemon  # noqa: E402

BLOCK = 32
KEY = "test-key"


class _Server(ServerProcess):
    """The OpenAI API server; ready when it logs that startup is complete."""

    def __init__(self, model: str, sock: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = engine_env()
        env["VLLM_PLUGINS"] = "processfork"
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING")  # the server's default process layout
        kt = {"kv_connector": "ProcessForkConnector", "kv_role": "kv_both",
              "kv_connector_extra_config": {"socket": sock, "retry_interval_s": 0.0}}
        cmd = [python_or_skip(), "-m", "vllm.entrypoints.openai.api_server",
               "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
               "--block-size", str(BLOCK), "--dtype", "float32", "--max-model-len", "2048",
               "--enforce-eager", "--kv-cache-memory-bytes", str(64 << 20),
               "--kv-transfer-config", json.dumps(kt),
               "--middleware", "processfork.vllm.ProcessForkRoutes", "--api-key", KEY]
        super().__init__("vLLM server", cmd, env, log, b"Application startup complete",
                         STARTUP_S)
        wait_until_listening("127.0.0.1", self.port, 60)


def test_openai_server_with_connector_and_every_route(tmp_path_factory):
    python_or_skip()
    model = make_model(tmp_path_factory.mktemp("model") / "tiny-llama")
    with tempfile.TemporaryDirectory(prefix="pfvs-") as tmp:
        where = Path(tmp)
        daemon = start_daemon(where, capacity="64MiB", chunk="2MiB",
                              geometry=f"layers=2,kv_heads=2,head_dim=32,dtype=fp32,"
                                       f"page_tokens={BLOCK}")
        server = None
        try:
            server = _Server(model, daemon.socket, where / "server.log")
            auth = {"Authorization": f"Bearer {KEY}"}
            u = server.url + "/v1/processfork"

            def complete(prompt: list[int]) -> dict:
                r = requests.post(server.url + "/v1/completions", headers=auth, timeout=300,
                                  json={"model": model, "prompt": prompt, "max_tokens": 3,
                                        "temperature": 0, "logprobs": 1})
                assert r.status_code == 200, r.text
                return r.json()

            # A completion through the server stores the prompt's whole blocks as pages.
            p = _prompt(1, 3 * BLOCK + 5)
            first = complete(p)
            with processfork.connect(daemon.socket) as c:
                ns = processfork.namespace(processfork.model_fingerprint(model), None, None,
                                           None)  # the connector's (adapter-vllm.md)
                probe = c.branch(p, namespace=ns)
                assert probe.reused_tokens == 3 * BLOCK
                c.free(probe)

            # The routes need the API key like every other route of the server.
            r = requests.post(u + "/snapshot", json={"prompt_token_ids": p}, timeout=30)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"

            def call(method: str, path: str, want: int, **kw) -> dict:
                r = requests.request(method, u + path, headers=auth, timeout=30, **kw)
                assert r.status_code == want, (path, r.status_code, r.text)
                return r.json()

            snap = call("POST", "/snapshot", 201, json={"prompt_token_ids": p, "name": "ctx"})
            assert snap["n_tokens"] == 3 * BLOCK and snap["n_pages"] == 3
            assert snap["requested_tokens"] == len(p) and snap["name"] == "ctx"
            kids = call("POST", "/fork", 201, json={"cid": snap["cid"], "n": 2})
            assert kids["source"] == snap["cid"] and len(kids["branches"]) == 2
            co = call("POST", "/checkout", 201, json={"cid": snap["cid"]})
            assert co["prompt_token_ids"] == p[:3 * BLOCK]

            q = p[:BLOCK] + _prompt(2, 2 * BLOCK + 3)
            complete(q)
            other = call("POST", "/snapshot", 201, json={"prompt_token_ids": q})
            merged = call("POST", "/merge", 201, json={"from": other["cid"],
                                                       "into": snap["cid"]})
            assert merged["outcome"] == "three-way" and merged["common_tokens"] == BLOCK
            assert merged["recompute_tokens"] == q[BLOCK:3 * BLOCK]
            log = call("GET", "/log/" + merged["cid"], 200)
            assert {e["cid"] for e in log["entries"]} >= {merged["cid"], snap["cid"]}
            diff = call("GET", "/diff", 200, params={"a": snap["cid"], "b": other["cid"]})
            assert diff["common_tokens"] == BLOCK and len(diff["shared_pages"]) == 1

            # Bad requests: a JSON error, nothing changed.
            assert call("POST", "/fork", 400, json={"cid": snap["cid"], "n": 0}
                        )["error"]["code"] == "invalid_argument"
            assert call("POST", "/checkout", 404, json={"cid": "sha256:" + "0" * 64}
                        )["error"]["code"] == "not_found"
            assert call("POST", "/snapshot", 404, json={"prompt_token_ids": _prompt(7, 40)}
                        )["error"]["code"] == "not_found"

            # The same prompt again: vLLM's answer is unchanged by the routes' traffic.
            again = complete(p)
            assert again["choices"][0]["text"] == first["choices"][0]["text"]
        finally:
            if server is not None:
                if sys.exc_info()[0] is not None:  # shown by pytest with the failure
                    print(f"--- {server.log}:\n{server.tail()}")
                server.close()
            stop_daemon(daemon)
