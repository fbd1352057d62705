#!/usr/bin/env bash
# The GPU check, one call (issue 14; docs/cuda.md "Checking on a GPU machine"). From the
# repository root, on an offline GPU machine, in at most ~8 minutes:
#
#   perf/gpu_check.sh                      # OUT=/some/dir perf/gpu_check.sh copies logs there
#   PF_GPU_CHECK_REHEARSAL=1 perf/gpu_check.sh   # the same on a machine without a GPU
#
# Steps, in order, each with its own timeout inside one time budget; a failed step never
# stops the next ones:
#   machine        nvidia-smi (name, driver, UUID), nvcc, cores, commit.
#   dependencies   finds every build dependency without a network (perf/gpu_common.sh:
#                  carried .debs in shared/gpu-deps or .gpu-deps, $PF_GPU_DEPS_PREFIX, the
#                  system) and the Python interpreter with torch; one line per missing one.
#   configure      -DPF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 with the paths found above.
#   build          only the targets the check runs (PF_GPU_CHECK_TARGETS below).
#   no_libcuda     scripts/check_no_libcuda.sh: no binary links libcuda.
#   gpu_probe      perf/gpu_probe: allocation granularity, same-process import, accepted
#                  access modes, cuMemSetAccess / cuMemUnmap latency (JSON in the result).
#   stream0_race   perf/gpu_stream0_repro: K/V written on stream 0 and stored with stream 0
#                  ("fixed" or "race reproduced").
#   cuda_tests     every GoogleTest case whose name contains "cuda" (any case) in the test
#                  binaries below, each run alone under `timeout` (60 s), several at once;
#                  pass / fail / skip per test. On a GPU a skip is a failure, except the
#                  tests that by design need a machine without a driver (expected_skips).
#   fanout_demo    perf/fanout_demo --device cuda:0 (docs/demo.md), its JSON.
#   bench_kernels  perf/bench_kernels: copy and digest as a fraction of cudaMemcpy
#                  device-to-device bandwidth, measured in the same run.
#   python         perf/gpu_python_check.sh on the build above: torch must see the GPU, the
#                  adapters' GPU tests run, and a skipped GPU test is a failure.
#
# Results: perf/results/gpu-<device-slug>-<date>.json (device name, driver, UUID; each step's
# status, seconds, timeout, log and details; "status": "passed" | "failed"), the logs in
# <build>/gpu-check/<stamp>/, and with $OUT set both copied to $OUT/gpu-check-<stamp>/.
# Exit status: 0 when no step failed, 1 otherwise.
#
# Rehearsal (PF_GPU_CHECK_REHEARSAL=1): the machine counts as having no GPU. Discovery,
# configure and build are real (the same targets; slow on few cores, so the budget is
# PF_GPU_CHECK_REHEARSAL_BUDGET_S, default 3600 s); a step that needs the GPU proves its
# binary exists and starts (its no-GPU path or --help exits as documented) and is recorded
# as "skipped: rehearsal (no GPU)". The JSON goes to <build>/gpu-check/rehearsal-<date>.json,
# never to perf/results/gpu-*. PF_GPU_CHECK_SKIP_BUILD=1 skips configure and build and uses
# the build directory as it is (the CTest rehearsal, tests/perf/gpu_check_rehearsal_test.py).
#
# Environment: BUILD_DIR (default build-gpu), JOBS (build jobs, default nproc), CMAKE_ARGS
# (extra configure words), PF_GPU_CHECK_BUDGET_S (default 480), PF_GPU_TEST_JOBS (tests at
# once, default 4), PF_GPU_TEST_TIMEOUT_S (per test, default 60), PF_PYTHON (the interpreter
# with torch), PF_GPU_CHECK_JSON (result path), PF_GPU_DEPS_PREFIX (a carried prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=perf/gpu_common.sh
source perf/gpu_common.sh

