# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Sourced by perf/gpu_check.sh and perf/gpu_python_check.sh (not executable on its own).
# Shared pieces of the one-call GPU check (docs/cuda.md "Checking on a GPU machine"):
#
#  pf_json_str S            S as a JSON string literal.
#  pf_slug S                S lower-cased, runs of other characters as one "-".
#  pf_valid_json FILE       0 when FILE is one JSON value (python3; assumed without it).
#  pf_device_info           sets PF_DEV_NAME, PF_DEV_DRIVER, PF_DEV_UUID, PF_GPU_COUNT from
#                           nvidia-smi (first GPU); in a rehearsal (PF_GPU_CHECK_REHEARSAL=1)
#                           the machine counts as having no GPU whatever nvidia-smi says.
#  pf_find_nvcc             puts /usr/local/cuda/bin on PATH when nvcc is only there.
#  pf_discover_deps         finds every build dependency (below); sets PF_DEP_ARGS (CMake
#                           -D arguments), PF_DEP_LIBDIRS (':'-joined library folders of
#                           carried dependencies, the binaries' rpath), PF_DEP_REPORT (one
#                           line per dependency: where it was found) and PF_DEP_MISSING (one
#                           line per missing dependency, naming it). Returns 0 always.
#  pf_find_python           sets PF_PY to the first of $PF_PYTHON, .venv/bin/python, python3
#                           that imports torch (made absolute, links kept), PF_PY_TORCH
#                           (torch's version) and PF_PY_CUDA ("True"/"False":
#                           torch.cuda.is_available()); returns 1 with PF_PY_ERROR saying
#                           what each candidate lacked. When PF_PY lacks pytest or nanobind,
#                           the carried pure-Python wheels go on PYTHONPATH
#                           (pf_carried_wheels).
#
# Dependencies are never installed from a network (the lent GPU machines are offline). They
# are looked up, in order, in $PF_GPU_DEPS_PREFIX (a folder holding usr/), in shared/gpu-deps
# and .gpu-deps (each either a folder of .deb files, unpacked once with `dpkg -x` into
# /tmp/pf-gpu-deps-<name>, or a folder holding usr/), and in the system (/). Each dependency
# is a header and a library: GoogleTest (its CMake package), nlohmann-json (its CMake
# package), cpp-httplib (httplib.h, libcpp-httplib and cpp-httplib.pc; its run-time
# libraries must all resolve), LMDB, OpenSSL (headers including the architecture's
# opensslconf.h, e.g. /usr/include/x86_64-linux-gnu, and libcrypto/libssl). pkg-config is
# used by CMake when present (PKG_CONFIG_PATH gets the carried .pc folders); without it
# cmake/pf_cpp_httplib.cmake and runtime/CMakeLists.txt take the paths passed here.

pf_json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/}
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

# pf_valid_json FILE: 0 when FILE holds one JSON value (checked by python3; without python3
# every file counts as valid).
pf_valid_json() {
  command -v python3 >/dev/null || return 0
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null
}

pf_slug() {
  local s
  s=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
  printf '%s' "${s:-unknown}"
}

pf_device_info() {
  PF_DEV_NAME="no-gpu" PF_DEV_DRIVER="none" PF_DEV_UUID="none" PF_GPU_COUNT=0
  if [ "${PF_GPU_CHECK_REHEARSAL:-0}" = 1 ]; then
    PF_DEV_NAME="rehearsal (no GPU)"
    return 0
  fi
  command -v nvidia-smi >/dev/null || return 0
  local line
  line=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader 2>/dev/null |
    head -n1 || true)
  [ -n "$line" ] || return 0
  PF_DEV_NAME=$(printf '%s' "$line" | cut -d, -f1 | sed 's/^ *//;s/ *$//')
  PF_DEV_DRIVER=$(printf '%s' "$line" | cut -d, -f2 | sed 's/^ *//;s/ *$//')
  PF_DEV_UUID=$(printf '%s' "$line" | cut -d, -f3 | sed 's/^ *//;s/ *$//')
  PF_GPU_COUNT=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -c . || true)
}

