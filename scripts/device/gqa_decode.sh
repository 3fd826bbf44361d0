#!/usr/bin/env bash
# GPU check of the paged GQA decode kernel (src/hylo/kernels/gqa_decode) for little device time: the test binaries
# are the cuda-release ones built HERE (nvcc 13 + the venv's libtorch 2.11, the same torch as the GPU machine's
# python3), carried stripped with the one system library the machine may lack (yaml-cpp), and run THERE.
#
#   bash scripts/device/gqa_decode.sh stage DIR    here: after `cmake --build build/cuda-release --target
#                                                  test_kernels_gqa test_engine`, copy the binaries, libyaml-cpp and
#                                                  this script (as run.sh) to DIR (the lead's checkout's
#                                                  .devwork/<name>, which the device tool sends)
#   bash scripts/device/gqa_decode.sh run          THERE, from the carried folder: the kernel's tests, its timing
#                                                  (HYLO_GQA_DECODE_BENCH=1) and the engine's GPU test; logs in $OUT
# Device call: run(command="cd .devwork/gqadecode && bash run.sh run", carry=[".devwork/gqadecode"]).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

stage() {
  local dest="${1:?stage DIR}" root; root="$(cd "$here/../.." && pwd)"
  local bin="$root/build/cuda-release/bin"
  rm -rf "$dest" && mkdir -p "$dest" || return 1
  cp "$bin/test_kernels_gqa" "$bin/test_engine" "$dest/" || return 1
  strip "$dest"/test_*
  cp -L "$(ldconfig -p | awk '/libyaml-cpp.so.0.7 / {print $NF; exit}')" "$dest/" || return 1
  cp "$here/gqa_decode.sh" "$dest/run.sh"
  du -sh "$dest"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d:$tl:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=8
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
  local rc=0
  runtest() {  # LOG BINARY ARGS...: one test binary, its summary lines
    local log="$1"; shift
    echo "== $*"
    timeout "${HYLO_TEST_S:-240}" "$d/$1" --gtest_color=no "${@:2}" >"$out/$log" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran|Failure" "$out/$log" | head -30
  }
  runtest test_kernels_gqa.log test_kernels_gqa
  export HYLO_GQA_DECODE_BENCH=1
  runtest gqa_bench.log test_kernels_gqa --gtest_filter='*Bench*'
  unset HYLO_GQA_DECODE_BENCH
  grep BENCH "$out/gqa_bench.log"
  runtest test_engine_cuda.log test_engine --gtest_filter='*EngineCuda*'
  return $rc
}

case "$mode" in
  stage) stage "$@" ;;
  run) run_there "$@" ;;
  *) sed -n 2,12p "${BASH_SOURCE[0]}"; exit 2 ;;
esac