rehearsal=${PF_GPU_CHECK_REHEARSAL:-0}
skip_build=${PF_GPU_CHECK_SKIP_BUILD:-0}
build_dir=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-$(nproc)}
test_jobs=${PF_GPU_TEST_JOBS:-4}
test_timeout=${PF_GPU_TEST_TIMEOUT_S:-60}
if [ "$rehearsal" = 1 ]; then
  budget=${PF_GPU_CHECK_REHEARSAL_BUDGET_S:-3600}
else
  budget=${PF_GPU_CHECK_BUDGET_S:-480}
fi
# The binaries the check runs; the build builds exactly these (and what they depend on).
test_binaries=(tests/vmm/vmm_test tests/kernels/kernels_test tests/runtime/runtime_ops_test
  tests/runtime/runtime_keyed_pages_test tests/runtime/runtime_namespace_test
  tests/runtime/runtime_page_tokens_test tests/runtime/runtime_digest_behind_test
  tests/runtime/runtime_lazy_page_in_test tests/perf/engine_test)
targets=(vmm_test vmm_peer kernels_test runtime_ops_test runtime_keyed_pages_test
  runtime_namespace_test runtime_page_tokens_test runtime_digest_behind_test
  runtime_lazy_page_in_test engine_test
  engine_probe processfork libprocessfork fanout_demo bench_kernels gpu_probe gpu_stream0_repro)
# Skipped by design wherever a driver is present (they test the machine without one).
expected_skips=${PF_GPU_EXPECTED_SKIPS:-CudaDriver.WithoutDriverMakeIsUnavailableAndNamesLibcuda}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%d-%H%M%S)
t_start=$(date +%s)
deadline=$((t_start + budget))
work=$build_dir/gpu-check/$stamp
mkdir -p "$work"
work=$(cd "$work" && pwd)

pf_device_info
pf_find_nvcc
mode=gpu
[ "$rehearsal" = 1 ] && mode=rehearsal
have_gpu=0
[ "$mode" = gpu ] && [ "${PF_GPU_COUNT:-0}" -gt 0 ] && have_gpu=1

step_records=()
failed_steps=()
STEP_STATUS="" STEP_TIMEOUT=0 STEP_DETAIL=""

# run_step NAME TIMEOUT_S FUNCTION: runs FUNCTION in this shell (errexit off) with its
# output in $work/NAME.log and STEP_TIMEOUT = min(TIMEOUT_S, time left in the budget).
# FUNCTION sets STEP_STATUS ("passed", "failed: why", "skipped: why"; empty means by exit
# status) and may point STEP_DETAIL at a JSON file that goes into the result as "detail".
run_step() {
  local name=$1 limit=$2 fn=$3 left t0 rc seconds log=$work/$1.log
  left=$((deadline - $(date +%s)))
  STEP_STATUS="" STEP_DETAIL=""
  printf '=== %-14s ' "$name"
  if ((left < 5)); then
    STEP_STATUS="failed: not run, the ${budget}s budget is spent"
    seconds=0 limit=0
    : >"$log"
  else
    ((limit > left)) && limit=$left
    STEP_TIMEOUT=$limit
    t0=$(date +%s)
    set +e
    "$fn" >"$log" 2>&1
    rc=$?
    set -e
    seconds=$(($(date +%s) - t0))
    if [ -z "$STEP_STATUS" ]; then
      if [ "$rc" -eq 0 ]; then STEP_STATUS=passed; else STEP_STATUS="failed: exit status $rc"; fi
    fi
  fi
  printf '%-60s %4ss\n' "$STEP_STATUS" "$seconds"
  case $STEP_STATUS in
    failed*)
      failed_steps+=("$name")
      tail -n 15 "$log" | sed 's/^/    | /'
      ;;
  esac
  # A detail that is not one JSON value (a program killed while writing it) is replaced by a
  # note naming the file, so the result stays valid JSON.
  local detail=null
  if [ -n "$STEP_DETAIL" ] && [ -s "$STEP_DETAIL" ]; then
    if pf_valid_json "$STEP_DETAIL"; then
      detail=$(cat "$STEP_DETAIL")
    else
      detail="{\"invalid_json\": $(pf_json_str "$STEP_DETAIL")}"
    fi
  fi
  step_records+=("$(printf '{"name": %s, "status": %s, "seconds": %s, "timeout_s": %s, "log": %s, "detail": %s}' \
    "$(pf_json_str "$name")" "$(pf_json_str "$STEP_STATUS")" "$seconds" "$limit" \
    "$(pf_json_str "$log")" "$detail")")
}

