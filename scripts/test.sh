#!/usr/bin/env bash
# `make test`: set everything up, build, and run every test (CTest over the GoogleTest
# suites). CUDA tests skip with their reason where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build_dir=${BUILD_DIR:-build}
scripts/check_no_libcuda.sh "$build_dir"
ctest --test-dir "$build_dir" --output-on-failure -j "${JOBS:-$(nproc)}"
# The Python package (docs/python.md): build the wheel into .venv, run its pytest suite.
CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} .venv/bin/python -m pip install --quiet \
  --no-build-isolation --disable-pip-version-check .
.venv/bin/python -m pytest tests/python -q
