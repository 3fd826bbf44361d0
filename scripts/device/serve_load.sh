#!/usr/bin/env bash
# GPU load test of `hylo serve`, spending little device time: the hylo binary built HERE (cpu-release preset: the
# ATen reference path; the venv's torch 2.11.0+cu130 equals the GPU machine's, so --device cuda works), the Debian
# libraries it links that the GPU machine lacks (yaml-cpp, cpp-httplib + brotli, OpenSSL) and a tokenizer are carried; THERE a random-weight Llama of
# SmolLM2-135M's shape (30 layers, width 576, 9/3 heads) with the Llama-3.2 tokenizer is written with torch alone,
# served on the GPU, and bench/serve_load.py drives it.
#
#   bash scripts/device/serve_load.sh stage DIR   here: binary, libraries, tokenizer, scripts into DIR
#                                                 (the lead's checkout's .devwork/<name>, which the device tool sends)
#   bash scripts/device/serve_load.sh run [llama|hybrid]   THERE, from the carried folder; report JSON in $OUT.
#                                                 hybrid: the random Llama upcycled THERE by the SmolLM2 plan
#                                                 (6 MLA + 24 Gated DeltaNet layers) is served instead
# Device call: run(command="cd .devwork/serve && bash run.sh run", carry=[".devwork/serve"]).
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

stage() {
  local root; root="$(cd "$here/../.." && pwd)"
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  local dst="$1"
  rm -rf "$dst" && mkdir -p "$dst/lib" "$dst/tokenizer"
  cp "$root/build/cpu-release/bin/hylo" "$dst/hylo" && strip "$dst/hylo"
  local l
  for l in libyaml-cpp.so.0.7 libpcre2-8.so.0 libcpp-httplib.so.0.11 libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1 libssl.so.3 libcrypto.so.3; do
    cp -L "$(ldconfig -p | awk -v n="$l" '$1 == n {print $NF; exit}')" "$dst/lib/$l" || return 1
  done
  cp "$HYLO_DATA/tokenizers/llama3_2/tokenizer.json" "$HYLO_DATA/tokenizers/llama3_2/tokenizer_config.json" "$dst/tokenizer/"
  cp "$root/bench/serve_load.py" "$root/scripts/device/random_llama.py" \
    "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" "$dst/"
  cp "$here/serve_load.sh" "$dst/run.sh"
  du -sh "$dst"
}

run_there() {
  local d; d="$(pwd)"
  local out="${OUT:-$d/out}"; mkdir -p "$out"
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$d/lib:$tl:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=8
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
  python3 "$d/random_llama.py" "$d/model" "$d/tokenizer" || return 1
  local model="$d/model" name=random-smollm2-shape
  if [[ "${1:-llama}" == hybrid ]]; then
    "$d/hylo" upcycle "$d/model" --plan "$d/smollm2-135m-6mla24gdn.yaml" --out "$d/hybrid" --calibration-tokens 0 \
      --no-progress --dtype bf16 2>&1 | tail -n 2 || return 1
    model="$d/hybrid" name=random-smollm2-6mla24gdn
  fi
  "$d/hylo" serve "$model" --port 18080 --device cuda --dtype bf16 --memory-bytes 8G --max-sequences 128 \
    --model-name "$name" 2>"$out/serve.log" &
  local pid=$!
  local i
  for i in $(seq 1 600); do grep -q "listening on" "$out/serve.log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  cat "$out/serve.log"
  grep -q "listening on" "$out/serve.log" || return 1
  local rc=0
  python3 "$d/serve_load.py" --url http://127.0.0.1:18080 --clients 8 --max-tokens 32 --ignore-eos --check-alone \
    --json "$out/check8.json" || rc=1
  python3 "$d/serve_load.py" --url http://127.0.0.1:18080 --clients 32 --max-tokens 128 --ignore-eos \
    --json "$out/load32.json" || rc=1
  python3 "$d/serve_load.py" --url http://127.0.0.1:18080 --clients 128 --max-tokens 128 --ignore-eos \
    --json "$out/load128.json" || rc=1
  curl -s http://127.0.0.1:18080/metrics > "$out/metrics.txt" 2>/dev/null || true
  kill -TERM $pid; wait $pid
  echo "serve exit: $?"
  tail -n 3 "$out/serve.log"
  return $rc
}

case "$mode" in
  stage) stage "$@" ;;
  run) run_there "$@" ;;
  *) echo "usage: $0 stage DIR | run" >&2; exit 2 ;;
esac
