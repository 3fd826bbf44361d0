#!/usr/bin/env bash
# Host emulation of the paged GQA decode kernel (kernels/gqa_decode), as run.sh does for the gated delta kernels:
# the kernel's own source transformed by gqa_transform.py (never edited), compiled with g++ against emu_shim.h
# (each block as std::threads, barriers, shuffles through a buffer), checked by gqa_decode_check.cpp against the
# fp64 ATen form. Checks indexing, the split ranges, the shuffle / shared-memory / split merges and the launch
# plumbing -- not timing or memory ordering. A development aid; tests/cpp/kernels_gqa on a GPU is the acceptance.
#   bash scripts/dev/cuda_host_emu/run_gqa.sh      (needs build/cpu-release's libhylo_torch.a, libhylo_base.a)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${HYLO_EMU_DIR:-/tmp/hylo_cuda_host_emu_gqa}"
# shellcheck disable=SC1091
source "$root/scripts/env.sh" >/dev/null 2>&1
tp="$("$HYLO_VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
mkdir -p "$out"
python3 "$here/gqa_transform.py" "$root" "$out"
inc=(-I"$here/shim" -I"$out/src" -I"$root/src" -I"$tp/include" -I"$tp/include/torch/csrc/api/include"
     -I/usr/local/cuda/include)
fl=(-std=c++20 -O1 -D_GLIBCXX_USE_CXX11_ABI=1 -DHYLO_HAVE_CUDA=1 -include "$here/shim/emu_shim.h" -w)
k="$out/src/hylo/kernels"
srcs=("$k/gqa_decode/gqa_decode_cu.cpp" "$k/common/poison.cpp" "$here/gqa_decode_check.cpp")
for f in "${srcs[@]}"; do
  o="$out/$(basename "$f" .cpp).o"
  nice -n 19 g++ "${fl[@]}" "${inc[@]}" -c "$f" -o "$o" &
  while (( $(jobs -rp | wc -l) >= 2 )); do wait -n; done
done
wait
r="$root/build/cpu-release"
g++ -o "$out/gqa_decode_check" "$out/gqa_decode_check.o" "$out/gqa_decode_cu.o" "$out/poison.o" \
    "$r/libhylo_torch.a" "$r/libhylo_base.a" -L"$tp/lib" -Wl,-rpath,"$tp/lib" -ltorch -ltorch_cpu -lc10 \
    -L/usr/local/cuda/lib64 -lcudart -lpthread
"$out/gqa_decode_check"
