#!/usr/bin/env bash
# Mooncake Store for perf/bench_batch_set.py's side-by-side baseline: a separate virtual
# environment, .venv-mooncake, with PyPI's mooncake-transfer-engine-non-cuda (its own
# dependencies kept away from .venv's engines) and the RDMA verbs library its extension
# links against (Debian libibverbs1). Idempotent; PF_MOONCAKE=0 skips it (the benchmark then
# records Mooncake as skipped, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PF_MOONCAKE:-1}" = "0" ]; then
  echo "mooncake: skipped (PF_MOONCAKE=0)"
  exit 0
fi
if ! dpkg-query -W -f='${Status}' libibverbs1 2>/dev/null | grep -q "install ok installed"; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "mooncake: installing Debian package libibverbs1"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libibverbs1
fi
[ -x .venv-mooncake/bin/python ] || python3 -m venv .venv-mooncake
if ! .venv-mooncake/bin/python -c "import mooncake.store, numpy" 2>/dev/null; then
  echo "mooncake: installing mooncake-transfer-engine-non-cuda into .venv-mooncake"
  .venv-mooncake/bin/python -m pip install --quiet --disable-pip-version-check \
    mooncake-transfer-engine-non-cuda==0.3.13.post1 numpy
fi
