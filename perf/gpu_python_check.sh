#!/usr/bin/env bash
# On a GPU machine, after perf/gpu_check.sh (docs/cuda.md, docs/python.md): builds the CUDA
# wheel of the Python package (-Ccmake.define.PF_CUDA=ON, so the bundled `processfork serve`
# can serve a cuda:N pool and kv_store/kv_load run the CUDA layout kernel) into .venv, and
# runs the whole pytest suite — the adapters' GPU tests (transformers fork on CUDA, the
# SGLang and vLLM data paths on CUDA tensors) run where torch sees a GPU; the rest as on
# the host. Uses the machine's own torch/transformers (the venv sees system site-packages);
# offline machines install the build tools from .gpu-deps (scripts/gpu_deps.sh).
# Writes perf/results/gpu-python-<device-slug>-<date>.json (pytest's counts, skipped
# reasons) and, with $OUT set, copies it and the logs there. Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date -u +%Y%m%d-%H%M%S)
log_dir=build-python-cuda/logs
mkdir -p "$log_dir"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv --system-site-packages .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ls .gpu-deps/*.whl >/dev/null 2>&1; then
  "${pip[@]}" --no-index --no-deps .gpu-deps/*.whl || true
else
  "${pip[@]}" scikit-build-core nanobind numpy pytest blake3 || true
fi

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)
device=${device:-unknown}
slug=$(printf '%s' "$device" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')

echo "=== CUDA wheel (PF_CUDA=ON) into .venv ==="
CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} .venv/bin/python -m pip install \
  --disable-pip-version-check --no-build-isolation --no-deps \
  -Ccmake.define.PF_CUDA=ON -Cbuild-dir=build-python-cuda/{wheel_tag} . \
  2>&1 | tee "$log_dir/wheel-$stamp.log"

echo "=== pytest (torch sees: $(.venv/bin/python -c 'import torch; print(torch.cuda.device_count(), "GPU(s)")' 2>/dev/null || echo 'no torch')) ==="
junit="$log_dir/pytest-$stamp.xml"
set +e
PF_TEST_CUDA=1 .venv/bin/python -m pytest tests/python -q -rs --junitxml "$junit" \
  2>&1 | tee "$log_dir/pytest-$stamp.log"
rc=${PIPESTATUS[0]}
set -e

mkdir -p perf/results
out_json="perf/results/gpu-python-${slug:-unknown}-$(date -u +%Y-%m-%d).json"
.venv/bin/python - "$junit" "$device" "$rc" "$out_json" <<'PY'
import json, sys, xml.etree.ElementTree as ET
junit, device, rc, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
suite = ET.parse(junit).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
skipped = [{"test": c.get("classname", "") + "::" + c.get("name", ""),
            "reason": c.find("skipped").get("message", "")}
           for c in suite.iter("testcase") if c.find("skipped") is not None]
failed = [c.get("classname", "") + "::" + c.get("name", "") for c in suite.iter("testcase")
          if c.find("failure") is not None or c.find("error") is not None]
doc = {"schema": "processfork.gpu_python_check/1", "device": device,
       "tests": {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")},
       "failed_tests": failed, "skipped_tests": skipped, "pytest_exit_code": rc,
       "status": "passed" if rc == 0 else "failed"}
json.dump(doc, open(out, "w"), indent=1)
print(json.dumps(doc["tests"]), "->", out)
PY
if [ -n "${OUT:-}" ]; then cp "$out_json" "$log_dir"/*-"$stamp".* "$OUT"/ 2>/dev/null || true; fi
exit "$rc"
