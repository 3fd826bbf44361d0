#!/usr/bin/env bash
# Issue 12: `hylo train` on N GPUs of one host over NCCL against the same run on one GPU, same global batch: the SmolLM2
# 6MLA24GDN KD stage on the freshly upcycled hybrid (KD needs no Stage I to measure scaling and agreement). Every step
# is one device call (each fits the 10-minute limit); the machine's disk ($W) keeps the runs between calls.
#
# Here: MOBY_REST=1 bash scripts/device/train_smollm2.sh build (binaries, teacher parts, text). On an nvidia-h200-x2
# (or larger) machine, calls within the warm window, each carrying what train_smollm2.sh says:
#   bash scripts/device/train_smollm2.sh stash     carry .devwork/train-1, then .devwork/train-3
#   bash scripts/device/train_smollm2.sh hybrid    carry .devwork/train-2 (reassembles the teacher, upcycles)
#   bash scripts/device/multi_gpu.sh one           the baseline: one GPU, the global batch in micro-batches
#   bash scripts/device/multi_gpu.sh many          NPROC GPUs (default: all visible), ZeRO-1, same global batch
#   bash scripts/device/multi_gpu.sh nozero        NPROC GPUs without ZeRO-1, PEAK_STEPS steps (peak memory only)
#   bash scripts/device/multi_gpu.sh faults        a rank killed mid-run must end the job with a clear error on every
#                                                  rank; a stopped NPROC-rank run resumes on one GPU to the end
#   bash scripts/device/multi_gpu.sh report        compare-runs table + chart, scaling, exposed all-reduce: $OUT
# Environment: STEPS (default 40), BATCH (global, 64), MICRO (per rank and micro-step, 32), SEQ (2048), NPROC,
# PEAK_STEPS (6). Dry run on the CPU (Gloo ranks, tiny models): HYLO_TRAIN_DEVICE=cpu STUDENT=DIR TEACHER=MODEL
# DATA=DIR HYLO_TRAIN_WORK=DIR HYLO=BIN SEQ=.. BATCH=.. MICRO=.. bash scripts/device/multi_gpu.sh one|many|...
set -uo pipefail
mode="${1:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
W="${HYLO_TRAIN_WORK:-/tmp/hylo-smol}"
DEV="${HYLO_TRAIN_DEVICE:-cuda}"
S="$W/scaling"
STEPS="${STEPS:-40}" BATCH="${BATCH:-64}" MICRO="${MICRO:-32}" SEQ="${SEQ:-2048}"
say() { printf '[multi-gpu %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

if [[ "$DEV" == cuda ]]; then
  tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$W/bin:$tl:$tl/../../nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  NPROC="${NPROC:-$(nvidia-smi -L | wc -l)}"
else
  NPROC="${NPROC:-2}"
fi
HYLO="${HYLO:-$W/bin/hylo}"
STUDENT="${STUDENT:-$W/e2e-hybrid}" TEACHER="${TEACHER:-$W/teacher.gguf}" DATA="${DATA:-$W/text}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" NCCL_NVLS_ENABLE=0  # NVLink multicast off (device KINDS.md)

# write_recipe [FILE [STEPS]]: the one-stage KD recipe every run shares (only the number of ranks and ZeRO-1 differ
# between runs); default $S/recipe.yaml with STEPS steps.
write_recipe() {
  local file="${1:-$S/recipe.yaml}" steps="${2:-$STEPS}"
  mkdir -p "$S"
  local every=$(( steps / 4 > 0 ? steps / 4 : 1 ))
  cat > "$file" <<YAML
name: smollm2-kd-scaling
defaults: {adamw: {beta1: 0.9, beta2: 0.95, eps: 1.0e-8, weight_decay: 0.0}, grad_clip: 1.0, warmup_ratio: 0.05,
           min_lr: 0, precision: bf16, teacher_dtype: bf16, log_every: 1, seed: 42}
stages:
  - name: kd
    kind: kd
    student: $STUDENT
    teacher: $TEACHER
    data: $DATA
    train: all
    seq_len: $SEQ
    batch: $BATCH
    micro_batch: $MICRO
    tokens: $(( steps * BATCH * SEQ ))
    lr: 1.0e-3
    kd: {temperature: 1.0, ce_weight: 0.0}
    activation_checkpointing: true
    eval_every: $every
    eval_batches: 1
    checkpoint_every: $(( steps / 2 > 0 ? steps / 2 : 1 ))
YAML
}

# run NAME NPROC [hylo train flags...]: one training run into $S/NAME, its log $S/NAME.log.
run() {
  local name="$1" n="$2"; shift 2
  rm -rf "${S:?}/$name"
  local launch=()
  (( n > 1 )) && launch=(--nproc "$n")
  say "$name: $n rank(s) $*"
  MASTER_PORT=$(( 29600 + RANDOM % 300 )) "$HYLO" train "${launch[@]}" --recipe "$S/recipe.yaml" --out "$S/$name" \
    --device "$DEV" --quiet "$@" > "$S/$name.log" 2>&1
  local rc=$?
  say "$name exit $rc: $(grep -h 'data parallel' "$S/$name.log" | tail -n 1)"
  return $rc
}

faults() {
  # A rank killed by SIGKILL mid-run: the launcher must end every rank and name the dead one, within the timeout.
  # (A recipe far longer than the wait, so that the kill always lands mid-run.)
  rm -rf "${S:?}/killed"
  write_recipe "$S/recipe-long.yaml" $(( STEPS * 50 ))
  MASTER_PORT=$(( 29600 + RANDOM % 300 )) HYLO_DIST_TIMEOUT_S=60 "$HYLO" train --nproc "$NPROC" --recipe "$S/recipe-long.yaml" \
    --out "$S/killed" --device "$DEV" --quiet > "$S/killed.log" 2>&1 &
  local launcher=$! t=0 victim=""
  # Wait for the first logged step (the ranks are then inside the training loop's collectives).
  until grep -q '"loss"' "$S/killed/kd/metrics.jsonl" 2>/dev/null || (( t >= 240 )); do
    sleep 1; t=$(( t + 1 ))
  done
  victim="$(pgrep -f -n -- "--out $S/killed")"  # the newest process of the job: a rank, not the launcher
  say "faults: killing pid $victim (launcher $launcher) after $t s"
  kill -9 "$victim"
  local t0=$SECONDS
  wait "$launcher"
  local rc=$?
  say "faults: the job ended $(( SECONDS - t0 )) s after the kill with exit $rc: $(grep -h 'error' "$S/killed.log" | head -n 3 | tr '\n' ' ')"
  # Planned stop after half the steps on NPROC ranks, then --resume on one GPU to the end.
  run stopped "$NPROC" --stop-after $(( STEPS / 2 ))
  say "faults: resuming on one rank"
  MASTER_PORT=$(( 29600 + RANDOM % 300 )) "$HYLO" train --recipe "$S/recipe.yaml" --out "$S/stopped" --resume \
    --device "$DEV" --quiet > "$S/resumed.log" 2>&1
  say "faults: resume exit $?: last line $(tail -n 1 "$S/stopped/kd/metrics.jsonl" 2>/dev/null)"
}

report() {
  local out="${OUT:-$S/out}"
  mkdir -p "$out"
  local args=() name
  for name in one many stopped; do [[ -f "$S/$name/kd/metrics.jsonl" ]] && args+=("$name=$S/$name/kd"); done
  "$HYLO" compare-runs "${args[@]}" --svg "$out/scaling-loss.svg" --markdown "$out/scaling.md" \
    --title "SmolLM2 6MLA24GDN KD: $NPROC GPUs against 1 at global batch $BATCH" || return 1
  for name in one many nozero stopped; do
    [[ -f "$S/$name/kd/metrics.jsonl" ]] && echo "$name: $(tail -n 2 "$S/$name/kd/metrics.jsonl" | grep '"loss"')"
  done
  grep -h "data parallel\|error\|faults" "$S"/*.log 2>/dev/null | head -n 20
  cp "$S"/*.log "$S/recipe.yaml" "$out/" 2>/dev/null
  for name in one many nozero stopped; do
    [[ -f "$S/$name/kd/metrics.jsonl" ]] && cp "$S/$name/kd/metrics.jsonl" "$out/$name.metrics.jsonl"
  done
  python3 - "$S" "$NPROC" <<'PY' | tee "$out/scaling-summary.txt"
import json, sys
s, n = sys.argv[1], int(sys.argv[2])
def last(name, key):
    try:
        rows = [json.loads(l) for l in open(f"{s}/{name}/kd/metrics.jsonl") if key in l]
        return rows[-1][key] if rows else None
    except (OSError, ValueError):
        return None
one, many = last("one", "tokens_per_s"), last("many", "tokens_per_s")
if one and many:
    print(f"tokens/s: 1 GPU {one:.0f}, {n} GPUs {many:.0f} ({many / n:.0f} per GPU); "
          f"scaling efficiency {many / (n * one):.3f} (goal >= 0.9)")
for name in ("one", "many", "nozero"):
    p = last(name, "peak_gpu_bytes")
    if p:
        print(f"peak GPU memory, rank 0, {name}: {p / 2**30:.2f} GiB")
PY
}

case "$mode" in
  one) write_recipe && run one 1 ;;
  many) write_recipe && run many "$NPROC" ;;
  nozero) write_recipe "$S/recipe.yaml" "${PEAK_STEPS:-6}" && run nozero "$NPROC" --no-zero1 ;;
  faults) write_recipe && faults ;;
  report) report ;;
  *) echo "usage: $0 one | many | nozero | faults | report" >&2; exit 2 ;;
esac
