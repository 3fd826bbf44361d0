#!/usr/bin/env bash
# Build/run loop for the fused attention path (src/hylo/ops/fused_attention.*) and the 64K KD step it enables,
# spending little device time: build HERE with the cuda-release preset (only test_attn_fast and bench/train_step),
# carry the stripped binaries, the Llama-1B plan and the non-torch shared libraries they need, run THERE.
#
#   bash scripts/device/fast_attn.sh build DIR    here: build, then fill DIR (e.g. /work/main/.devwork/fast-attn)
#   bash scripts/device/fast_attn.sh run [tests|kd64k|all]   THERE, from the carried folder; logs in $OUT
# Device call: run(command="cd .devwork/fast-attn && bash run.sh run all", carry=[".devwork/fast-attn"]).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

build() {
  local dest="${1:?build DIR}" root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  cmake --preset cuda-release >/dev/null || return 1
  cmake --build "$root/build/cuda-release" -j "${HYLO_JOBS:-2}" --target test_attn_fast train_step || return 1
  rm -rf "$dest" && mkdir -p "$dest/lib" || return 1
  local b
  for b in "$root"/build/cuda-release/bin/test_attn_fast "$root"/build/cuda-release/bench/train_step; do
    [[ -x "$b" ]] || b="$(find "$root/build/cuda-release" -name "$(basename "$b")" -type f -perm -u+x | head -n1)"
    cp "$b" "$dest/" && strip "$dest/$(basename "$b")"
  done
  # Shared libraries other than torch/CUDA/system ones (yaml-cpp, pcre2, ...): the GPU machine may lack them.
  ldd "$dest/train_step" "$dest/test_attn_fast" | awk '/=> \//{print $3}' | sort -u |
    grep -vE "torch|c10|cuda|cudnn|cublas|nccl|nvrtc|nvToolsExt|/libc\.|/libm\.|libstdc|libgcc|ld-linux|pthread|libdl|librt|gomp" |
    while read -r l; do cp -L "$l" "$dest/lib/"; done
  cp "$root/recipes/plans/llama3.2-1b-4mla12gdn.yaml" "$dest/"
  cp "$here/fast_attn.sh" "$dest/run.sh"
  du -sh "$dest"; ls -la "$dest" "$dest/lib"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d/lib:$tl:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=4
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
  local what="${1:-all}" rc=0
  if [[ "$what" == tests || "$what" == all ]]; then
    timeout "${HYLO_TEST_S:-90}" "$d/test_attn_fast" --gtest_color=no >"$out/test_attn_fast.log" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests ran|Failure|fused .*eager|extra peak" "$out/test_attn_fast.log" |
      head -n 60
  fi
  if [[ "$what" == kd64k || "$what" == all ]]; then
    timeout "${HYLO_BENCH_S:-200}" "$d/train_step" --device cuda --pair llama1b-8b --seq 65536 --steps 1 --phases \
      --plan "$d/llama3.2-1b-4mla12gdn.yaml" 2>&1 | tee "$out/train_step_64k.log" || rc=1
  fi
  return $rc
}

case "$mode" in
  build) build "$@" ;;
  run) run_there "$@" ;;
  *) sed -n 2,8p "${BASH_SOURCE[0]}"; exit 2 ;;
esac
