#!/usr/bin/env bash
# The benchmark harness (`make bench`): builds (unless PF_BENCH_BUILD=0), then runs the whole
# suite and writes perf/results/<machine>-<date>.json, SVG plots under perf/plots/ and the
# harness section of perf/RESULTS.md. Arguments go to perf/run_benchmarks.py (--full for
# every size, --only NAME,..., --build-dir DIR). See perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PF_BENCH_BUILD:-1}" != 0 ]; then
  scripts/build.sh
fi
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" perf/run_benchmarks.py --build-dir "${BUILD_DIR:-build}" "$@"