pf_find_nvcc() {
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
}

# The multiarch folder name (x86_64-linux-gnu), or empty.
pf_multiarch() {
  gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true
}

# The roots to search, one a line (carried ones first, / last). .deb folders are unpacked.
_pf_dep_roots() {
  local src dest deb
  [ -z "${PF_GPU_DEPS_PREFIX:-}" ] || printf '%s\n' "$PF_GPU_DEPS_PREFIX"
  for src in shared/gpu-deps .gpu-deps; do
    [ -d "$src" ] || continue
    if ls "$src"/*.deb >/dev/null 2>&1; then
      dest=/tmp/pf-gpu-deps-$(pf_slug "$src")
      if [ ! -f "$dest/.unpacked" ]; then
        command -v dpkg >/dev/null || {
          echo "gpu_check: $src holds .deb files but dpkg is missing to unpack them" >&2
          continue
        }
        mkdir -p "$dest"
        for deb in "$src"/*.deb; do dpkg -x "$deb" "$dest"; done
        # The carried .pc files say prefix=/usr: point them at the unpacked copy.
        find "$dest" -name '*.pc' -exec sed -i "s|^prefix=/usr\$|prefix=$dest/usr|" {} +
        touch "$dest/.unpacked"
      fi
      printf '%s\n' "$dest"
    elif [ -d "$src/usr" ]; then
      (cd "$src" && pwd)
    fi
  done
  printf '/\n'
}

# _pf_first <path relative to a root>...: the first existing <root>/<path> over every root
# (roots in $_pf_roots), trying the paths in order within each root.
_pf_first() {
  local root rel p
  while IFS= read -r root; do
    for rel in "$@"; do
      p=${root%/}/$rel
      # shellcheck disable=SC2086  # rel may be a glob (lib*.so.*)
      for p in $p; do
        [ -e "$p" ] && { printf '%s\n' "$p"; return 0; }
      done
    done
  done <<<"$_pf_roots"
  return 1
}

pf_discover_deps() {
  PF_DEP_ARGS=() PF_DEP_REPORT="" PF_DEP_MISSING="" PF_DEP_LIBDIRS=""
  local ma inc lib cfg pc archinc ssl crypto prefixes="" pcdirs="" root d stdinc=""
  ma=$(pf_multiarch)
  _pf_roots=$(_pf_dep_roots)
  local libs=("usr/lib/$ma" usr/lib "lib/$ma" usr/local/lib "usr/lib64")

  found() { PF_DEP_REPORT+="$1: $2"$'\n'; }
  missing() { PF_DEP_MISSING+="$1"$'\n'; }
  # A library: lib<name>.so when it resolves, else the versioned file.
  findlib() {
    local l name=$1 p
    for l in "${libs[@]}"; do
      p=$(_pf_first "$l/lib$name.so") && [ -e "$p" ] && { printf '%s\n' "$p"; return 0; }
    done
    for l in "${libs[@]}"; do
      p=$(_pf_first "$l/lib$name.so.[0-9]*") && { printf '%s\n' "$p"; return 0; }
    done
    return 1
  }

  while IFS= read -r root; do
    [ "$root" = / ] && continue
    prefixes+="${prefixes:+;}${root%/}/usr"
    for d in "${libs[@]}"; do
      [ -d "$root/$d" ] && PF_DEP_LIBDIRS+="${PF_DEP_LIBDIRS:+:}${root%/}/$d"
      [ -d "$root/$d/pkgconfig" ] && pcdirs+="${pcdirs:+:}${root%/}/$d/pkgconfig"
    done
    [ -d "$root/usr/share/pkgconfig" ] && pcdirs+="${pcdirs:+:}${root%/}/usr/share/pkgconfig"
    [ -n "$ma" ] && [ -d "$root/usr/include/$ma" ] && stdinc+="${stdinc:+;}${root%/}/usr/include/$ma"
  done <<<"$_pf_roots"
  [ -z "$prefixes" ] || PF_DEP_ARGS+=("-DCMAKE_PREFIX_PATH=$prefixes")
  # Carried architecture headers (openssl/opensslconf.h) are not on the compiler's own path.
  [ -z "$stdinc" ] || PF_DEP_ARGS+=("-DCMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES=$stdinc"
    "-DCMAKE_C_STANDARD_INCLUDE_DIRECTORIES=$stdinc")
  if [ -n "$pcdirs" ]; then
    export PKG_CONFIG_PATH="$pcdirs${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  fi
  if [ -n "$PF_DEP_LIBDIRS" ]; then
    # Carried shared libraries (and their own dependencies) resolve at link time
    # (-rpath-link) and, for our binaries only, at run time: DT_RPATH (--disable-new-dtags,
    # which unlike RUNPATH also covers a library's dependencies). Not LD_LIBRARY_PATH: that
    # would put carried copies under every program the check runs (cmake, python, torch).
    local rl=-Wl,--disable-new-dtags,-rpath-link,${PF_DEP_LIBDIRS//:/,-rpath-link,},-rpath,$PF_DEP_LIBDIRS
    PF_DEP_ARGS+=("-DCMAKE_EXE_LINKER_FLAGS=$rl" "-DCMAKE_SHARED_LINKER_FLAGS=$rl"
      "-DCMAKE_MODULE_LINKER_FLAGS=$rl")
  fi
  if command -v pkg-config >/dev/null; then
    found pkg-config "$(command -v pkg-config)"
  else
    found pkg-config "absent (cpp-httplib and LMDB found from the paths below)"
  fi

  # GoogleTest
  if cfg=$(_pf_first "usr/lib/$ma/cmake/GTest/GTestConfig.cmake" usr/lib/cmake/GTest/GTestConfig.cmake \
    usr/local/lib/cmake/GTest/GTestConfig.cmake usr/lib64/cmake/GTest/GTestConfig.cmake); then
    PF_DEP_ARGS+=("-DGTest_DIR=$(dirname "$cfg")")
    found GoogleTest "$cfg"
  else
    missing "GoogleTest (GTestConfig.cmake; Debian libgtest-dev)"
  fi
  # nlohmann-json
  if cfg=$(_pf_first usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake \
    "usr/lib/$ma/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" \
    usr/lib/cmake/nlohmann_json/nlohmann_jsonConfig.cmake \
    usr/local/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake \
    usr/local/lib/cmake/nlohmann_json/nlohmann_jsonConfig.cmake); then
    PF_DEP_ARGS+=("-Dnlohmann_json_DIR=$(dirname "$cfg")")
    found nlohmann-json "$cfg"
  else
    missing "nlohmann-json (nlohmann_jsonConfig.cmake; Debian nlohmann-json3-dev)"
  fi
  # OpenSSL: headers, the architecture's configuration header, both libraries.
  inc=$(_pf_first usr/include/openssl/ssl.h usr/local/include/openssl/ssl.h) || inc=""
  archinc=$(_pf_first "usr/include/$ma/openssl/opensslconf.h" usr/include/openssl/opensslconf.h \
    usr/local/include/openssl/opensslconf.h) || archinc=""
  crypto=$(findlib crypto) || crypto=""
  ssl=$(findlib ssl) || ssl=""
  if [ -n "$inc" ] && [ -n "$archinc" ] && [ -n "$crypto" ] && [ -n "$ssl" ]; then
    inc=$(dirname "$(dirname "$inc")")
    PF_DEP_ARGS+=("-DOPENSSL_INCLUDE_DIR=$inc" "-DOPENSSL_CRYPTO_LIBRARY=$crypto"
      "-DOPENSSL_SSL_LIBRARY=$ssl")
    found OpenSSL "$inc (+ $(dirname "$(dirname "$archinc")")), $crypto, $ssl"
  else
    missing "OpenSSL ($([ -n "$inc" ] || printf 'openssl/ssl.h ')$([ -n "$archinc" ] || printf 'the architecture header openssl/opensslconf.h ')$([ -n "$crypto" ] || printf 'libcrypto ')$([ -n "$ssl" ] || printf 'libssl ')missing; Debian libssl-dev + libssl3)"
  fi
  # LMDB
  inc=$(_pf_first usr/include/lmdb.h usr/local/include/lmdb.h) || inc=""
  lib=$(findlib lmdb) || lib=""
  if [ -n "$inc" ] && [ -n "$lib" ]; then
    PF_DEP_ARGS+=("-DLMDB_INCLUDE_DIR=$(dirname "$inc")" "-DLMDB_LIBRARY=$lib")
    found LMDB "$inc, $lib"
  else
    missing "LMDB ($([ -n "$inc" ] || printf 'lmdb.h ')$([ -n "$lib" ] || printf 'liblmdb ')missing; Debian liblmdb-dev + liblmdb0)"
  fi
  # cpp-httplib: header, library, .pc (its feature macros) and its run-time libraries.
  inc=$(_pf_first usr/include/httplib.h usr/local/include/httplib.h) || inc=""
  lib=$(findlib cpp-httplib) || lib=""
  pc=$(_pf_first "usr/lib/$ma/pkgconfig/cpp-httplib.pc" usr/lib/pkgconfig/cpp-httplib.pc \
    usr/share/pkgconfig/cpp-httplib.pc usr/local/lib/pkgconfig/cpp-httplib.pc) || pc=""
  if [ -n "$inc" ] && [ -n "$lib" ] && [ -n "$pc" ]; then
    PF_DEP_ARGS+=("-DCPP_HTTPLIB_INCLUDE_DIR=$(dirname "$inc")" "-DCPP_HTTPLIB_LIBRARY=$lib"
      "-DCPP_HTTPLIB_PC=$pc")
    local unresolved
    unresolved=$(LD_LIBRARY_PATH="$PF_DEP_LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$lib" 2>/dev/null | sed -n 's/^[[:space:]]*\([^ ]*\) => not found.*/\1/p' | tr '\n' ' ')
    if [ -n "$unresolved" ]; then
      missing "cpp-httplib's run-time libraries: ${unresolved% } (needed by $lib; Debian libbrotli1, zlib1g, libssl3)"
    else
      found cpp-httplib "$inc, $lib, $pc"
    fi
  else
    missing "cpp-httplib ($([ -n "$inc" ] || printf 'httplib.h ')$([ -n "$lib" ] || printf 'libcpp-httplib ')$([ -n "$pc" ] || printf 'cpp-httplib.pc ')missing; Debian libcpp-httplib-dev + libcpp-httplib0.11)"
  fi
  if command -v pkg-config >/dev/null && [ -n "$pc" ] &&
    ! pkg-config --exists cpp-httplib 2>/dev/null; then
    missing "pkg-config cannot resolve cpp-httplib.pc: $(pkg-config --print-errors --exists cpp-httplib 2>&1 | head -n1) (carry its Requires.private .pc files: Debian libssl-dev, zlib1g-dev, libbrotli-dev)"
  fi
  unset -f found missing findlib
  return 0
}

