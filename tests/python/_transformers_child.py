"""A child process of test_transformers_adapter.py's fork test: continues a generation
from a ProcessFork branch or snapshot that another process made, in its own session.

    python _transformers_child.py SOCKET {branch|snapshot} SOURCE IDS FORCE STEPS OUT DEVICE

SOURCE: a (detached) branch id or a CID; IDS: the full token ids so far, comma-separated
(the restored cache holds all but the last); FORCE: the token forced as the next one (the
branch point); STEPS: tokens generated after it; OUT: a torch.save file written with the
raw logits, the sequence, the tokens each forward saw, and the restored cache's tokens.
"""
from __future__ import annotations

import sys

import torch

import processfork
from processfork.transformers import ProcessForkCache

from _transformers_model import ForceToken, ForwardLog, tiny_llama


def main() -> None:
    socket, mode, source, ids, force, steps, out, device = sys.argv[1:9]
    full = torch.tensor([[int(t) for t in ids.split(",")]], device=device)
    model = tiny_llama(device)
    with processfork.connect(socket) as client:
        if mode == "branch":
            cache = ProcessForkCache.from_branch(client, int(source), model)
        else:
            cache = ProcessForkCache.from_snapshot(client, source, model)
        with cache:
            restored = cache.tokens
            forwards = ForwardLog(model)
            res = model.generate(input_ids=full, past_key_values=cache,
                                 max_new_tokens=1 + int(steps),
                                 logits_processor=[ForceToken(full.shape[1], int(force))],
                                 output_logits=True, return_dict_in_generate=True)
            forwards.remove()
            torch.save({"logits": torch.stack(res.logits).cpu(),
                        "sequence": res.sequences[0].tolist(),
                        "seen": forwards.seen,
                        "restored": restored,
                        "branch_tokens": client.view(cache.branch).n_tokens,
                        "in_sync": cache.in_sync}, out)


if __name__ == "__main__":
    main()
