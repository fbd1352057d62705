#!/usr/bin/env bash
# Fuzzing of both protocols (DESIGN §8; docs/fuzzing.md), a step of `make test`.
# Builds the fuzz build into $FUZZ_BUILD_DIR (default build-fuzz: clang, libFuzzer, ASan +
# UBSan, only the parsers' libraries; extra CMake arguments in FUZZ_CMAKE_ARGS), then runs
# each target for PF_FUZZ_SECONDS (default 60 when CI=true, else 15) over a temporary copy
# of its seed corpus tests/fuzz/corpus/<target> (runs never add files to the repository),
# with tests/fuzz/<target>.dict when present. Fails on any crash, leak, sanitizer report,
# timeout or out-of-memory; the input that did it is written to
# $FUZZ_BUILD_DIR/artifacts/<target>/. Prints the inputs each target executed.
#   scripts/fuzz.sh [TARGET...]   build and run every target (or only these)
#   scripts/fuzz.sh --seeds       rewrite the seed corpus with fuzz_make_seeds, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
targets=(fuzz_uds_frames fuzz_http_json)
if [ "${CI:-}" = true ]; then seconds=${PF_FUZZ_SECONDS:-60}; else seconds=${PF_FUZZ_SECONDS:-15}; fi

CC=${FUZZ_CC:-clang} CXX=${FUZZ_CXX:-clang++} cmake -S . -B "$build_dir" -G Ninja \
  -DPF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo ${FUZZ_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"

if [ "${1:-}" = --seeds ]; then
  exec "$build_dir/tests/fuzz/fuzz_make_seeds" tests/fuzz/corpus
fi
(($#)) && targets=("$@")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$build_dir/artifacts/$t"
  cp -r "tests/fuzz/corpus/$t/." "$work/$t/"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build_dir/artifacts/$t/")
  [ -f "tests/fuzz/$t.dict" ] && args+=(-dict="tests/fuzz/$t.dict")
  echo "fuzz: $t for ${seconds} s over $(ls "$work/$t" | wc -l) seed inputs"
  rc=0
  "$build_dir/tests/fuzz/$t" "${args[@]}" "$work/$t" >"$work/$t.log" 2>&1 || rc=$?
  runs=$(grep -o 'Done [0-9]* runs' "$work/$t.log" | tail -1 || true)
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$work/$t.log"
    echo "fuzz: $t FAILED (exit $rc); the input is in $build_dir/artifacts/$t/"
    failed+=("$t")
  else
    echo "fuzz: $t ok: ${runs:-? runs}, corpus $(ls "$work/$t" | wc -l) inputs"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
