#!/usr/bin/env bash
# The build/test/bench loop for the CUDA kernels (src/hylo/kernels), made to spend little device time:
# compile HERE (nvcc 13 + the venv's libtorch 2.11, the same torch as the GPU machine's python3), carry the
# stripped binaries, run them THERE. Only the files the kernel tests and benchmarks need are compiled (the
# kernels, the ATen ops they are checked against, hylo_base for tensor_util's helpers), not the whole project:
# with the cuda-release preset every hylo_torch file would rebuild (HYLO_HAVE_CUDA changes their flags).
#
#   bash scripts/device/kernels.sh build [TESTS...]   here: objects and binaries under build/kernels-dev/, then
#                                                     a carry folder .devwork/kernels-bin/ (binaries, fla wheels,
#                                                     bench driver). TESTS: test folders (default kernels_gdn).
#   bash scripts/device/kernels.sh stage DIR           here: copy that carry folder into DIR (e.g. the lead's
#                                                     checkout /work/main/.devwork/<name>), which the device tool sends.
#   bash scripts/device/kernels.sh run [--no-bench]    THERE (device tool), from the carried folder: runs every
#                                                     carried test binary, then bench/gdn_kernels_bench.py (our binary
#                                                     + fla 0.6.0 from the carried wheels + ceilings); logs in $OUT.
#                                      [--bench-only]  the benchmark alone (when tests and bench together would pass
#                                                     the device tool's 10 minutes a command).
# Example device call (from the lead's checkout, after `stage /work/main/.devwork/kernels`):
#   run(command="cd .devwork/kernels && bash run.sh", carry=[".devwork/kernels"])
# where run.sh is this script copied by `stage` (so the carried folder is self-contained).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

