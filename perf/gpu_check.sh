#!/usr/bin/env bash
# The one command a GPU machine runs, from the repository root (docs/cuda.md):
#
#   perf/gpu_check.sh
#
# Prints the GPU (nvidia-smi) and the CUDA toolkit (nvcc), installs missing build
# dependencies (scripts/setup.sh), configures a CUDA build in build-gpu
# (-DPF_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo), builds it with every core, checks that
# no binary links libcuda, runs the whole CTest suite, prints a summary and writes it as
# JSON to perf/results/gpu-check-<device-slug>-<date>.json (also when the build fails,
# with "status": "build_failed"). When $OUT is set the JSON, the build log, the full CTest
# log and its JUnit XML are copied there too.
#
# Environment: BUILD_DIR (default build-gpu), JOBS (build jobs, default nproc),
# CTEST_JOBS (parallel tests, default nproc), CMAKE_ARGS (extra configure arguments).
# Exit status: 0 when the build succeeded and no test failed; non-zero otherwise (a
# skipped test is not a failure; its reason is in the log).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
ctest_jobs=${CTEST_JOBS:-$(nproc)}
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%d-%H%M%S)

section() { printf '\n=== %s ===\n' "$*"; }

# JSON string literal for $1 (quotes, backslashes and control characters escaped).
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/}
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

# JSON array of strings from the lines of $1.
json_lines() {
  local first=1 line
  printf '['
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    ((first)) || printf ', '
    first=0
    json_str "$line"
  done <<<"$1"
  printf ']'
}

# --- The machine ---------------------------------------------------------------------
section "GPU"
device_name="no-gpu"
driver_version="none"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi || true
  device_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
  driver_version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null |
    head -n1 || true)
  device_name=${device_name:-unknown-gpu}
  driver_version=${driver_version:-unknown}
else
  echo "nvidia-smi not found: no NVIDIA driver on this machine (CUDA tests will skip)"
fi
gpu_count=0
if command -v nvidia-smi >/dev/null; then
  gpu_count=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -c . || true)
fi

section "CUDA toolkit"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
nvcc_version="none"
if command -v nvcc >/dev/null; then
  nvcc --version
  nvcc_version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1)
else
  echo "nvcc not found: a CUDA build (-DPF_CUDA=ON) is impossible here" >&2