# need_bin PATH: 0 when the build has PATH (executable); else sets STEP_STATUS and returns 1.
# A rehearsal on a build without CUDA has no CUDA-only binaries: that is a skip there.
need_bin() {
  [ -x "$build_dir/$1" ] && return 0
  if [ "$mode" = rehearsal ] && [ "$skip_build" = 1 ] && ! cuda_build; then
    STEP_STATUS="skipped: rehearsal on a build without CUDA ($1 not built)"
  else
    STEP_STATUS="failed: $build_dir/$1 missing (build failed or target not built)"
  fi
  echo "$STEP_STATUS"
  return 1
}
# The build has CUDA when CMake found a CUDA compiler for it (PF_CUDA=ON or AUTO with nvcc).
cuda_build() { grep -q '^CMAKE_CUDA_COMPILER:[A-Z]*=/' "$build_dir/CMakeCache.txt" 2>/dev/null; }
rehearsal_skip() { STEP_STATUS="skipped: rehearsal (no GPU)${1:+; $1}"; }
no_gpu_fail() { STEP_STATUS="failed: no GPU visible (nvidia-smi); use PF_GPU_CHECK_REHEARSAL=1 on a machine without one"; }

# --- Steps ---------------------------------------------------------------------------------
step_machine() {
  echo "mode: $mode; device: $PF_DEV_NAME (driver $PF_DEV_DRIVER, uuid $PF_DEV_UUID, $PF_GPU_COUNT GPU(s))"
  command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi || echo "nvidia-smi: not available"
  command -v nvcc >/dev/null && nvcc --version || echo "nvcc: not found"
  echo "cores: $(nproc); commit: $(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)"
  if [ "$mode" = gpu ] && [ "$have_gpu" -ne 1 ]; then no_gpu_fail; fi
}

python_reason=""
step_dependencies() {
  local missing=""
  pf_discover_deps
  printf '%s' "$PF_DEP_REPORT"
  missing=$PF_DEP_MISSING
  command -v cmake >/dev/null || missing+="CMake (cmake)"$'\n'
  if command -v nvcc >/dev/null; then
    echo "CUDA toolkit: $(command -v nvcc)"
  else
    missing+="CUDA toolkit (nvcc; /usr/local/cuda/bin)"$'\n'
  fi
  echo "carried library folders: ${PF_DEP_LIBDIRS:-none}"
  echo "CMake arguments: ${PF_DEP_ARGS[*]}"
  if pf_find_python; then
    echo "Python: $PF_PY (torch $PF_PY_TORCH, torch.cuda.is_available() = $PF_PY_CUDA)"
    if python_reason=$(pf_python_build_ready "$PF_PY"); then
      echo "Python extension: buildable"
    else
      echo "Python extension: not buildable: $python_reason (the python step will fail)"
    fi
  else
    python_reason="no interpreter imports torch: $PF_PY_ERROR"
    echo "Python: $python_reason (the python step will fail)"
  fi
  if [ -n "$missing" ]; then
    printf 'missing dependency: %s\n' "${missing%$'\n'}" | sed '2,$s/^/missing dependency: /'
    STEP_STATUS="failed: missing dependency: $(printf '%s' "$missing" | head -n1)"
    deps_ok=0
  else
    deps_ok=1
  fi
}