build() {
  local root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  local py="$HYLO_VENV/bin/python"
  local tp; tp="$("$py" -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
  local bd="$root/build/kernels-dev" jobs="${HYLO_JOBS:-2}"
  mkdir -p "$bd/obj"
  # hylo_base (core/io/config, no libtorch) from the cpu-release preset: tensor_util.cpp needs io/.
  if [[ ! -f "$root/build/cpu-release/libhylo_base.a" ]]; then
    cmake --preset cpu-release >/dev/null && cmake --build "$root/build/cpu-release" -j "$jobs" --target hylo_base || return 1
  fi
  local inc=(-I"$root/src" -I"$tp/include" -I"$tp/include/torch/csrc/api/include")
  local defs=(-DHYLO_HAVE_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=1)
  local cu=() cpp=()
  mapfile -t cu < <(find "$root/src/hylo/kernels" -name '*.cu' | sort)
  mapfile -t cpp < <(find "$root/src/hylo/kernels" -name '*.cpp' | sort)
  cpp+=("$root/src/hylo/ops/gated_delta.cpp" "$root/src/hylo/ops/causal_conv1d.cpp" "$root/src/hylo/ops/tensor_util.cpp")
  [[ -f "$root/src/hylo/ops/ssd.cpp" ]] && cpp+=("$root/src/hylo/ops/ssd.cpp")  # bench/ssd_kernels_bench links against it
  local tests=("${@:-kernels_gdn}") t
  local objs=() pids=() f o
  compile() {  # compile SRC OBJ, unless OBJ is newer than SRC and every project header it included (OBJ.d)
    local src="$1" obj="$2"
    if [[ -f "$obj" && -f "$obj.d" && "$obj" -nt "$src" ]]; then
      local dep stale=0
      for dep in $(sed -e 's/\\$//' -e 's/^[^:]*://' "$obj.d" | tr ' ' '\n' | grep "^$root/"); do
        [[ "$dep" -nt "$obj" ]] && { stale=1; break; }
      done
      ((stale)) || return 0
    fi
    if [[ "$src" == *.cu ]]; then
      nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v --expt-relaxed-constexpr \
        -MD -MF "$obj.d" "${inc[@]}" "${defs[@]}" -c "$src" -o "$obj" >"$obj.log" 2>&1
    else
      g++ -std=c++20 -O2 -fPIC -MMD -MF "$obj.d" "${inc[@]}" "${defs[@]}" -I/usr/local/cuda/include \
        -c "$src" -o "$obj" >"$obj.log" 2>&1
    fi || { echo "FAILED: $src"; grep -E "error" "$obj.log" | head -n 20; return 1; }
  }
  for f in "${cu[@]}" "${cpp[@]}"; do
    o="$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"
    objs+=("$o")
    compile "$f" "$o" & pids+=($!)
    while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
  done
  local ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  ((ok)) || return 1
  local libs=(-L"$tp/lib" -Wl,-rpath,'$ORIGIN' -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10
              -L/usr/local/cuda/lib64 -lcudart "$root/build/cpu-release/libhylo_base.a")
  for t in "${tests[@]}"; do
    local tobjs=() pids=()
    for f in "$root"/tests/cpp/"$t"/*_test.cpp; do
      o="$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"; tobjs+=("$o")
      compile "$f" "$o" & pids+=($!)
      while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
    done
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    ((ok)) || return 1
    g++ -o "$bd/test_$t" "${tobjs[@]}" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" \
      -lgtest_main -lgtest -lpthread || return 1
  done
  for f in "$root"/bench/*_kernels_bench.cpp; do
    [[ -f "$f" ]] || continue
    o="$bd/obj/$(echo "${f#"$root"/}" | tr '/' '_').o"
    compile "$f" "$o" || return 1
    g++ -o "$bd/$(basename "${f%.cpp}")" "$o" "${objs[@]}" -Wl,--no-as-needed -lstdc++ "${libs[@]}" || return 1
  done
  # The carry folder: stripped binaries, the fla wheels, the bench driver and this script as run.sh.
  local carry="$root/.devwork/kernels-bin"
  rm -rf "$carry"; mkdir -p "$carry/whl"
  for f in "$bd"/test_* "$bd"/*_kernels_bench; do [[ -x "$f" ]] && cp "$f" "$carry/" && strip "$carry/$(basename "$f")"; done
  cp "$root"/bench/*_kernels_bench.py "$carry/" 2>/dev/null || true
  cp "$here/kernels.sh" "$carry/run.sh"
  if ! ls "$HYLO_CACHE"/wheels/fla_core-0.6.0-*.whl >/dev/null 2>&1; then
    mkdir -p "$HYLO_CACHE/wheels"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$HYLO_CACHE/wheels" fla-core==0.6.0 flash-linear-attention==0.6.0 || true
  fi
  cp "$HYLO_CACHE"/wheels/fla_core-0.6.0-*.whl "$HYLO_CACHE"/wheels/flash_linear_attention-0.6.0-*.whl "$carry/whl/" 2>/dev/null || true
  du -sh "$carry"; ls -la "$carry"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  # libtorch from the machine's python3; libcudart from the CUDA toolkit or the nvidia-cuda-runtime wheel.
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  local rt; rt="$(python3 -c 'import nvidia.cuda_runtime as m,os;print(os.path.join(list(m.__path__)[0],"lib"))' 2>/dev/null)"
  export LD_LIBRARY_PATH="$d:$tl:${rt:+$rt:}/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  export OMP_NUM_THREADS=4
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$out/machine.txt"
  local rc=0 t
  for t in "$d"/test_*; do
    [[ "${1:-}" == --bench-only ]] && break
    echo "== $(basename "$t")"
    "$t" --gtest_color=no >"$out/$(basename "$t").log" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests ran" "$out/$(basename "$t").log"
  done
  if [[ "${1:-}" != --no-bench && -f "$d/gdn_kernels_bench.py" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$d"/whl/*.whl \
      >/dev/null 2>&1 || echo "fla wheels failed to install"
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout "${HYLO_BENCH_S:-300}" python3 "$d/gdn_kernels_bench.py" \
      --ours "$d/gdn_kernels_bench" 2>&1 | tee "$out/bench.log" || rc=1
  fi
  return $rc
}

case "$mode" in
  build) build "$@" ;;
  stage)
    dest="${1:?stage DIR}"
    src="$(cd "$here/../.." && pwd)/.devwork/kernels-bin"
    rm -rf "$dest" && mkdir -p "$dest" && cp -a "$src/." "$dest/" && du -sh "$dest" ;;
  run) run_there "$@" ;;
  *) sed -n 2,20p "${BASH_SOURCE[0]}"; exit 2 ;;
esac
