"""A tiny random-weight Llama, made locally (nothing from a hub), for real-engine tests.

``make(dir, seed)`` writes ``config.json`` and ``model.safetensors`` (fp32) that vLLM,
transformers and SGLang load like any Llama checkpoint. Deterministic: the same seed
gives the same bytes. KV geometry: :data:`GEOMETRY` (``page_tokens`` is the block size
the engine runs with: vLLM-CPU needs a multiple of 32).

Run as a script (``python _tiny_llama.py DIR [SEED]``) from any virtual environment
with torch and transformers.
"""
from __future__ import annotations

import sys
from pathlib import Path

LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 32


def geometry(page_tokens: int) -> str:
    return (f"layers={LAYERS},kv_heads={KV_HEADS},head_dim={HEAD_DIM},dtype=fp32,"
            f"page_tokens={page_tokens}")


# A bigger model for benchmarks (perf/bench_vllm_ttft.py): ~25M parameters, so a prefill of
# ~1.5k tokens takes about a second on one core, like a small real model on a GPU.
BENCH_SIZES = dict(layers=4, hidden=768, heads=12, kv_heads=4, head_dim=64,
                   intermediate=2048)


def make(where: str | Path, seed: int = 1234, *, layers: int = LAYERS, hidden: int = 128,
         heads: int = 4, kv_heads: int = KV_HEADS, head_dim: int = HEAD_DIM,
         intermediate: int = 256) -> str:
    """Writes the model into ``where`` (if not already there); returns its path. The
    defaults are the tiny test model of :func:`geometry`."""
    import torch
    import transformers

    d = Path(where)
    if (d / "model.safetensors").exists():
        return str(d)
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=512, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096, rope_theta=10000.0, torch_dtype="float32",
        architectures=["LlamaForCausalLM"], tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():  # weights large enough that the logits depend on the KV
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.15)
    model.save_pretrained(d, safe_serialization=True)
    _tokenizer(cfg.vocab_size).save_pretrained(d)
    return str(d)


def _tokenizer(vocab_size: int):
    """A word-level tokenizer whose words are ``t0 .. t<vocab-1>`` (so servers that want a
    tokenizer have one; tests send token ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1",
                                   eos_token="t2")


if __name__ == "__main__":
    print(make(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1234))
