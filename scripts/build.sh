#!/usr/bin/env bash
# Configures and builds ProcessFork into $BUILD_DIR (default: build).
# CUDA parts are built when nvcc is found (PF_CUDA=AUTO); override with PF_CUDA=ON|OFF.
# Extra CMake arguments can be passed in CMAKE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
# nvcc is often installed outside PATH.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S . -B "$build_dir" -G Ninja -DPF_CUDA="${PF_CUDA:-AUTO}" \
  -DPF_PYTHON="$PWD/.venv/bin/python" ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
