#!/usr/bin/env bash
# Run HERE (a machine with Debian's packages and PyPI), before a GPU run: the GPU machines
# are offline, so this downloads the build dependencies they may lack into .gpu-deps/
# (ignored by git) as .deb files and wheels. perf/gpu_check.sh unpacks them there when the
# system lacks them. Carry the folder with the device tool: carry: [".gpu-deps"].
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
(cd .gpu-deps && apt-get download libgtest-dev googletest nlohmann-json3-dev libcpp-httplib-dev \
  libcpp-httplib0.11 libbrotli-dev libbrotli1 zlib1g-dev libssl-dev)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu-deps blake3 numpy
# The Python package's build and test tools (perf/gpu_python_check.sh builds the CUDA wheel).
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu-deps scikit-build-core nanobind pytest
ls -la .gpu-deps
