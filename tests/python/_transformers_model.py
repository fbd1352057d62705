"""The tiny Llama shared by test_transformers_adapter.py and its child processes.

A real ``transformers.LlamaForCausalLM`` built from a config with random weights: the same
seed gives bit-identical weights in every process, so a child's run can be compared with
the parent's. page_tokens=4 makes every prompt cross page boundaries.
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor

SEED = 1234
PAGE_TOKENS = 4


def tiny_config(layers: int = 3) -> LlamaConfig:
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                       max_position_embeddings=256, bos_token_id=1, eos_token_id=None,
                       pad_token_id=None)  # a pad id would make generate mask that token out


def tiny_llama(device: str = "cpu", layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(tiny_config(layers)).to(device)
    model.eval()
    # greedy only: no sampling parameters (keeps generate from warning about them)
    model.generation_config.do_sample = False
    return model


def prompt_ids(n: int = 11, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(3, 128, (1, n), generator=g).to(device)


class ForceToken(LogitsProcessor):
    """Forces ``token`` as the next token when the sequence is ``at_length`` long: the
    branch point of the fork test. Raw logits (output_logits) are unaffected."""

    def __init__(self, at_length: int, token: int) -> None:
        self.at_length, self.token = at_length, token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == self.at_length:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.token] = 0.0
            return forced
        return scores


class ForwardLog:
    """Counts the tokens each forward of a decoder sees (a forward pre-hook)."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self.seen: list[int] = []
        self._h = model.model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.seen.append(int(ids.shape[1]))

    def remove(self) -> None:
        self._h.remove()
