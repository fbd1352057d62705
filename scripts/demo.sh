#!/usr/bin/env bash
# `make demo`: set everything up, build, and run the main job on the embedded default
# backend (cuda:0 when a usable GPU is present, else host).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build_dir=${BUILD_DIR:-build}
"$build_dir/perf/pool_handoff" --device "${PF_DEVICE:-auto}" "$@"
