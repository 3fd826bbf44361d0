#!/usr/bin/env bash
# The one script run on the GPU machine (through the device tool; see scripts/device/prepare.sh, run here
# first, for what to carry). It builds the cuda-release preset against the machine's own torch (python3),
# runs the C++ tests (the CUDA paths among them run because a GPU is present), runs `hylo generate` on the
# SmolLM2 teacher on CUDA in bf16 and fp32 (and the CPU in fp32 as the baseline measured in the same run),
# and prints a short table last. Logs go to $OUT (the device tool brings them back) or out/device.
#
#   bash scripts/device/check.sh [all|build-test|teacher]
#     build-test  configure, build, C++ tests
#     teacher     the generate runs (builds first if the build is missing)
#     all         both (default)
#
# The teacher GGUF (98 MB) exceeds one call's 64 MiB carry limit, so prepare.sh splits it into
# .deps/teacher.part-*; every run of this script stashes the parts it was carried into
# ~/.cache/hylo/teacher-parts (which lives as long as the machine is held) and reassembles the file, checked
# against .deps/teacher.manifest, once all parts have arrived. Two calls, the second within the warm window:
#   1) check.sh build-test   carrying .deps/include .deps/yaml-cpp .deps/teacher.manifest .deps/teacher.part-aa
#   2) check.sh teacher      carrying .deps/include .deps/yaml-cpp .deps/teacher.manifest .deps/teacher.part-ab
# A call cut off by the 600 s limit loses nothing that is built: build/ stays on the machine while it is held,
# so repeating the call continues the build (ninja) and then runs the tests.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
mode="${1:-all}"
case "$mode" in all|build-test|teacher) ;; *) echo "usage: $0 [all|build-test|teacher]" >&2; exit 2 ;; esac

export HYLO_PYTHON=python3
export HYLO_CACHE="${HYLO_CACHE:-$HOME/.cache/hylo}"
out="${OUT:-$root/out/device}"
mkdir -p "$out"
build="${HYLO_CHECK_BUILD:-$root/build/cuda-release}"   # override: testing this script elsewhere
jobs="$(nproc)"
rows=()                            # "label|result" lines of the final table
row() { rows+=("$1|$2"); }
say() { printf '[check] %s\n' "$*"; }
status=0

gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n1)"
torch_info="$(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -n1)"
say "machine: ${gpu:-no GPU visible} | $(nproc) cores | torch $torch_info"
row "machine" "${gpu:-no GPU visible}; $(nproc) cores; torch $torch_info"

