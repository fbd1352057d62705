#!/usr/bin/env bash
# Builds this tree's Python package (docs/python.md) as a wheel in .whl/ and installs it into
# .venv over whatever was installed before, so that `make test` and `make bench` always run
# this tree's library and daemon (the package bundles the CLI), never an older install.
# Incremental: scikit-build keeps its build in build-python/. Needs scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)} .venv/bin/python -m pip wheel --quiet \
  --no-build-isolation --disable-pip-version-check --no-deps -w .whl .
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  --force-reinstall .whl/processfork-*.whl
