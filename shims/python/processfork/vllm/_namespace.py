"""The prefix-index namespace of a vLLM request (docs/adapter-vllm.md "Namespaces").

A request's KV depends on more than its token ids: on the model's weights, on its LoRA
adapter, on its cache salt (vLLM's per-tenant isolation of the prefix cache) and, for
prompt-embeds requests, on the embeddings themselves (their token ids are placeholders).
Every request is looked up and saved in

    processfork.namespace(model_fp, lora_name, cache_salt, embeds_digest)

so requests that differ in any of these never share pages, and requests equal in all of
them do (also across engines on one daemon, given the same model fingerprint).
Multimodal requests are not covered (their placeholder tokens stand for inputs this
does not hash) and stay excluded by the scheduler.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

import processfork

if TYPE_CHECKING:
    from vllm.v1.request import Request

__all__ = ["RequestNamespaces", "embeds_digest"]

logger = logging.getLogger("processfork.vllm")


def embeds_digest(embeds: Any) -> str:
    """Hex SHA-256 of a prompt-embeds tensor: dtype, shape, then its bytes (contiguous)."""
    import torch

    t = embeds.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class RequestNamespaces:
    """Computes request namespaces from a model fingerprint fixed at start-up.

    Args:
        model: vLLM's ``model_config.model`` (a local directory or a hub name).
        revision: ``model_config.revision`` (used only for a hub name).
        fingerprint: ``kv_connector_extra_config["model_fingerprint"]``; overrides the
            computed one.
    """

    def __init__(self, model: str, revision: str | None, fingerprint: str | None) -> None:
        if fingerprint is not None:
            self.model_fp = fingerprint
        elif os.path.isdir(model):
            self.model_fp = processfork.model_fingerprint(model)
        else:
            # No local weights to hash: the name and revision stand for them, which is
            # right only while the hub does not move that revision.
            self.model_fp = f"{model}@{revision or 'main'}"
            logger.info("ProcessFork: %r is not a local model directory; its KV namespace "
                        "uses the name and revision %r (set kv_connector_extra_config."
                        "model_fingerprint to pin it)", model, self.model_fp)

    def plain(self) -> bytes | None:
        """The namespace of a request without LoRA, cache salt or prompt embeds."""
        return processfork.namespace(self.model_fp, None, None, None)

    def of(self, request: "Request") -> bytes | None:
        lora = request.lora_request.lora_name if request.lora_request is not None else None
        embeds = (embeds_digest(request.prompt_embeds)
                  if request.prompt_embeds is not None else None)
        return processfork.namespace(self.model_fp, lora, request.cache_salt, embeds)
