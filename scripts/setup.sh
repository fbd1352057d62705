#!/usr/bin/env bash
# Installs what ProcessFork needs to build and test, only what is missing:
#   Debian packages (compiler, CMake, Ninja, GoogleTest, nlohmann-json, cpp-httplib, OpenSSL,
#   LMDB (the store's index),
#   clang and its libFuzzer/sanitizer runtimes for scripts/fuzz.sh)
#   and a Python virtual environment at .venv with the test reference packages.
# Idempotent; safe to run on every `make test` / `make demo`. Uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config git
          libgtest-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev liblmdb-dev
          clang libclang-rt-dev
          python3 python3-venv python3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools for tests (independent BLAKE3 reference). A venv keeps them off the system.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import blake3" 2>/dev/null; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check blake3
fi
if ! .venv/bin/python -c "import scikit_build_core, nanobind, numpy, pytest" 2>/dev/null; then
  echo "setup: installing Python build/test packages into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    scikit-build-core nanobind numpy pytest
fi
echo "setup: ok"