fi
slug=$(printf '%s' "$device_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' \
  -e 's/^-//' -e 's/-$//')
slug=${slug:-unknown}

# --- Dependencies, configure, build ----------------------------------------------------
if [ -x scripts/setup.sh ]; then
  section "Dependencies (scripts/setup.sh)"
  # A GPU machine may be offline: carry on with what is installed and let the build say.
  scripts/setup.sh || echo "gpu_check: scripts/setup.sh failed; continuing with what is installed" >&2
fi

# Offline GPU machines: dependencies carried in .gpu-deps (scripts/gpu_deps.sh) are
# unpacked into a private prefix, and a Python with the reference packages is made.
if [ -d .gpu-deps ]; then
  section "Carried dependencies (.gpu-deps)"
  prefix=/tmp/pf-gpu-deps
  mkdir -p "$prefix"
  for deb in .gpu-deps/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" "$prefix"; done
  CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_PREFIX_PATH=$prefix/usr -DGTest_DIR=$prefix/usr/lib/x86_64-linux-gnu/cmake/GTest"
  if ls .gpu-deps/*.whl >/dev/null 2>&1 && [ ! -x .venv/bin/python ]; then
    python3 -m venv --system-site-packages .venv &&
      .venv/bin/python -m pip install -q --no-index --no-deps .gpu-deps/*.whl || true
  fi
fi

log_dir="$build_dir/gpu-check"
mkdir -p "$log_dir"
build_log="$log_dir/build-$stamp.log"
ctest_log="$log_dir/ctest-$stamp.log"
junit="$log_dir/ctest-$stamp.xml"
rc_file="$log_dir/rc-$stamp"

section "Configure and build ($build_dir, -j $jobs)"
python_arg=()
[ -x .venv/bin/python ] && python_arg=(-DPF_PYTHON="$PWD/.venv/bin/python")
build_started=$(date +%s)
{
  set +e
  # shellcheck disable=SC2086  # CMAKE_ARGS is a word list by design
  cmake -S . -B "$build_dir" -G Ninja -DPF_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "${python_arg[@]}" ${CMAKE_ARGS:-} &&
    cmake --build "$build_dir" -j "$jobs"
  echo $? >"$rc_file"
} 2>&1 | tee "$build_log"
build_rc=$(cat "$rc_file")
build_seconds=$(($(date +%s) - build_started))

no_libcuda=null  # JSON: true, false, or null when not checked (build failed)
total=0 passed=0 failed=0 skipped=0 ctest_rc=-1 tests_seconds=0
failed_names="" skipped_names=""
if [ "$build_rc" -ne 0 ]; then
  echo "gpu_check: configure/build failed (exit $build_rc); see $build_log" >&2
else
  no_libcuda=true
  if [ -x scripts/check_no_libcuda.sh ]; then
    section "No binary links libcuda"
    scripts/check_no_libcuda.sh "$build_dir" || no_libcuda=false
  fi

  # --- Tests ---------------------------------------------------------------------------
  section "CTest (-j $ctest_jobs)"
  tests_started=$(date +%s)
  {
    set +e
    ctest --test-dir "$build_dir" --output-on-failure -j "$ctest_jobs" \
      --output-junit "$PWD/$junit" 2>&1
    echo $? >"$rc_file"
  } | tee "$ctest_log"
  ctest_rc=$(cat "$rc_file")
  tests_seconds=$(($(date +%s) - tests_started))

  # "93% tests passed, 2 tests failed out of 30"; skipped tests count as passed there.
  total=$(sed -n 's/.*tests passed, [0-9]\+ tests\? failed out of \([0-9]\+\).*/\1/p' \
    "$ctest_log" | tail -n1)
  failed=$(sed -n 's/.*tests passed, \([0-9]\+\) tests\? failed out of.*/\1/p' "$ctest_log" |
    tail -n1)
  total=${total:-0}
  failed=${failed:-0}
  # The lists after "The following tests did not run:" and "The following tests FAILED:"
  # look like "  12 - Suite.Case (Skipped)" and "  7 - Suite.Case (Failed)".
  skipped_names=$(sed -n 's/^[[:space:]]*[0-9]\+ - \(.*\) (Skipped)$/\1/p' "$ctest_log" | sort -u)
  failed_names=$(sed -n 's/^[[:space:]]*[0-9]\+ - \(.*\) (\(Failed\|Timeout\|SEGFAULT\|Subprocess aborted\|Exception\|Not Run\|Child aborted\)[^)]*)$/\1/p' \
    "$ctest_log" | sort -u)
  skipped=$(printf '%s\n' "$skipped_names" | grep -c . || true)
  passed=$((total - failed - skipped))
  ((passed >= 0)) || passed=0
fi

status=passed
if [ "$build_rc" -ne 0 ]; then
  status=build_failed
elif [ "$ctest_rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$total" -eq 0 ] ||
  [ "$no_libcuda" != true ]; then
  status=failed
fi

# --- Summary -----------------------------------------------------------------------------
commit=$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
mkdir -p perf/results
json="perf/results/gpu-check-$slug-$stamp.json"
{
  printf '{\n'
  printf '  "schema": "processfork.gpu_check/1",\n'
  printf '  "started": %s,\n' "$(json_str "$started")"
  printf '  "finished": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
  printf '  "commit": %s,\n' "$(json_str "$commit")"
  printf '  "host": %s,\n' "$(json_str "$(hostname)")"
  printf '  "device": %s,\n' "$(json_str "$device_name")"
  printf '  "gpu_count": %s,\n' "$gpu_count"
  printf '  "driver_version": %s,\n' "$(json_str "$driver_version")"
  printf '  "nvcc_version": %s,\n' "$(json_str "$nvcc_version")"
  printf '  "build_dir": %s,\n' "$(json_str "$build_dir")"
  printf '  "build_type": "RelWithDebInfo",\n'
  printf '  "build_exit_code": %s,\n' "$build_rc"
  printf '  "build_seconds": %s,\n' "$build_seconds"
  printf '  "no_libcuda": %s,\n' "$no_libcuda"
  printf '  "tests": {"total": %s, "passed": %s, "failed": %s, "skipped": %s},\n' \
    "$total" "$passed" "$failed" "$skipped"
  printf '  "tests_seconds": %s,\n' "$tests_seconds"
  printf '  "ctest_exit_code": %s,\n' "$ctest_rc"
  printf '  "failed_tests": %s,\n' "$(json_lines "$failed_names")"
  printf '  "skipped_tests": %s,\n' "$(json_lines "$skipped_names")"
  printf '  "status": "%s"\n' "$status"
  printf '}\n'
} >"$json"

section "Summary"
echo "device:   $device_name (driver $driver_version, nvcc $nvcc_version, $gpu_count GPU(s))"
echo "tests:    $total total, $passed passed, $failed failed, $skipped skipped"
print_list() {  # print_list <title> <newline-separated names>
  [ -n "$2" ] || return 0
  echo "$1:"
  local name
  while IFS= read -r name; do echo "  $name"; done <<<"$2"
}
print_list failed "$failed_names"
print_list skipped "$skipped_names"
case $no_libcuda in
  true) echo "libcuda:  no binary links it" ;;
  false) echo "libcuda:  LINKED by some binary (DESIGN §3 violated)" ;;
  *) echo "libcuda:  not checked" ;;
esac
echo "summary:  $json"
echo "logs:     $build_log$([ ! -f "$ctest_log" ] || echo " $ctest_log")"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$json" "$OUT/"
  cp "$build_log" "$OUT/"
  [ ! -f "$ctest_log" ] || cp "$ctest_log" "$OUT/"
  [ ! -f "$junit" ] || cp "$junit" "$OUT/"
  echo "copied:   $OUT/"
fi

echo "status:   $status"
[ "$status" = passed ]
