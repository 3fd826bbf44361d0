#!/usr/bin/env bash
# `hylo bench` on the H200 for issue 9's acceptance (docs/benchmarks.md), in one device call: the hylo binary is
# built HERE with the cuda-release preset (nvcc 13 + the venv's libtorch 2.11, the device's torch), stripped and
# carried with the bench configs, the layer plans, yaml-cpp's runtime library, the peer script and fla's wheels;
# THERE the steps run in order of importance, each under a time limit cut from one deadline, so that a slow step
# costs the ones after it and not the whole call. Every step writes its JSON, SVG and markdown into $OUT.
#
#   bash scripts/device/engine_bench.sh build         here: build/cuda-release/bin/hylo and the carry folder
#                                                     .devwork/engine-bench/
#   bash scripts/device/engine_bench.sh stage DIR     here: copy the carry folder to DIR (the lead's checkout's
#                                                     .devwork/engine-cli, which the device tool sends)
#   bash scripts/device/engine_bench.sh run [SECONDS] THERE, from the carried folder; SECONDS: the deadline (420)
# Device call: run(command="cd .devwork/engine-cli && bash run.sh run 420", carry=[".devwork/engine-cli"],
#                  timeout_s=450)
# Steps: (1) SmolLM2-135M 6MLA24GDN vs its teacher, 8K and 1M (teacher 8K); (2) Llama-3.2-1B 4MLA12GDN vs the
# Llama-3.2-1B Transformer, 8K and 128K for both, 1M for the hybrid, batch 1 and 64 x 4K prompts for the hybrid;
# (3) the peer stack (shared/peers/peer_hybrid.py, fla 0.6.0) at 8K and 128K; (4) the hybrid's 2M prefill with
# whatever time is left. Random weights of the real shapes throughout (speed and memory depend on shapes only).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

build() {
  local root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  cmake --preset cuda-release >/dev/null || return 1
  cmake --build "$root/build/cuda-release" -j "${HYLO_JOBS:-2}" --target hylo || return 1
  local carry="$root/.devwork/engine-bench"
  rm -rf "$carry"; mkdir -p "$carry/configs" "$carry/plans" "$carry/whl"
  cp "$root/build/cuda-release/bin/hylo" "$carry/hylo" && strip "$carry/hylo"
  cp "$root"/bench/configs/*.json "$carry/configs/"
  cp "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" "$root/recipes/plans/llama3.2-1b-4mla12gdn.yaml" "$carry/plans/"
  cp -L /lib/x86_64-linux-gnu/libyaml-cpp.so.0.7 /lib/x86_64-linux-gnu/libpcre2-8.so.0 "$carry/"
  [[ -f "$root/../shared/peers/peer_hybrid.py" ]] && cp "$root/../shared/peers/peer_hybrid.py" "$carry/"
  cp "$HYLO_CACHE"/wheels/fla_core-0.6.0-*.whl "$HYLO_CACHE"/wheels/flash_linear_attention-0.6.0-*.whl \
    "$carry/whl/" 2>/dev/null || echo "note: no fla wheels in $HYLO_CACHE/wheels (the peer step will be skipped)"
  cp "$here/engine_bench.sh" "$carry/run.sh"
  git -C "$root" rev-parse --short HEAD > "$carry/commit.txt"
  du -sh "$carry"; ls -la "$carry"
}

stage() {
  local dst="${1:?stage DIR}" root; root="$(cd "$here/../.." && pwd)"
  rm -rf "$dst"; mkdir -p "$dst"; cp -r "$root/.devwork/engine-bench/." "$dst/"; du -sh "$dst"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}" budget="${1:-420}"; mkdir -p "$out"
  local start; start=$(date +%s)
  left() { echo $(( budget - ($(date +%s) - start) )); }
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d:$tl:$tl/../../nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  export OMP_NUM_THREADS=8
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "commit $(cat "$d/commit.txt")";
    date -u; } | tee "$out/machine.txt"
  # step NAME SECONDS ARGS...: one `hylo bench` under min(SECONDS, what is left); output in $out/NAME.*
  step() {
    local name="$1" want="$2"; shift 2
    local t; t=$(left); (( t > want )) && t=$want
    if (( t < 20 )); then echo "== $name: skipped, ${t}s left"; return; fi
    echo "== $name (limit ${t}s)"
    timeout --signal=INT --kill-after=10 "$t" "$d/hylo" bench "$@" --device cuda --json "$out/$name.json" \
      --svg "$out/$name.svg" --markdown "$out/$name.md" 2>&1 | grep -v '^\s*$' | tail -n 40
    echo "== $name: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start ))s since start"
  }
  local fast=(--prefill-chunk 16384 --max-step-tokens 16384)
  step smollm2 110 --random-config "$d/configs/smollm2-135m.json" --plan "$d/plans/smollm2-135m-6mla24gdn.yaml" \
    --contexts 8K,1M --teacher-contexts 8K --decode-tokens 256 "${fast[@]}"
  step llama1b 200 --random-config "$d/configs/llama3.2-1b.json" --plan "$d/plans/llama3.2-1b-4mla12gdn.yaml" \
    --contexts 8K,128K,1M --teacher-contexts 8K,128K --decode-tokens 256 --batch 1,64 --teacher-batch none \
    --batch-prompt 4K "${fast[@]}"
  if [[ -f "$d/peer_hybrid.py" ]] && ls "$d"/whl/*.whl >/dev/null 2>&1 && (( $(left) > 60 )); then
    echo "== peer (limit 50s)"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$d"/whl/*.whl \
      && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout 50 python3 "$d/peer_hybrid.py" 8192,131072 2>&1 \
      | tee "$out/peer.txt" | tail -n 12
  fi
  step llama1b-2m 400 --random-config "$d/configs/llama3.2-1b.json" --plan "$d/plans/llama3.2-1b-4mla12gdn.yaml" \
    --contexts 2M --teacher-contexts none --decode-tokens 16 "${fast[@]}"
  echo "== done, $(( $(date +%s) - start ))s"
}

case "$mode" in
  build) build ;;
  stage) stage "$@" ;;
  run) run_there "$@" ;;
  *) echo "usage: $0 build | stage DIR | run [SECONDS]" >&2; exit 2 ;;
esac