# ---- the teacher: stash carried parts, reassemble when complete ----------------------------------------------
teacher=""
manifest="$root/.deps/teacher.manifest"
if [[ -f "$manifest" ]]; then
  stash="$HYLO_CACHE/teacher-parts"
  mkdir -p "$stash" "$HYLO_CACHE/models"
  for p in "$root"/.deps/teacher.part-*; do [[ -f "$p" ]] && cp -f "$p" "$stash/"; done
  read -r whole_sha whole_name < "$manifest"
  teacher="$HYLO_CACHE/models/$whole_name"
  if [[ ! -f "$teacher" ]]; then
    missing=()
    parts=()
    while read -r sha name; do
      if [[ -f "$stash/$name" ]] && [[ "$(sha256sum "$stash/$name" | cut -d' ' -f1)" == "$sha" ]]; then
        parts+=("$stash/$name")
      else
        missing+=("$name")
      fi
    done < <(tail -n +2 "$manifest")
    if ((${#missing[@]})); then
      say "teacher: still missing part(s) ${missing[*]} (carry them in a later call while this machine is warm)"
      teacher=""
    else
      cat "${parts[@]}" > "$teacher.tmp"
      if [[ "$(sha256sum "$teacher.tmp" | cut -d' ' -f1)" == "$whole_sha" ]]; then
        mv "$teacher.tmp" "$teacher"
        say "teacher: reassembled $teacher"
      else
        say "teacher: reassembled file has the wrong sha256; parts discarded"
        rm -f "$teacher.tmp" "${parts[@]}"
        teacher=""
      fi
    fi
  fi
fi
[[ -n "$teacher" && -f "$teacher" ]] || teacher=""

# ---- configure + build ----------------------------------------------------------------------------------------
build_all() {
  local args=(--preset cuda-release -B "$build" -DHYLO_PYTHON=python3)
  # PCRE2: only the runtime library is installed there; the header is carried (CMakeLists' fallback).
  if ! pkg-config --exists libpcre2-8 2>/dev/null && [[ ! -f /usr/include/pcre2.h ]]; then
    args+=(-DPCRE2_INCLUDE_DIR="$root/.deps/include")
  fi
  # yaml-cpp: the machine's own if it has one, else the carried Debian package.
  if [[ ! -f /usr/include/yaml-cpp/yaml.h && -d "$root/.deps/yaml-cpp" ]]; then
    args+=(-Dyaml-cpp_DIR="$(dirname "$(find "$root/.deps/yaml-cpp" -name yaml-cpp-config.cmake | head -n1)")")
  fi
  local t0=$SECONDS
  say "configure: cmake ${args[*]}"
  if ! cmake "${args[@]}" >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log"
    row "configure (cuda-release)" "FAILED (see build.log)"
    return 1
  fi
  say "build: $jobs jobs"
  # HYLO_CHECK_TARGETS="hylo test_engine ...": build only these (a quicker loop than the whole tree).
  local targets=()
  [[ -n "${HYLO_CHECK_TARGETS:-}" ]] && targets=(--target ${HYLO_CHECK_TARGETS})
  if ! cmake --build "$build" -j "$jobs" "${targets[@]}" >>"$out/build.log" 2>&1; then
    grep -E "error|Error" "$out/build.log" | head -n 30
    tail -n 20 "$out/build.log"
    row "build (cuda-release)" "FAILED after $((SECONDS - t0)) s (see build.log)"
    return 1
  fi
  row "build (cuda-release)" "ok in $((SECONDS - t0)) s"
}

run_tests() {
  local t0=$SECONDS
  say "C++ tests (ctest -L cpp)"
  # Stop in time to print the table inside the device tool's 600 s per call (HYLO_CHECK_BUDGET_S).
  local left=$(( ${HYLO_CHECK_BUDGET_S:-570} - SECONDS ))
  (( left < 60 )) && left=60
  # HYLO_CHECK_TESTS=REGEX: only the matching tests (with HYLO_CHECK_TARGETS, the ones built).
  local filter=()
  [[ -n "${HYLO_CHECK_TESTS:-}" ]] && filter=(-R "${HYLO_CHECK_TESTS}")
  timeout "$left" ctest --test-dir "$build" -L cpp "${filter[@]}" -j "$jobs" --timeout 300 --output-on-failure >"$out/ctest.log" 2>&1
  local rc=$?
  local summary
  summary="$(grep -E "tests passed|tests failed" "$out/ctest.log" | tail -n1)"
  row "C++ tests (ctest -L cpp)" "${summary:-no summary (rc $rc)} in $((SECONDS - t0)) s"
  # The tests with a CUDA path carry it in their name; list how each ended.
  local cuda
  cuda="$(grep -E "Test +#[0-9]+: [^ ]*(Cuda|CUDA|Gpu|GPU)" "$out/ctest.log" |
          sed -E 's/.*Test +#[0-9]+: ([^ ]+) \.+ *([A-Za-z*]+( [A-Za-z]+)?).*/\1 \2/' | sort)"
  if [[ -n "$cuda" ]]; then
    say "CUDA tests:"; echo "$cuda" | sed 's/^/    /'
    row "  CUDA-named tests" "$(echo "$cuda" | awk '{n[$2]++} END {for (k in n) printf "%s %d  ", k, n[k]}')"
  fi
  grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Exception)" "$out/ctest.log" | head -n 20
  [[ $rc -eq 0 ]]
}

# ---- generate on the teacher ------------------------------------------------------------------------------------
stat_field() {  # stat_field LINE: "prefill_tok prefill_tps decode_tok decode_tps ttft_ms"
  sed -nE 's/.*prefill ([0-9]+) tok at ([0-9.]+) tok\/s, decode ([0-9]+) tok at ([0-9.]+) tok\/s \(time to first token ([0-9.]+) ms.*/\1 \2 \3 \4 \5/p' <<<"$1"
}

bench_rows=()
run_generate() {
  local hylo="$build/bin/hylo"
  local prompt_file
  prompt_file="$(mktemp --suffix=.txt)"
  # A fixed ~500-token prompt (no data files there): numbered sentences.
  python3 -c 'print(" ".join(f"Sentence {i} is about the sea, ships and the weather near the harbour." for i in range(40)))' \
    >"$prompt_file"
  : >"$out/generate.log"
  local configs="${HYLO_CHECK_CONFIGS:-cuda bf16,cuda fp32,cpu fp32}"
  local cfg
  while IFS= read -r cfg; do
    set -- $cfg
    local dev=$1 dt=$2
    # Coherence: the chat question, greedy, stops at the end of the turn.
    local answer err
    answer="$("$hylo" generate "$teacher" --chat --prompt "What is the capital of France?" --greedy \
               --max-new-tokens 48 --device "$dev" --dtype "$dt" 2>"$out/err.txt")"
    err="$(cat "$out/err.txt")"
    { echo "== chat $dev $dt"; echo "$answer"; echo "$err"; } >>"$out/generate.log"
    local ok="no Paris"
    [[ "$answer" == *Paris* ]] && ok="Paris"
    row "chat $dev $dt" "$ok: $(echo "$answer" | tr '\n' ' ' | cut -c1-70)"
    # Throughput: the long prompt, a fixed number of greedy tokens.
    local n=256
    [[ $dev == cpu ]] && n=64
    "$hylo" generate "$teacher" --prompt-file "$prompt_file" --greedy --ignore-eos --max-new-tokens $n \
      --device "$dev" --dtype "$dt" >/dev/null 2>"$out/err.txt"
    local rc=$?
    err="$(cat "$out/err.txt")"
    { echo "== throughput $dev $dt (rc $rc)"; echo "$err"; } >>"$out/generate.log"
    local s
    s="$(stat_field "$(grep prefill <<<"$err" | tail -n1)")"
    if [[ -n "$s" ]]; then
      bench_rows+=("$dev $dt $s")
    else
      bench_rows+=("$dev $dt failed - - - -")
      status=1
    fi
  done < <(tr ',' '\n' <<<"$configs")
  rm -f "$out/err.txt" "$prompt_file"
}

if [[ "$mode" != teacher || ! -x "$build/bin/hylo" ]]; then
  build_all || status=1
fi
if [[ "$mode" != teacher && $status -eq 0 ]]; then
  run_tests || status=1
fi
if [[ "$mode" != build-test ]]; then
  if [[ -z "$teacher" ]]; then
    row "generate (teacher)" "skipped: teacher GGUF not (yet) on this machine"
  elif [[ ! -x "$build/bin/hylo" ]]; then
    row "generate (teacher)" "skipped: no hylo binary"
  else
    run_generate
  fi
fi

# ---- the table ----------------------------------------------------------------------------------------------------
{
  echo
  echo "== hylo device check ($mode) =="
  for r in "${rows[@]}"; do printf '%-28s %s\n' "${r%%|*}" "${r#*|}"; done
  if ((${#bench_rows[@]})); then
    echo
    echo "hylo generate on $(basename "${teacher:-teacher}"), greedy, ~500-token prompt:"
    printf '%-6s %-5s %10s %14s %10s %14s %9s\n' device dtype prompt "prefill tok/s" decoded "decode tok/s" "ttft ms"
    for b in "${bench_rows[@]}"; do
      # shellcheck disable=SC2086
      printf '%-6s %-5s %10s %14s %10s %14s %9s\n' $b
    done
  fi
} | tee "$out/table.txt"
exit $status
