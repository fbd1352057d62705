#!/usr/bin/env bash
# Fails if any executable or shared library in the build links libcuda at load time:
# the CUDA driver must be loaded at run time only (DESIGN §3), so every binary starts on a
# machine with no GPU and no driver.
set -euo pipefail
build_dir=${1:-build}
bad=0
checked=0
while IFS= read -r -d '' f; do
  [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ] || continue  # ELF only
  checked=$((checked + 1))
  if ldd "$f" 2>/dev/null | grep -q 'libcuda\.so'; then
    echo "check_no_libcuda: links libcuda: $f" >&2
    bad=1
  fi
done < <(find "$build_dir" -type f \( -perm -u+x -o -name '*.so*' \) -not -path '*/CMakeFiles/*' -print0)
if [ "$bad" -ne 0 ]; then
  echo "check_no_libcuda: FAILED" >&2
  exit 1
fi
echo "check_no_libcuda: $checked binaries checked, none links libcuda"