step_configure() {
  if [ "$skip_build" = 1 ]; then
    STEP_STATUS="skipped: PF_GPU_CHECK_SKIP_BUILD=1 (using $build_dir as it is)"
    return 0
  fi
  if [ "$deps_ok" != 1 ]; then
    STEP_STATUS="failed: not run (missing dependency)"
    return 1
  fi
  local py=""
  [ -z "$python_reason" ] && py=$PF_PY
  timeout "$STEP_TIMEOUT" bash -c "$(declare -f pf_configure); $(declare -p PF_DEP_ARGS); pf_configure \"\$1\" \"\$2\"" \
    _ "$build_dir" "$py"
}

step_build() {
  if [ "$skip_build" = 1 ]; then
    STEP_STATUS="skipped: PF_GPU_CHECK_SKIP_BUILD=1 (using $build_dir as it is)"
    return 0
  fi
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    STEP_STATUS="failed: not run (not configured)"
    return 1
  fi
  local t=("${targets[@]}")
  grep -q '^PF_PYTHON_PACKAGE:BOOL=ON' "$build_dir/CMakeCache.txt" && t+=(_core)
  echo "targets: ${t[*]}"
  timeout "$STEP_TIMEOUT" cmake --build "$build_dir" -j "$jobs" --target "${t[@]}"
  local rc=$?
  [ "$rc" -eq 124 ] && STEP_STATUS="failed: build timed out after ${STEP_TIMEOUT}s"
  return "$rc"
}

step_no_libcuda() {
  [ -d "$build_dir" ] || { STEP_STATUS="failed: no build directory"; return 1; }
  timeout "$STEP_TIMEOUT" scripts/check_no_libcuda.sh "$build_dir"
}

# run_json_tool NAME BIN ARGS...: runs a program that prints JSON and exits 0 (ok), 3 (no
# GPU) or else; its JSON is the step's detail.
run_json_tool() {
  local name=$1 bin=$2 rc
  shift 2
  need_bin "$bin" || return 1
  STEP_DETAIL=$work/$name.json
  timeout "$STEP_TIMEOUT" "$build_dir/$bin" "$@" --out "$STEP_DETAIL"
  rc=$?
  if [ "$mode" = rehearsal ]; then
    if [ "$rc" -eq 3 ] && grep -q '"status": "no_gpu"' "$STEP_DETAIL"; then
      rehearsal_skip "$bin started and took its no-GPU path (exit 3)"
    else
      STEP_STATUS="failed: rehearsal expected $bin's no-GPU path (exit 3), got exit $rc"
    fi
    return 0
  fi
  case $rc in
    0) STEP_STATUS=passed ;;
    3) STEP_STATUS="failed: $bin found no usable GPU: $(sed -n 's/^ *"error": "\(.*\)",\{0,1\}$/\1/p' "$STEP_DETAIL" | head -n1)" ;;
    124) STEP_STATUS="failed: $bin timed out after ${STEP_TIMEOUT}s" ;;
    *) STEP_STATUS="failed: $bin exit status $rc" ;;
  esac
}

step_gpu_probe() { run_json_tool gpu_probe perf/gpu_probe --reps 50; }

step_stream0_race() {
  run_json_tool stream0_race perf/gpu_stream0_repro --spin-ms 200
  if [ "$mode" = gpu ] && [ -s "$STEP_DETAIL" ]; then
    if grep -q '"result": "race reproduced"' "$STEP_DETAIL"; then
      STEP_STATUS="failed: race reproduced (stream 0 not ordered after the engine's stream-0 work)"
    elif grep -q '"status": "failed"' "$STEP_DETAIL"; then
      STEP_STATUS="failed: stream 0 fixed, but the own-stream control showed no race (the check cannot see one)"
    elif [ "$STEP_STATUS" = passed ]; then
      STEP_STATUS="passed: fixed"
    fi
  fi
  return 0
}

