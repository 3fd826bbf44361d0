#!/usr/bin/env bash
# Build/test/bench loop for the paged MLA latent decode (src/hylo/kernels/mla_decode) and the decode CUDA graphs
# (src/hylo/infer/engine/cuda_graphs), spending little device time: compile HERE (nvcc 13 + the venv's libtorch
# 2.11, the same torch as the GPU machine's python3) only what the tests and the benchmark need, carry the stripped
# binaries, run THERE. (The cuda-release preset would rebuild every hylo_torch file: HYLO_HAVE_CUDA changes their
# flags.)
#
#   bash scripts/device/gpu_decode.sh build         here: objects under build/gpu-decode-dev/, binaries and this
#                                                   script (as run.sh) in the carry folder .devwork/gpu-decode-bin/
#   bash scripts/device/gpu_decode.sh stage DIR     here: copy the carry folder to DIR (the lead's checkout's
#                                                   .devwork/<name>, which the device tool sends)
#   bash scripts/device/gpu_decode.sh run [tests|bench|all]   THERE, from the carried folder; logs in $OUT
# Device call: run(command="cd .devwork/gpu-decode && bash run.sh run all", carry=[".devwork/gpu-decode"]).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

build() {
  local root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  local tp; tp="$("$HYLO_VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
  local bd="$root/build/gpu-decode-dev" jobs="${HYLO_JOBS:-2}"
  mkdir -p "$bd/obj"
  if [[ ! -f "$root/build/cpu-release/libhylo_base.a" ]]; then
    cmake --preset cpu-release >/dev/null && cmake --build "$root/build/cpu-release" -j "$jobs" --target hylo_base || return 1
  fi
  local inc=(-I"$root/src" -I"$tp/include" -I"$tp/include/torch/csrc/api/include")
  local defs=(-DHYLO_HAVE_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=1)
  compile() {  # SRC OBJ, skipped when the object is newer than the source and every header under src/
    local src="$1" obj="$2"
    if [[ -f "$obj" && "$obj" -nt "$src" && -z "$(find "$root/src" -name '*.h' -newer "$obj" | head -n1)" ]]; then return 0; fi
    if [[ "$src" == *.cu ]]; then
      nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v --expt-relaxed-constexpr \
        "${inc[@]}" "${defs[@]}" -c "$src" -o "$obj" >"$obj.log" 2>&1
    else
      g++ -std=c++20 -O2 -fPIC "${inc[@]}" "${defs[@]}" -I/usr/local/cuda/include -c "$src" -o "$obj" >"$obj.log" 2>&1
    fi || { echo "FAILED: $src"; grep -E "error" "$obj.log" | head -n 20; return 1; }
  }
  local lib_srcs=("$root"/src/hylo/kernels/mla_decode/*.cu "$root/src/hylo/ops/mla.cpp"
                  "$root/src/hylo/ops/tensor_util.cpp" "$root/src/hylo/infer/engine/cuda_graphs.cpp")
  local mla_tests=("$root/tests/cpp/kernels_mla/mla_decode_test.cpp" "$root/tests/cpp/kernels_mla/mla_decode_paged_test.cpp")
  local graph_tests=("$root"/tests/cpp/engine_graphs/*_test.cpp)
  local bench_srcs=("$root/bench/mla_decode_bench.cpp")
  local f o ok=1 objs=()
  obj_of() { echo "$bd/obj/$(echo "${1#"$root"/}" | tr '/' '_').o"; }
  for f in "${lib_srcs[@]}" "${mla_tests[@]}" "${graph_tests[@]}" "${bench_srcs[@]}"; do
    compile "$f" "$(obj_of "$f")" &
    while (( $(jobs -rp | wc -l) >= jobs )); do wait -n || ok=0; done
  done
  while (( $(jobs -rp | wc -l) > 0 )); do wait -n || ok=0; done
  ((ok)) || return 1
  for f in "${lib_srcs[@]}"; do objs+=("$(obj_of "$f")"); done
  local libs=(-L"$tp/lib" -Wl,-rpath,'$ORIGIN' -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10
              -L/usr/local/cuda/lib64 -lcudart "$root/build/cpu-release/libhylo_base.a")
  local gtest=(/usr/lib/x86_64-linux-gnu/libgtest_main.a /usr/lib/x86_64-linux-gnu/libgtest.a -lpthread)
  link_test() {  # NAME SRC...
    local name="$1" tobjs=(); shift
    for f in "$@"; do tobjs+=("$(obj_of "$f")"); done
    g++ -o "$bd/$name" "${tobjs[@]}" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" "${gtest[@]}"
  }
  link_test test_mla_decode "${mla_tests[@]}" || return 1
  link_test test_engine_graphs "${graph_tests[@]}" || return 1
  g++ -o "$bd/mla_decode_bench" "$(obj_of "${bench_srcs[0]}")" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" || return 1
  local carry="$root/.devwork/gpu-decode-bin"
  rm -rf "$carry"; mkdir -p "$carry"
  cp "$bd/test_mla_decode" "$bd/test_engine_graphs" "$bd/mla_decode_bench" "$carry/"
  strip "$carry"/*
  cp "$here/gpu_decode.sh" "$carry/run.sh"
  du -sh "$carry"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d:$tl:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=8
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$out/machine.txt"
  local what="${1:-all}" rc=0
  runtest() {  # NAME FILTER LOG: one test binary, its summary lines
    echo "== $1 $2"
    timeout "${HYLO_TEST_S:-120}" "$d/$1" --gtest_color=no --gtest_filter="$2" >"$out/$3" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests? ran|Failure" "$out/$3" | head -30
  }
  # Cheapest and newest first, so a short lease still returns the paged kernel's results and its figures.
  if [[ "$what" == tests || "$what" == all ]]; then
    runtest test_engine_graphs '*' test_engine_graphs.log
    runtest test_mla_decode 'MlaDecodePaged*' test_mla_decode_paged.log
  fi
  if [[ "$what" == bench || "$what" == all ]]; then
    timeout "${HYLO_BENCH_S:-90}" "$d/mla_decode_bench" --paged 2>&1 | tee "$out/mla_decode_bench_paged.log" || rc=1
  fi
  if [[ "$what" == tests || "$what" == all ]]; then
    runtest test_mla_decode 'MlaDecodeKernel*' test_mla_decode_contiguous.log
  fi
  return $rc
}

case "$mode" in
  build) build "$@" ;;
  stage)
    dest="${1:?stage DIR}"
    src="$(cd "$here/../.." && pwd)/.devwork/gpu-decode-bin"
    rm -rf "$dest" && mkdir -p "$dest" && cp -a "$src/." "$dest/" && du -sh "$dest" ;;
  run) run_there "$@" ;;
  *) sed -n 2,15p "${BASH_SOURCE[0]}"; exit 2 ;;
esac
