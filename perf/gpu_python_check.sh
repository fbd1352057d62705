#!/usr/bin/env bash
# The Python half of the GPU check (docs/cuda.md, docs/python.md); perf/gpu_check.sh runs it
# as its `python` step, and it runs alone too. Offline: no pip, no wheel build.
#
# 1. The interpreter: $PF_PYTHON, .venv/bin/python, python3 — the first that imports torch.
#    None → fails, saying what each candidate lacked. Prints torch's version and
#    torch.cuda.is_available(); on a GPU machine (not a rehearsal) False is a failure, so
#    the GPU tests cannot all skip and be called a pass.
# 2. The package: the extension (_core) and the CLI built with -DPF_CUDA=ON in $BUILD_DIR
#    (default build-gpu; configured and built here unless PF_GPU_PYTHON_PREBUILT=1, as
#    gpu_check.sh does after its own build), staged with the Python sources into
#    <build>/python-stage (cmake --install --component python) and put on PYTHONPATH, so
#    `processfork serve` can serve cuda:0.
# 3. pytest on the adapters' and layouts' tests (PF_GPU_PYTEST, default
#    tests/python/test_kv_layout.py, test_transformers_adapter.py, test_sglang_adapter.py,
#    test_vllm_adapter.py; "all" = tests/python), JUnit XML. PF_CLI is the staged CLI, so a
#    CUDA daemon that does not start fails a test instead of skipping it (conftest.py).
# 4. Counts from the XML. On a GPU machine a skipped test whose name or skip reason mentions
#    CUDA or GPU is a failure ("gpu_skips"). In a rehearsal (PF_GPU_CHECK_REHEARSAL=1) the
#    run is real and the status is "skipped: rehearsal (no GPU)" unless something failed.
#
# Writes PF_GPU_PYTHON_JSON (default perf/results/gpu-python-<device-slug>-<date>.json; in a
# rehearsal <build>/gpu-check/rehearsal-python-<date>.json) with "status" "passed",
# "failed: why" or "skipped: why"; logs in PF_GPU_PYTHON_LOG_DIR (default
# <build>/gpu-check/python), copied to $OUT when set. PF_GPU_CHECK_SKIP_BUILD=1: only the
# interpreter check, and pytest when the build already has the extension.
# Exit status: 0 unless the status is "failed: ...".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=perf/gpu_common.sh
source perf/gpu_common.sh

rehearsal=${PF_GPU_CHECK_REHEARSAL:-0}
build_dir=${BUILD_DIR:-build-gpu}
log_dir=${PF_GPU_PYTHON_LOG_DIR:-$build_dir/gpu-check/python}
mkdir -p "$log_dir"
pf_device_info
date_part=$(date -u +%Y-%m-%d-%H%M)
if [ -n "${PF_GPU_PYTHON_JSON:-}" ]; then
  out_json=$PF_GPU_PYTHON_JSON
elif [ "$rehearsal" = 1 ]; then
  out_json=$build_dir/gpu-check/rehearsal-python-$date_part.json
else
  out_json=perf/results/gpu-python-$(pf_slug "$PF_DEV_NAME")-$date_part.json
fi
mkdir -p "$(dirname "$out_json")"

# finish STATUS [EXTRA_JSON_FIELDS]: writes the result and exits (1 for "failed: ...").
finish() {
  local status=$1 extra=${2:-}
  {
    printf '{\n "schema": "processfork.gpu_python_check/2",\n "mode": "%s",\n' \
      "$([ "$rehearsal" = 1 ] && echo rehearsal || echo gpu)"
    printf ' "device": {"name": %s, "driver": %s, "uuid": %s},\n' "$(pf_json_str "$PF_DEV_NAME")" \
      "$(pf_json_str "$PF_DEV_DRIVER")" "$(pf_json_str "$PF_DEV_UUID")"
    local cuda=null  # torch.cuda.is_available(); null when no interpreter imports torch
    case ${PF_PY_CUDA:-} in True) cuda=true ;; False) cuda=false ;; esac
    printf ' "python": %s,\n "torch": %s,\n "torch_cuda_available": %s,\n' \
      "$(pf_json_str "${PF_PY:-none}")" "$(pf_json_str "${PF_PY_TORCH:-none}")" "$cuda"
    [ -z "$extra" ] || printf '%s,\n' "$extra"
    printf ' "status": %s\n}\n' "$(pf_json_str "$status")"
  } >"$out_json"
  echo "gpu_python_check: $status -> $out_json"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$out_json" "$OUT/"
    cp -r "$log_dir" "$OUT/" 2>/dev/null || true
  fi
  case $status in failed*) exit 1 ;; esac
  exit 0
}

# 1. The interpreter.
if ! pf_find_python; then
  echo "gpu_python_check: no Python interpreter with torch: $PF_PY_ERROR" >&2
  finish "failed: no Python interpreter imports torch ($PF_PY_ERROR)"
fi
echo "python: $PF_PY; torch $PF_PY_TORCH; torch.cuda.is_available() = $PF_PY_CUDA"
if [ "$rehearsal" != 1 ] && [ "$PF_PY_CUDA" != True ]; then
  echo "gpu_python_check: torch.cuda.is_available() is False on a GPU machine" >&2
  finish "failed: torch.cuda.is_available() is False on $PF_DEV_NAME (a CPU-only torch, or no GPU visible)"