# Carried pure-Python wheels (*-py3-none-any.whl: pytest, nanobind, ... from
# scripts/gpu_deps.sh) in shared/gpu-deps or .gpu-deps are unpacked, not pip-installed, into
# /tmp/pf-gpu-wheels, which goes first on PYTHONPATH. Binary wheels are left alone: one built
# for another Python could shadow the machine's own (numpy under torch).
pf_carried_wheels() {
  local whl dest=/tmp/pf-gpu-wheels py
  py=$(command -v python3 || true)
  for whl in shared/gpu-deps/*-py3-none-any.whl .gpu-deps/*-py3-none-any.whl; do
    [ -e "$whl" ] || continue
    [ -n "$py" ] || { echo "gpu_check: python3 missing to unpack $whl" >&2; return 0; }
    mkdir -p "$dest"
    [ -e "$dest/.$(basename "$whl")" ] || { "$py" -m zipfile -e "$whl" "$dest" && touch "$dest/.$(basename "$whl")"; }
  done
  if [ -d "$dest" ] && [[ ":${PYTHONPATH:-}:" != *":$dest:"* ]]; then
    export PYTHONPATH="$dest${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

pf_find_python() {
  PF_PY="" PF_PY_TORCH="" PF_PY_CUDA="" PF_PY_ERROR=""
  local cand out
  for cand in "${PF_PYTHON:-}" .venv/bin/python python3; do
    [ -n "$cand" ] || continue
    if ! command -v "$cand" >/dev/null 2>&1 && [ ! -x "$cand" ]; then
      PF_PY_ERROR+="$cand: not found; "
      continue
    fi
    if out=$(timeout 120 "$cand" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>&1 | tail -n1) &&
      [[ $out =~ ^[^[:space:]]+\ (True|False)$ ]]; then
      # Absolute, without resolving links (a venv's python is a link out of the venv).
      case $cand in
        /*) PF_PY=$cand ;;
        */*) PF_PY=$PWD/$cand ;;
        *) PF_PY=$(command -v "$cand") ;;
      esac
      PF_PY_TORCH=${out% *}
      PF_PY_CUDA=${out##* }
      # The carried tools only where this interpreter lacks them (never shadow its own).
      "$PF_PY" -c 'import pytest, nanobind' >/dev/null 2>&1 || pf_carried_wheels
      return 0
    fi
    PF_PY_ERROR+="$cand: import torch failed ($out); "
  done
  PF_PY_ERROR=${PF_PY_ERROR%; }
  return 1
}

