#!/usr/bin/env bash
# The teacher report of issue 10, run on the GPU machine: the SmolLM2 teacher's held-out perplexity with 2K
# windows (with NLL by position) and RULER NIAH single 1-3 / multi-key 1-3 accuracy at 1K..32K, with the plots.
# Writes report.json, report.md, ruler.svg (+ per-task charts) and nll_by_position.svg to $OUT/eval-teacher
# (the device tool brings back at most 8 files, so the per-task charts are left out; report.json has their data),
# and long/report.json + long/nll_by_position.svg: the same text in 32K windows (HYLO_EVAL_LONG_CONTEXT, 0 = skip).
#
# Run it in the same warm lease as scripts/device/check.sh, after check.sh has built build/cuda-release and
# reassembled the teacher from its two carried parts (so no rebuild and no teacher transfer happens here):
#   1) check.sh build-test   carrying .deps/include .deps/yaml-cpp .deps/teacher.manifest .deps/teacher.part-aa
#   2) check.sh teacher      carrying ... .deps/teacher.part-ab
#   3) bash scripts/device/eval_teacher.sh   carrying .deps/heldout.txt (the held-out text, < 64 MiB)
# Environment (all optional):
#   HYLO_HELDOUT        held-out text file (default .deps/heldout.txt); use a slice the training data never sees
#   HYLO_EVAL_LENGTHS   RULER lengths (default 1K,2K,4K,8K,16K,32K)
#   HYLO_EVAL_SAMPLES   samples per task and length (default 5)
#   HYLO_EVAL_TASKS     RULER tasks (default the six NIAH single / multi-key tasks)
#   HYLO_EVAL_DTYPE     fp32 (default) or bf16
#   HYLO_EVAL_DEVICE    cuda (default); cpu to try the script on the development machine with tiny settings
#   HYLO_BIN, HYLO_TEACHER_GGUF   the binary and the teacher (defaults: build/cuda-release, the reassembled file)
# Budget: about 180 greedy generations of <= 128 tokens after prompts of up to 32K tokens, plus ~100 forwards of
# 2K tokens: a few minutes on one H200 for a 135M model. Lower HYLO_EVAL_SAMPLES if the call's time is short.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export HYLO_CACHE="${HYLO_CACHE:-$HOME/.cache/hylo}"
out="${OUT:-$root/out/device}/eval-teacher"
hylo="${HYLO_BIN:-$root/build/cuda-release/bin/hylo}"
teacher="${HYLO_TEACHER_GGUF:-$HYLO_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
heldout="${HYLO_HELDOUT:-$root/.deps/heldout.txt}"
lengths="${HYLO_EVAL_LENGTHS:-1K,2K,4K,8K,16K,32K}"
samples="${HYLO_EVAL_SAMPLES:-5}"
tasks="${HYLO_EVAL_TASKS:-niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3}"
dtype="${HYLO_EVAL_DTYPE:-fp32}"
device="${HYLO_EVAL_DEVICE:-cuda}"
say() { printf '[eval-teacher] %s\n' "$*"; }

[[ -x "$hylo" ]] || { say "no $hylo: run scripts/device/check.sh build-test first"; exit 2; }
[[ -f "$teacher" ]] || { say "no teacher at $teacher: run check.sh with both parts first"; exit 2; }
[[ -f "$heldout" ]] || { say "no held-out text at $heldout: carry it (HYLO_HELDOUT)"; exit 2; }
mkdir -p "$out" "$out/long"
say "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1); teacher $(basename "$teacher");" \
    "held-out $(wc -c <"$heldout") bytes; lengths $lengths; $samples samples; $dtype"
start=$(date +%s)
"$hylo" eval --model "$teacher" --name smollm2-135m-teacher --device "$device" --dtype "$dtype" \
  --text "$heldout" --context 2048 \
  --ruler "$tasks" --lengths "$lengths" --samples "$samples" --seed 42 \
  --out "$out" 2>"$out/stderr.log"
# The same held-out text in 32K windows, NLL by 2K-position buckets: where past its 8K training length the
# teacher's NLL rises (a text shorter than 32K tokens gives one shorter window).
long_ctx="${HYLO_EVAL_LONG_CONTEXT:-32768}"
if [[ "$long_ctx" -gt 0 ]]; then
  "$hylo" eval --model "$teacher" --name smollm2-135m-teacher --device "$device" --dtype "$dtype" \
    --text "$heldout" --context "$long_ctx" --bucket 2048 --out "$out/long" 2>"$out/long/stderr.log" || true
  rm -f "$out/long/report.md" "$out/long/stderr.log" "$out/long/samples-"*.jsonl
fi
say "done in $(( $(date +%s) - start )) s; files in $out:"
ls -la "$out"
# Only 8 files come back: keep the report, the two main charts, the samples and the log; the per-task charts
# go (report.json holds every figure they show).
rm -f "$out"/ruler_*.svg
tail -n 5 "$out/stderr.log"
