#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR/bin (fuzz_*) for SECONDS each, starting from a scratch copy of its
# committed seed corpus tests/data/fuzz/<target>/ (the committed corpus is never modified). Fails if any
# target finds a crash, leak, timeout or sanitizer report; crash inputs are kept in BUILD_DIR/fuzz-artifacts.
# Usage: scripts/run_fuzzers.sh BUILD_DIR SECONDS
set -euo pipefail
build_dir=${1:?usage: run_fuzzers.sh BUILD_DIR SECONDS}
seconds=${2:?usage: run_fuzzers.sh BUILD_DIR SECONDS}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shopt -s nullglob
targets=("$build_dir"/bin/fuzz_*)
if [ ${#targets[@]} -eq 0 ]; then
  echo "run_fuzzers: no fuzz_* binaries in $build_dir/bin (configure and build the 'fuzz' preset)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"
failed=0
printf '%-22s %10s %12s %8s  %s\n' target seconds execs corpus result
for bin in "${targets[@]}"; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  corpus="$work/$name"
  mkdir -p "$corpus"
  if [ -d "$root/tests/data/fuzz/$name" ]; then
    find "$root/tests/data/fuzz/$name" -maxdepth 1 -type f ! -name '*.py' -exec cp {} "$corpus/" \;
  fi
  log="$work/$name.log"
  # -rss_limit_mb bounds memory per input (hostile lengths must not allocate); -timeout flags hangs.
  if "$bin" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$artifacts/$name-" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  ncorpus=$(find "$corpus" -type f | wc -l)
  printf '%-22s %10s %12s %8s  %s\n' "$name" "$seconds" "${execs:-?}" "$ncorpus" "$result"
  if [ "$result" = FAILED ]; then
    echo "---- $name log (tail) ----" >&2
    tail -40 "$log" >&2
  fi
done
exit $failed
