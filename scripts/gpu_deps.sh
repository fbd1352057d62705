#!/usr/bin/env bash
# Run HERE (a machine with Debian's archive and PyPI), before a GPU run: the GPU machines are
# offline (no apt-get, no pip), so this downloads what perf/gpu_check.sh may not find there
# into .gpu-deps/ (ignored by git): the build dependencies as .deb files (development and
# run-time packages, and the .pc files cpp-httplib's pkg-config entry requires), and the
# Python build/test tools as pure-Python wheels. Carry the folder with the device tool
# (carry: [".gpu-deps"]) or put it in shared/gpu-deps. perf/gpu_common.sh unpacks the .debs
# with `dpkg -x` and the *-py3-none-any wheels with `python3 -m zipfile` (docs/cuda.md
# "Carried dependencies"); nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
(cd .gpu-deps && apt-get download libgtest-dev googletest nlohmann-json3-dev \
  libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1 zlib1g-dev zlib1g \
  libssl-dev libssl3 liblmdb-dev liblmdb0)
# The Python extension's build (nanobind) and the tests' runner (pytest and its own
# dependencies), as pure-Python wheels that any Python 3 on the GPU machine can use.
python3 -m pip download --quiet --only-binary=:all: -d .gpu-deps nanobind pytest
ls -la .gpu-deps
