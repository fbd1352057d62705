"""Engine B of test_vllm_adapter.py: a second vLLM engine core in its own process.

    python _vllm_engine_b.py SOCKET MODEL_DIR SEED LAYOUT DEVICE PROMPTS_JSON

On the same daemon as the test's engine A but with its own Scheduler, connector
sessions, KV tensors (another KVCacheLayout, so other strides) and block ids (a
filler request takes the first blocks), it serves each prompt of PROMPTS_JSON in
turn and prints one JSON line: for each prompt, the tokens vLLM's scheduler took as
already computed (the connector's hit), the block ids they were loaded into, and
whether every loaded slot equals, bit for bit, the KV engine A computed.
"""
from __future__ import annotations

import json
import sys

import torch

from _vllm_env import BLOCK_SIZE, Engine, token_kv


def main() -> None:
    socket, model_dir, seed, layout, device, prompts = sys.argv[1:7]
    engine = Engine(model_dir, socket, seed=int(seed), layout=layout, device=device,
                    kv_role="kv_consumer", prefix_caching=False)
    engine.add("filler", list(range(400, 413)))
    engine.step()  # takes blocks, so this engine's block ids differ from engine A's
    results = []
    for i, prompt in enumerate(json.loads(prompts)):
        rid = f"b{i}"
        engine.add(rid, prompt)
        out = engine.step()
        new = next(r for r in out.scheduled_new_reqs if r.req_id == rid)
        hit = new.num_computed_tokens
        blocks = engine.block_ids(rid)[:hit // BLOCK_SIZE]
        exact = all(torch.equal(engine.slot_kv(rid, pos), token_kv(int(seed), prompt[pos], pos))
                    for pos in range(hit))
        results.append({"hit": hit, "blocks": blocks, "exact": exact,
                        "has_sync_kv_loads": out.has_sync_kv_loads})
        engine.finish(rid)
        engine.step()
    held = engine.connector._scheduler.held_branches()
    engine.close()
    print(json.dumps({"results": results, "load_errors": sorted(engine.load_errors),
                      "held_branches": held}), flush=True)


if __name__ == "__main__":
    main()