# One test case alone: prints "status<TAB>binary<TAB>test<TAB>seconds<TAB>reason".
run_one_test() {
  local bin=$1 test=$2 timeout_s=$3 logdir=$4 log rc t0 status reason=""
  log=$logdir/$(basename "$bin")--$(printf '%s' "$test" | tr '/' '_').log
  t0=$(date +%s%N)
  timeout -k 5 "$timeout_s" "$bin" --gtest_filter="$test" --gtest_color=no >"$log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ] && grep -q '^\[  SKIPPED \]' "$log"; then
    status=skipped
    reason=$(grep -A1 ': Skipped$' "$log" | tail -n1 | tr '\t' ' ')
  elif [ "$rc" -eq 0 ] && grep -q '^\[  PASSED  \] 1 test' "$log"; then
    status=passed
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status=failed reason="timed out after ${timeout_s}s"
  else
    status=failed
    reason=$(grep -m1 -E 'Failure|error|Error' "$log" | tr '\t' ' ')
    reason="exit $rc${reason:+: $reason}"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$status" "$(basename "$bin")" "$test" \
    "$((($(date +%s%N) - t0) / 1000000))" "$reason"
}
export -f run_one_test

step_cuda_tests() {
  local list=$work/cuda_tests.list results=$work/cuda_tests.tsv logdir=$work/cuda_tests bin missing=""
  mkdir -p "$logdir"
  : >"$list"
  for bin in "${test_binaries[@]}"; do
    if [ ! -x "$build_dir/$bin" ]; then
      missing+=" $bin"
      continue
    fi
    timeout 60 "$build_dir/$bin" --gtest_list_tests |
      awk -v b="$build_dir/$bin" '/^[^ ]/ {s = $1} /^  / {print b "\t" s $1}' |
      grep -i $'\t.*cuda' >>"$list" || true
  done
  local n
  n=$(grep -c . "$list" || true)
  echo "$n CUDA test cases in ${#test_binaries[@]} binaries, $test_jobs at a time, ${test_timeout}s each"
  : >"$results"
  if [ "$n" -gt 0 ]; then
    # The whole step stays inside its timeout: xargs stops starting tests when it ends.
    # shellcheck disable=SC2016  # $1..$3 expand in the inner bash
    timeout "$STEP_TIMEOUT" xargs -a "$list" -d '\n' -P "$test_jobs" -I{} \
      bash -c 'IFS=$'"'"'\t'"'"' read -r b t <<<"$1"; run_one_test "$b" "$t" "$2" "$3"' _ {} \
      "$test_timeout" "$logdir" >>"$results"
  fi
  local passed failed skipped unexpected_skips=0 ran line status b t s reason rows="" first=1
  passed=$(grep -c '^passed' "$results" || true)
  failed=$(grep -c '^failed' "$results" || true)
  skipped=$(grep -c '^skipped' "$results" || true)
  ran=$(grep -c . "$results" || true)
  while IFS=$'\t' read -r status b t s reason; do
    [ -n "$status" ] || continue
    local expected=false
    if [ "$status" = skipped ] && [[ ",$expected_skips," == *",$t,"* ]]; then expected=true
    elif [ "$status" = skipped ]; then unexpected_skips=$((unexpected_skips + 1)); fi
    ((first)) || rows+=", "
    first=0
    rows+=$(printf '{"binary": %s, "test": %s, "status": %s, "ms": %s, "reason": %s, "expected_skip": %s}' \
      "$(pf_json_str "$b")" "$(pf_json_str "$t")" "$(pf_json_str "$status")" "${s:-0}" \
      "$(pf_json_str "$reason")" "$expected")
  done < <(sort -t$'\t' -k2,3 "$results")
  STEP_DETAIL=$work/cuda_tests.json
  printf '{"cases": %s, "ran": %s, "passed": %s, "failed": %s, "skipped": %s, "unexpected_skips": %s, "per_test_timeout_s": %s, "missing_binaries": %s, "tests": [%s]}\n' \
    "$n" "$ran" "$passed" "$failed" "$skipped" "$unexpected_skips" "$test_timeout" \
    "$(pf_json_str "${missing# }")" "$rows" >"$STEP_DETAIL"
  grep -v '^passed' "$results" | sort -t$'\t' -k2,3 || true
  echo "passed $passed, failed $failed, skipped $skipped (unexpected on a GPU: $unexpected_skips), of $n"
  if [ -n "$missing" ]; then
    STEP_STATUS="failed: test binaries missing:$missing"
  elif [ "$n" -eq 0 ]; then
    STEP_STATUS="failed: no CUDA test case found"
  elif [ "$ran" -lt "$n" ]; then
    STEP_STATUS="failed: only $ran of $n tests ran within ${STEP_TIMEOUT}s"
  elif [ "$failed" -gt 0 ]; then
    STEP_STATUS="failed: $failed of $n failed"
  elif [ "$mode" = rehearsal ]; then
    rehearsal_skip "$n cases ran: $passed passed, $skipped skipped"
  elif [ "$unexpected_skips" -gt 0 ]; then
    STEP_STATUS="failed: $unexpected_skips of $n skipped on a GPU"
  else
    STEP_STATUS="passed"
  fi
}

step_fanout_demo() {
  need_bin perf/fanout_demo || return 1
  if [ "$mode" = rehearsal ]; then
    timeout 30 "$build_dir/perf/fanout_demo" --help && rehearsal_skip "fanout_demo --help exits 0" ||
      STEP_STATUS="failed: fanout_demo --help did not exit 0"
    return 0
  fi
  STEP_DETAIL=$work/fanout_demo.json
  timeout "$STEP_TIMEOUT" "$build_dir/perf/fanout_demo" --device cuda:0 --json "$STEP_DETAIL"
}

step_bench_kernels() {
  need_bin perf/bench_kernels || return 1
  STEP_DETAIL=$work/bench_kernels.json
  if [ "$mode" = rehearsal ]; then
    # Small, to prove the binary runs its host half and records the missing CUDA half.
    timeout "$STEP_TIMEOUT" "$build_dir/perf/bench_kernels" --pages 4 --page-bytes 1048576 \
      --reps 2 --out "$STEP_DETAIL" || { STEP_STATUS="failed: bench_kernels exit status $?"; return 0; }
    if grep -q '"cuda": null' "$STEP_DETAIL"; then
      rehearsal_skip "host half measured, cuda recorded as unavailable"
    else
      STEP_STATUS="failed: rehearsal expected no CUDA measurements"
    fi
    return 0
  fi
  timeout "$STEP_TIMEOUT" "$build_dir/perf/bench_kernels" --out "$STEP_DETAIL" || return $?
  if grep -q '"cuda": null' "$STEP_DETAIL"; then
    STEP_STATUS="failed: no CUDA measurements ($(grep -o '"cuda_unavailable": "[^"]*"' "$STEP_DETAIL"))"
  elif command -v python3 >/dev/null; then
    # The headline: copy and digest as fractions of cudaMemcpy D2D in the same run.
    STEP_STATUS=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["cuda"]
print("passed: copy %.2f, digest %.2f of cudaMemcpy D2D (%.0f GB/s)" % (
    c["copy_fraction_of_baseline"], c["digest_fraction_of_baseline"],
    c["baseline_copy"]["gbps_p50"]))' "$STEP_DETAIL" 2>/dev/null || echo passed)
  fi
}

step_python() {
  STEP_DETAIL=$work/python.json
  # OUT is cleared: this script copies the Python logs to $OUT with its own.
  OUT='' PF_GPU_PYTHON_JSON=$STEP_DETAIL PF_GPU_PYTHON_PREBUILT=1 BUILD_DIR=$build_dir \
    PF_PYTHON=${PF_PY:-${PF_PYTHON:-}} PF_GPU_PYTHON_LOG_DIR=$work/python \
    timeout "$STEP_TIMEOUT" perf/gpu_python_check.sh
  local rc=$?
  STEP_STATUS=$(sed -n 's/^ "status": "\(.*\)",\{0,1\}$/\1/p' "$STEP_DETAIL" 2>/dev/null | head -n1)
  [ "$rc" -eq 124 ] && STEP_STATUS="failed: timed out after ${STEP_TIMEOUT}s"
  [ -n "$STEP_STATUS" ] || STEP_STATUS="failed: gpu_python_check.sh exit status $rc, no result"
  case $STEP_STATUS in failed*) return 1 ;; esac
  return 0
}

deps_ok=0
echo "gpu_check: $mode mode, device $PF_DEV_NAME, budget ${budget}s, build $build_dir, logs $work"
run_step machine 30 step_machine
run_step dependencies 120 step_dependencies
run_step configure 120 step_configure
run_step build "$([ "$mode" = rehearsal ] && echo 3000 || echo 300)" step_build
run_step no_libcuda 30 step_no_libcuda
run_step gpu_probe 30 step_gpu_probe
run_step stream0_race 30 step_stream0_race
run_step cuda_tests 150 step_cuda_tests
run_step fanout_demo 90 step_fanout_demo
run_step bench_kernels 60 step_bench_kernels
run_step python "$([ "$mode" = rehearsal ] && echo 900 || echo 180)" step_python

# --- Result --------------------------------------------------------------------------------
status=passed
[ "${#failed_steps[@]}" -eq 0 ] || status=failed
date_part=$(date -u +%Y-%m-%d-%H%M)
if [ -n "${PF_GPU_CHECK_JSON:-}" ]; then
  json=$PF_GPU_CHECK_JSON
elif [ "$mode" = rehearsal ]; then
  json=$build_dir/gpu-check/rehearsal-$date_part.json
else
  json=perf/results/gpu-$(pf_slug "$PF_DEV_NAME")-$date_part.json
fi
mkdir -p "$(dirname "$json")"
nvcc_version=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1)
{
  printf '{\n "schema": "processfork.gpu_check/2",\n "mode": "%s",\n' "$mode"
  printf ' "started": %s,\n "finished": %s,\n "seconds": %s,\n "budget_s": %s,\n' \
    "$(pf_json_str "$started")" "$(pf_json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" \
    "$(($(date +%s) - t_start))" "$budget"
  printf ' "commit": %s,\n "host": %s,\n' "$(pf_json_str "$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)")" \
    "$(pf_json_str "$(hostname)")"
  printf ' "device": {"name": %s, "driver": %s, "uuid": %s, "gpu_count": %s},\n' \
    "$(pf_json_str "$PF_DEV_NAME")" "$(pf_json_str "$PF_DEV_DRIVER")" "$(pf_json_str "$PF_DEV_UUID")" \
    "${PF_GPU_COUNT:-0}"
  printf ' "nvcc_version": %s,\n "build_dir": %s,\n "cuda_architectures": "90",\n' \
    "$(pf_json_str "${nvcc_version:-none}")" "$(pf_json_str "$build_dir")"
  printf ' "skip_build": %s,\n "logs": %s,\n' "$([ "$skip_build" = 1 ] && echo true || echo false)" \
    "$(pf_json_str "$work")"
  printf ' "steps": [\n'
  for i in "${!step_records[@]}"; do
    ((i == 0)) || printf ',\n'
    printf '  %s' "${step_records[$i]}"
  done
  printf '\n ],\n'
  printf ' "failed_steps": [%s],\n' "$(
    first=1
    for s in "${failed_steps[@]}"; do
      ((first)) || printf ', '
      first=0
      pf_json_str "$s"
    done
  )"
  printf ' "status": "%s"\n}\n' "$status"
} >"$json"

echo "=== result: $status ($(($(date +%s) - t_start))s of ${budget}s) -> $json"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/gpu-check-$stamp"
  cp "$json" "$OUT/"
  cp -r "$work"/. "$OUT/gpu-check-$stamp/"
  echo "copied to $OUT/"
fi
[ "$status" = passed ]