fi

# 2. The package.
if [ "${PF_GPU_CHECK_SKIP_BUILD:-0}" != 1 ] && [ "${PF_GPU_PYTHON_PREBUILT:-0}" != 1 ]; then
  pf_find_nvcc
  if ! why=$(pf_python_build_ready "$PF_PY"); then finish "failed: cannot build the extension: $why"; fi
  pf_discover_deps
  if [ -n "$PF_DEP_MISSING" ]; then
    finish "failed: missing dependency: $(printf '%s' "$PF_DEP_MISSING" | head -n1)"
  fi
  pf_configure "$build_dir" "$PF_PY" >"$log_dir/configure.log" 2>&1 ||
    finish "failed: configure failed (see $log_dir/configure.log)"
  cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target _core processfork \
    >"$log_dir/build.log" 2>&1 || finish "failed: building _core and processfork failed (see $log_dir/build.log)"
fi
if ! grep -q '^PF_PYTHON_PACKAGE:BOOL=ON' "$build_dir/CMakeCache.txt" 2>/dev/null ||
  ! ls "$build_dir"/shims/python/_core*.so >/dev/null 2>&1; then
  if [ "${PF_GPU_CHECK_SKIP_BUILD:-0}" = 1 ] && [ "$rehearsal" = 1 ]; then
    finish "skipped: rehearsal (no GPU); $build_dir has no Python extension (PF_GPU_CHECK_SKIP_BUILD=1)"
  fi
  why=$(pf_python_build_ready "$PF_PY" || true)
  finish "failed: $build_dir has no Python extension _core${why:+ ($why)}"
fi
stage=$build_dir/python-stage
rm -rf "$stage"
mkdir -p "$stage"
cp -r shims/python/processfork "$stage/"
cmake --install "$build_dir" --component python --prefix "$stage" >"$log_dir/stage.log" 2>&1 ||
  finish "failed: staging the package failed (see $log_dir/stage.log)"
stage=$(cd "$stage" && pwd)
echo "package staged in $stage"

# 3. pytest.
selection=${PF_GPU_PYTEST:-tests/python/test_kv_layout.py tests/python/test_transformers_adapter.py tests/python/test_sglang_adapter.py tests/python/test_vllm_adapter.py}
[ "$selection" = all ] && selection=tests/python
if ! "$PF_PY" -c 'import pytest' 2>/dev/null; then
  finish "failed: pytest is not importable by $PF_PY (carry its wheel: scripts/gpu_deps.sh)"
fi
junit=$log_dir/pytest.xml
rm -f "$junit"
echo "pytest: $selection"
set +e
# shellcheck disable=SC2086  # the selection is a word list
PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}" PF_CLI="$stage/processfork/bin/processfork" \
  "$PF_PY" -m pytest $selection -q -rs -p no:cacheprovider --junitxml "$junit" 2>&1 |
  tee "$log_dir/pytest.log"
rc=${PIPESTATUS[0]}
set -e
[ -s "$junit" ] || finish "failed: pytest exit status $rc and no JUnit XML (see $log_dir/pytest.log)"

# 4. Counts and the verdict.
summary=$("$PF_PY" - "$junit" "$rc" "$rehearsal" <<'PY'
import json, re, sys
import xml.etree.ElementTree as ET
junit, rc, rehearsal = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
root = ET.parse(junit).getroot()
cases = list(root.iter("testcase"))
def name(c):
    return c.get("classname", "") + "::" + c.get("name", "")
gpu = re.compile(r"cuda|gpu", re.I)
failed = [name(c) for c in cases if c.find("failure") is not None or c.find("error") is not None]
skipped = []
for c in cases:
    s = c.find("skipped")
    if s is not None:
        reason = s.get("message", "")
        skipped.append({"test": name(c), "reason": reason,
                        "gpu": bool(gpu.search(name(c)) or gpu.search(reason))})
gpu_skips = [s["test"] for s in skipped if s["gpu"]]
passed = len(cases) - len(failed) - len(skipped)
if failed or rc not in (0, 5):
    status = f"failed: {len(failed)} failed (pytest exit {rc})"
elif not cases:
    status = "failed: no test ran"
elif rehearsal:
    status = (f"skipped: rehearsal (no GPU); {passed} passed, {len(skipped)} skipped "
              f"({len(gpu_skips)} GPU tests)")
elif gpu_skips:
    status = f"failed: {len(gpu_skips)} GPU tests skipped on a GPU machine"
else:
    status = "passed"
print(json.dumps({"status": status, "tests": {"total": len(cases), "passed": passed,
                  "failed": len(failed), "skipped": len(skipped), "gpu_skips": len(gpu_skips)},
                  "failed_tests": failed, "skipped_tests": skipped, "gpu_skipped_tests": gpu_skips,
                  "pytest_exit_code": rc}))
PY
)
status=$("$PF_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["status"])' "$summary")
extra=$("$PF_PY" -c '
import json, sys
d = json.loads(sys.argv[1]); d.pop("status")
d["selection"] = sys.argv[2]
print(",\n".join(" %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in d.items()))' "$summary" "$selection")
finish "$status" "$extra"
