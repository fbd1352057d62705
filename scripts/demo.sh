#!/usr/bin/env bash
# `make demo`: set everything up, build, and run the main job — the multi-process agent
# fan-out (perf/fanout_demo, docs/demo.md) on the embedded default backend (cuda:0 when a
# usable GPU is present, else host). Extra arguments go to fanout_demo (--help lists them);
# exit status 0 only when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build_dir=${BUILD_DIR:-build}
exec "$build_dir/perf/fanout_demo" --device "${PF_DEVICE:-auto}" "$@"
