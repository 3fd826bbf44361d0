#!/usr/bin/env bash
# On the GPU machine (device tool): configure the cuda-release preset as scripts/device/check.sh does, build only
# bench/train_step, and run the KD-step measurements of docs/benchmarks.md ("KD training step"). Logs to $OUT.
#   bash bench/train_step_gpu.sh [quick|extra]   quick: the SmolLM2 rows only; extra: SmolLM2 ILD at 2K and the
#                                                Llama-1B/8B pair at 16K
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/out/device}"
mkdir -p "$out"
build="${HYLO_BENCH_BUILD:-/tmp/hylo-train-step-build}"   # outside the carried tree: kept while the machine is warm
args=(--preset cuda-release -B "$build" -DHYLO_PYTHON=python3 -DHYLO_TESTS=OFF)
deps="${HYLO_DEPS:-$root/.deps}"
if ! pkg-config --exists libpcre2-8 2>/dev/null && [[ ! -f /usr/include/pcre2.h ]]; then
  args+=(-DPCRE2_INCLUDE_DIR="$deps/include")
fi
if [[ ! -f /usr/include/yaml-cpp/yaml.h && -d "$deps/yaml-cpp" ]]; then
  args+=(-Dyaml-cpp_DIR="$(dirname "$(find "$deps/yaml-cpp" -name yaml-cpp-config.cmake | head -n1)")")
  export LD_LIBRARY_PATH="$(dirname "$(find "$deps/yaml-cpp" -name 'libyaml-cpp.so*' | head -n1)"):${LD_LIBRARY_PATH:-}"
fi
t0=$SECONDS
cmake "${args[@]}" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target train_step >>"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
echo "built in $((SECONDS - t0)) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
bin="$build/bench/train_step"
[[ -x "$bin" ]] || bin="$(find "$build" -name train_step -type f -perm -u+x | head -n1)"
run() { echo "== train_step $* (t=${SECONDS}s)"; timeout 200 "$bin" --device cuda "$@" 2>&1 | tee -a "$out/train_step.log"; }
if [[ "${1:-}" == extra ]]; then
  run --pair smollm2 --seq 2048 --steps 3 --ild
  run --pair llama1b-8b --seq 16384 --steps 1
  exit 0
fi
run --pair smollm2 --seq 2048 --steps 3
run --pair smollm2 --seq 16384 --steps 2
run --pair smollm2 --seq 16384 --kl-only
# The 64K pair only when the call has time left for it (the device tool stops a call at 600 s).
if [[ "${1:-}" != quick ]] && (( SECONDS < 380 )); then run --pair llama1b-8b --seq 65536 --steps 1; else echo "64K run skipped (${SECONDS} s used)"; fi
