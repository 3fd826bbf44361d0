#!/usr/bin/env bash
# Host emulation of the CUDA SSD kernels (src/hylo/kernels/ssd), for sessions without a GPU: the kernels' own
# source (copied by ssd_transform.py, never edited) compiled with g++ against shim/emu_shim.h (each block as
# std::threads, barriers, warp shuffles through a buffer), run on CPU tensors against ssd_naive in fp64. It checks
# the indexing, the chunk/tail bookkeeping, the synchronisation inside a block and the launch plumbing -- not
# timing, not the real warp schedule. A development aid, not a test: tests/cpp/kernels_ssd on the GPU is the
# acceptance. Keep shapes small (every block starts 128-256 threads).
#   bash scripts/dev/cuda_host_emu/ssd_run.sh [B T H P N G Gc WITH_STATE f32|bf16]
#   (the backward alone: HYLO_EMU_BWD=1 ... ssd_run.sh B T H P N G Gc WITH_STATE WITH_D WITH_DFINAL f32|bf16)
# Needs build/cpu-release (libhylo_torch.a, libhylo_base.a) built first (or HYLO_BUILD_DIR naming another CPU
# build). Not a CTest: about 5 minutes on 2 cores would push `make test` past its 30-minute budget.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${HYLO_EMU_DIR:-/tmp/hylo_cuda_host_emu_ssd}"
# shellcheck disable=SC1091
source "$root/scripts/env.sh" >/dev/null 2>&1
tp="$("$HYLO_VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
mkdir -p "$out"
python3 "$here/ssd_transform.py" "$root" "$out"
inc=(-I"$here/shim" -I"$out/src" -I"$root/src" -I"$root/tests/cpp/mamba2" -I"$tp/include"
     -I"$tp/include/torch/csrc/api/include" -I/usr/local/cuda/include)
fl=(-std=c++20 -O1 -D_GLIBCXX_USE_CXX11_ABI=1 -DHYLO_HAVE_CUDA=1 -include "$here/shim/emu_shim.h" -w)
k="$out/src/hylo/kernels"
srcs=("$k/ssd/ssd_step_cu.cpp" "$k/ssd/ssd_chunk_cu.cpp" "$k/ssd/ssd_chunk_bwd_cu.cpp" "$k/ssd/ssd_autograd.cpp"
      "$k/common/poison.cpp" "$here/ssd_check.cpp" "$here/ssd_bwd_check.cpp")
for f in "${srcs[@]}"; do
  o="$out/$(basename "$f" .cpp).o"
  [[ -f "$o" && "$o" -nt "$f" && "$o" -nt "$here/shim/emu_shim.h" ]] ||
    nice -n 19 g++ "${fl[@]}" "${inc[@]}" -c "$f" -o "$o" &
  while (( $(jobs -rp | wc -l) >= 2 )); do wait -n; done
done
wait
r="${HYLO_BUILD_DIR:-$root/build/cpu-release}"  # libhylo_torch.a, libhylo_base.a of a CPU build
kobj=("$out/ssd_step_cu.o" "$out/ssd_chunk_cu.o" "$out/ssd_chunk_bwd_cu.o" "$out/ssd_autograd.o" "$out/poison.o")
libs=("$r/libhylo_torch.a" "$r/libhylo_base.a" -L"$tp/lib" -Wl,-rpath,"$tp/lib" -ltorch -ltorch_cpu -lc10
      -L/usr/local/cuda/lib64 -lcudart -lpthread)
g++ -o "$out/ssd_check" "$out/ssd_check.o" "${kobj[@]}" "${libs[@]}"
g++ -o "$out/ssd_bwd_check" "$out/ssd_bwd_check.o" "${kobj[@]}" "${libs[@]}"
if (( $# )); then
  if [[ "${HYLO_EMU_BWD:-0}" == 1 ]]; then "$out/ssd_bwd_check" "$@"; else "$out/ssd_check" "$@"; fi
else
  # Lengths 1, chunk-1, chunk+1 and an odd multi-chunk tail; both d_state values; odd P/N; group layouts.
  for c in "1 1 2 64 64 1 2 1 f32" "1 63 2 64 64 1 2 0 f32" "2 65 2 64 128 2 2 1 bf16" "1 130 3 48 32 3 1 1 f32" \
           "1 129 2 128 128 1 2 1 f32" "1 70 2 20 16 1 1 1 f32"; do
    echo "== B T H P N G Gc state dtype: $c"
    # shellcheck disable=SC2086
    "$out/ssd_check" $c
  done
  # The backward: lengths 1, chunk-1, chunk+1, an odd multi-chunk tail; with/without D, state, final gradient.
  for c in "1 1 2 64 64 1 2 1 1 1 f32" "1 63 2 64 64 1 2 0 1 0 f32" "2 65 2 64 128 2 2 1 0 1 bf16" \
           "1 130 3 48 32 3 1 1 1 1 f32" "1 129 2 128 128 1 2 1 1 0 f32" "1 70 4 20 16 2 4 0 0 1 f32"; do
    echo "== backward B T H P N G Gc state D d_final dtype: $c"
    # shellcheck disable=SC2086
    "$out/ssd_bwd_check" $c
  done
fi
