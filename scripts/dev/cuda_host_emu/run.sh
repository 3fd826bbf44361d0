#!/usr/bin/env bash
# Host emulation of the CUDA chunked gated delta kernels, for sessions without a GPU: the kernels' own source
# (transformed by transform.py, never edited) compiled with g++ against emu_shim.h, which runs each block as 256
# std::threads (barriers for __syncthreads/__syncwarp, warp shuffles through a buffer) and WMMA as whole-tile
# products per lane (shim/mma.h; bf16 operands, fp32 accumulation). It checks indexing, synchronisation between
# the block's threads, tile bookkeeping and the launch/autograd plumbing -- not timing, not the real fragment layouts,
# not asynchronous-copy ordering (copies land at issue). A development aid, not a test: the GPU tests in
# tests/cpp/kernels_gdn are the acceptance. Slow (minutes per case on 2 cores): keep shapes small.
#   bash scripts/dev/cuda_host_emu/run.sh [B T H Dk Dv SEGMENTS WITH_STATE WITH_D_FINAL]
# Needs build/cpu-release (libhylo_torch.a, libhylo_base.a) built first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${HYLO_EMU_DIR:-/tmp/hylo_cuda_host_emu}"
# shellcheck disable=SC1091
source "$root/scripts/env.sh" >/dev/null 2>&1
tp="$("$HYLO_VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
mkdir -p "$out"
python3 "$here/transform.py" "$root" "$out"
inc=(-I"$here/shim" -I"$out/src" -I"$root/src" -I"$root/tests/cpp/gdn" -I"$tp/include"
     -I"$tp/include/torch/csrc/api/include" -I/usr/local/cuda/include)
fl=(-std=c++20 -O1 -D_GLIBCXX_USE_CXX11_ABI=1 -DHYLO_HAVE_CUDA=1 -include "$here/shim/emu_shim.h" -w)
k="$out/src/hylo/kernels"
srcs=("$k/gated_delta/gated_delta_chunk_cu.cpp" "$k/gated_delta/gated_delta_chunk_bwd_cu.cpp"
      "$k/gated_delta/gated_delta_autograd.cpp" "$k/common/poison.cpp" "$here/gdn_chunk_check.cpp"
      "$here/gdn_autograd_check.cpp")
for f in "${srcs[@]}"; do
  o="$out/$(basename "$f" .cpp).o"
  [[ -f "$o" && "$o" -nt "$f" && "$o" -nt "$here/shim/emu_shim.h" ]] || nice -n 19 g++ "${fl[@]}" "${inc[@]}" -c "$f" -o "$o" &
  while (( $(jobs -rp | wc -l) >= 2 )); do wait -n; done
done
wait
r="$root/build/cpu-release"
libs=("$r/libhylo_torch.a" "$r/libhylo_base.a" -L"$tp/lib" -Wl,-rpath,"$tp/lib" -ltorch -ltorch_cpu -lc10
      -L/usr/local/cuda/lib64 -lcudart -lpthread)
kobj=("$out/gated_delta_chunk_cu.o" "$out/gated_delta_chunk_bwd_cu.o" "$out/gated_delta_autograd.o" "$out/poison.o")
g++ -o "$out/gdn_chunk_check" "$out/gdn_chunk_check.o" "${kobj[@]}" "${libs[@]}"
g++ -o "$out/gdn_autograd_check" "$out/gdn_autograd_check.o" "${kobj[@]}" "${libs[@]}"
if (( $# )); then
  "$out/gdn_chunk_check" "$@"
else
  # The last four: several 64-row blocks of the state walk and value tiles of the output (Dv 128 / 192), one chunk,
  # two chunks in two segments, an odd chunk count with Dk 256.
  for c in "1 130 1 64 64 1 1 1" "1 130 1 64 64 3 1 1" "2 70 2 128 128 1 1 0" "1 65 1 256 64 1 0 1" \
           "1 200 1 64 192 1 1 0" "1 64 1 128 128 1 1 0" "1 128 1 64 128 2 1 1" "1 129 1 256 128 1 1 0"; do
    echo "== B T H Dk Dv P state d_final: $c"
    # shellcheck disable=SC2086
    "$out/gdn_chunk_check" $c
  done
  "$out/gdn_autograd_check"
fi
