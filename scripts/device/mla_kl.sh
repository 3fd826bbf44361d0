#!/usr/bin/env bash
# Build/test/bench loop for the MLA latent decode and fused KL kernels (src/hylo/kernels/mla_decode,
# kl_from_hidden), spending little device time: compile HERE (nvcc 13 + the venv's libtorch 2.11, the same torch
# as the GPU machine's python3) only what the tests and benchmarks need, carry the stripped binaries, run THERE.
# (The cuda-release preset would rebuild every hylo_torch file: HYLO_HAVE_CUDA changes their flags.)
#
#   bash scripts/device/mla_kl.sh build        here: objects under build/mla-kl-dev/, binaries copied into the
#                                              carry folder .devwork/mla-kl-bin/ (with this script as run.sh)
#   bash scripts/device/mla_kl.sh run [tests|bench|all]   THERE, from the carried folder; logs in $OUT
# Device call: run(command="cd .devwork/mla-kl-bin && bash run.sh all", carry=[".devwork/mla-kl-bin"]) after
# copying the folder into the lead's checkout (/work/main/.devwork/mla-kl-bin).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

build() {
  local root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  local tp; tp="$("$HYLO_VENV/bin/python" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
  local bd="$root/build/mla-kl-dev" jobs="${HYLO_JOBS:-2}"
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
  local lib_srcs=("$root"/src/hylo/kernels/mla_decode/*.cu "$root"/src/hylo/kernels/kl_from_hidden/*.cu
                  "$root"/src/hylo/kernels/kl_from_hidden/*.cpp "$root/src/hylo/ops/mla.cpp"
                  "$root/src/hylo/ops/tensor_util.cpp")
  local test_srcs=("$root"/tests/cpp/kernels_mla/*_test.cpp)
  local bench_srcs=("$root"/bench/mla_*.cpp "$root"/bench/kl_*.cpp)
  local f o ok=1 objs=() tobjs=()
  for f in "${lib_srcs[@]}" "${test_srcs[@]}" "${bench_srcs[@]}"; do
    o="$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"
    compile "$f" "$o" &
    while (( $(jobs -rp | wc -l) >= jobs )); do wait -n || ok=0; done
  done
  while (( $(jobs -rp | wc -l) > 0 )); do wait -n || ok=0; done
  ((ok)) || return 1
  for f in "${lib_srcs[@]}"; do objs+=("$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"); done
  for f in "${test_srcs[@]}"; do tobjs+=("$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"); done
  local libs=(-L"$tp/lib" -Wl,-rpath,'$ORIGIN' -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10
              -L/usr/local/cuda/lib64 -lcudart "$root/build/cpu-release/libhylo_base.a")
  g++ -o "$bd/test_kernels_mla" "${tobjs[@]}" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" \
    /usr/lib/x86_64-linux-gnu/libgtest_main.a /usr/lib/x86_64-linux-gnu/libgtest.a -lpthread || return 1
  for f in "${bench_srcs[@]}"; do
    o="$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"
    g++ -o "$bd/$(basename "${f%.cpp}")" "$o" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" || return 1
  done
  local carry="$root/.devwork/mla-kl-bin"
  rm -rf "$carry"; mkdir -p "$carry"
  cp "$bd/test_kernels_mla" "$bd/mla_decode_bench" "$bd/kl_from_hidden_bench" "$carry/"
  strip "$carry"/*
  cp "$here/mla_kl.sh" "$carry/run.sh"
  du -sh "$carry"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d:$tl:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=4
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$out/machine.txt"
  local what="${1:-all}" rc=0
  if [[ "$what" == tests || "$what" == all ]]; then
    timeout "${HYLO_TEST_S:-240}" "$d/test_kernels_mla" --gtest_color=no >"$out/test_kernels_mla.log" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests ran|Failure|error" "$out/test_kernels_mla.log" | head -40
  fi
  if [[ "$what" == bench || "$what" == all ]]; then
    timeout "${HYLO_BENCH_S:-150}" "$d/mla_decode_bench" 2>&1 | tee "$out/mla_decode_bench.log" || rc=1
    timeout "${HYLO_BENCH_S:-150}" "$d/kl_from_hidden_bench" 2>&1 | tee "$out/kl_from_hidden_bench.log" || rc=1
  fi
  return $rc
}

case "$mode" in
  build) build "$@" ;;
  run) run_there "$@" ;;
  *) sed -n 2,12p "${BASH_SOURCE[0]}"; exit 2 ;;
esac