# pf_configure BUILD_DIR PYTHON: configures the trimmed CUDA build of the GPU check
# (-DPF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90, RelWithDebInfo, Ninja when present) with the
# dependency arguments of pf_discover_deps (call it first) and $CMAKE_ARGS (a word list,
# e.g. compiler launchers). PYTHON (an absolute path, as pf_find_python gives) non-empty:
# the Python extension is configured too
# (PF_PYTHON_PACKAGE=ON, Python_EXECUTABLE, nanobind_DIR from `PYTHON -m nanobind`), and
# the tests' reference interpreter PF_PYTHON is PYTHON. Returns cmake's status.
pf_configure() {
  local build_dir=$1 py=$2 gen=() pyargs=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # An existing build keeps its generator.
  [ -f "$build_dir/CMakeCache.txt" ] && gen=()
  if [ -n "$py" ]; then
    pyargs=(-DPF_PYTHON_PACKAGE=ON "-DPython_EXECUTABLE=$py"
      "-Dnanobind_DIR=$("$py" -m nanobind --cmake_dir)" "-DPF_PYTHON=$py")
  else
    pyargs=(-DPF_PYTHON_PACKAGE=OFF)
  fi
  # shellcheck disable=SC2086  # CMAKE_ARGS is a word list by design
  cmake -S . -B "$build_dir" "${gen[@]}" -DPF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "${PF_DEP_ARGS[@]}" "${pyargs[@]}" ${CMAKE_ARGS:-}
}

# pf_python_build_ready PYTHON: 0 when PYTHON can build the extension (nanobind importable,
# Python.h present); else prints what is missing and returns 1.
pf_python_build_ready() {
  local py=$1 inc
  if ! "$py" -m nanobind --cmake_dir >/dev/null 2>&1; then
    echo "nanobind is not importable by $py (carry its wheel: scripts/gpu_deps.sh)"
    return 1
  fi
  inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
  if [ ! -f "$inc/Python.h" ]; then
    echo "Python.h missing for $py (looked in '$inc'; Debian python3-dev)"
    return 1
  fi
  return 0
}
