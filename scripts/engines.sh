#!/usr/bin/env bash
# Installs the LLM engines the adapters are tested against (docs/adapters.md) into .venv:
#   torch (CPU use; PyPI's wheel), transformers (full), and vLLM and SGLang *without* their
#   heavy dependencies (no CUDA kernels, no servers): only the light packages their
#   adapter-facing modules import. Pinned to one mutually compatible set.
# Idempotent. PF_ENGINES=0 skips it (the adapter tests then skip, naming the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PF_ENGINES:-1}" = "0" ]; then
  echo "engines: skipped (PF_ENGINES=0)"
  exit 0
fi
py=.venv/bin/python
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# One set that both engines' metadata accepts for transformers (sglang pins it exactly).
TORCH_VERSION=${PF_TORCH_VERSION:-2.14.0}
TRANSFORMERS_VERSION=5.19.0
VLLM_VERSION=0.33.0
SGLANG_VERSION=0.5.23
# What `import vllm.distributed.kv_transfer.kv_connector.v1.base`, `vllm.config`,
# `sglang.srt.mem_cache.hicache_storage` and their plug-in modules need, and no more.
light=(orjson psutil pybase64 requests pillow starlette msgspec pyzmq ipython aiohttp
       cbor2 openai-harmony openai cachetools cloudpickle uvloop py-cpuinfo
       prometheus-client xgrammar fastapi partial-json-parser llguidance pyyaml
       httpx uvicorn einops)

have() { "$py" - "$@" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = dict(a.split("==") for a in sys.argv[1:])
sys.exit(0 if all(m.version(k) == v for k, v in want.items()) else 1)
PY
}
if ! have torch=="$TORCH_VERSION" transformers=="$TRANSFORMERS_VERSION" \
          vllm=="$VLLM_VERSION" sglang=="$SGLANG_VERSION"; then
  echo "engines: installing torch $TORCH_VERSION, transformers $TRANSFORMERS_VERSION," \
       "vllm $VLLM_VERSION and sglang $SGLANG_VERSION (no heavy deps) into .venv"
  "${pip[@]}" "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" "${light[@]}"
  "${pip[@]}" --no-deps "vllm==$VLLM_VERSION" "sglang==$SGLANG_VERSION"
fi
# SGLang's HTTP server on --device cpu (tests/python/test_sglang_cpu_server.py,
# docs/adapter-sglang.md "Running SGLang on a CPU-only machine"): the modules
# `python -m sglang.launch_server` imports on top of the above. torchvision without its
# deps (they would replace torch); the versions the CPU server was checked with.
server=(dill==0.4.1 sentencepiece==0.2.3 compressed-tensors==0.20.1 gguf==0.19.0
        setproctitle==1.3.8 jsonschema==4.26.0 soundfile==0.14.0 python-multipart==0.0.34)
if ! have torchvision==0.29.0 "${server[@]}"; then
  echo "engines: installing SGLang's server modules (torchvision 0.29.0 without deps," \
       "${server[*]}) into .venv"
  "${pip[@]}" --no-deps torchvision==0.29.0
  "${pip[@]}" "${server[@]}"
fi
echo "engines: ok"
