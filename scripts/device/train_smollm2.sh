#!/usr/bin/env bash
# Issue 7's GPU run: HyLo's staged recipe (recipes/train/smollm2-135m-6mla24gdn.yaml: Enhanced ILD of the pure-MLA
# and the pure-GDN Stage-I models, assembly, KD) for SmolLM2-135M-Instruct -> 6MLA24GDN on one H200, within one
# lease, then the held-out perplexity (Moby-Dick ch. 1-31, 2K windows) of the result and of the teacher in the same
# run. The binaries are built HERE; the teacher GGUF (98 MB) and the tokenized text travel in two calls.
#
#   bash scripts/device/train_smollm2.sh build         here: cuda-release hylo + train_step, the tokenized text
#                                                      dataset, and two carry folders .devwork/train-1 and -2
#   call 1 (carry .devwork/train-1):  bash scripts/device/train_smollm2.sh measure
#        stashes what it carries in $W (the machine's disk, kept while the lease is warm) and measures one
#        optimizer step of the recipe's shapes (train_step, random weights): KD at 8 and 16 x 2K, ILD at 8 x 2K
#        alone and two at once (the two Stage-I stages run side by side).
#   call 2 (carry .devwork/train-2):  bash scripts/device/train_smollm2.sh start [SECONDS]
#        reassembles the teacher, adds teacher-sampled text to the dataset, upcycles the two Stage-I models and
#        starts the run of recipes/train/smollm2-135m-6mla24gdn.yaml in its own session (it outlives the call while
#        the machine is held); then waits. With SIZE_FROM_RATES=1 the recipe's batch and token budgets are first
#        resized from the measured step times so that the training takes TRAIN_SECONDS (default 900).
#   calls 3+:                         bash scripts/device/train_smollm2.sh wait [SECONDS]
#        waits up to SECONDS (default 560) for the run, printing progress; when it has finished, packs the metrics,
#        plots, logs, the recipe used and the evaluation into $OUT/train-smollm2.tar.gz.
# A call that finds the run still going leaves it going: call `wait` again within the lease's warm window.
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
W="${HYLO_TRAIN_WORK:-/tmp/hylo-smol}"   # the machine's disk, outside the carried tree
say() { printf '[train-smollm2 %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

build() {
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  cmake --preset cuda-release >/dev/null || return 1
  cmake --build "$root/build/cuda-release" -j "${HYLO_JOBS:-2}" --target hylo train_step || return 1
  local c1="$root/.devwork/train-1" c2="$root/.devwork/train-2" text="$root/.devwork/smol-text"
  rm -rf "$c1" "$c2" "$text"
  mkdir -p "$c1" "$c2"
  HYLO="$root/build/cuda-release/bin/hylo" bash "$root/scripts/data-smollm2-distill.sh" text "$text" || return 1
  cp "$root/build/cuda-release/bin/hylo" "$c1/hylo" && strip "$c1/hylo"
  cp "$(find "$root/build/cuda-release" -name train_step -type f -perm -u+x | head -n1)" "$c1/train_step" &&
    strip "$c1/train_step"
  cp -L /lib/x86_64-linux-gnu/libyaml-cpp.so.0.7 /lib/x86_64-linux-gnu/libpcre2-8.so.0 \
    /lib/x86_64-linux-gnu/libcpp-httplib.so.0.11 "$c1/"
  git -C "$root" rev-parse --short HEAD > "$c1/commit.txt"
  # The teacher in two parts: as much as fits beside the binaries in call 1, the rest beside the text in call 2.
  local teacher="$HYLO_TEACHER_GGUF" used room
  sha256sum "$teacher" | cut -d' ' -f1 > "$c1/teacher.sha256"
  used=$(du -sb "$c1" | cut -f1)
  room=$(( 58 * 1024 * 1024 - used ))  # + the working tree (3 MB) under the 64 MiB a call carries
  head -c "$room" "$teacher" > "$c1/teacher.part1"
  tail -c +"$(( room + 1 ))" "$teacher" > "$c2/teacher.part2"
  tar -C "$text" -cf - . | xz -T2 -6 > "$c2/text.tar.xz"
  du -sh "$c1" "$c2"; ls -la "$c1" "$c2"
}

# Environment for the carried binaries on the GPU machine.
device_env() {
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$W/bin:$tl:$tl/../../nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  export OMP_NUM_THREADS=4 HYLO_TEACHER_GGUF="$W/teacher.gguf" HYLO_RUN="$W/run-inputs" HYLO="$W/bin/hylo"
}

# Copies what this call carried into $W.
stash() {
  mkdir -p "$W/bin"
  local c1="$root/.devwork/train-1" c2="$root/.devwork/train-2"
  if [[ -d "$c1" ]]; then
    cp "$c1"/hylo "$c1"/train_step "$c1"/lib*.so* "$W/bin/" && cp "$c1"/commit.txt "$c1"/teacher.* "$W/"
  fi
  if [[ -d "$c2" ]]; then cp "$c2"/teacher.part2 "$W/" && mkdir -p "$W/text" && xz -dc "$c2/text.tar.xz" | tar -C "$W/text" -xf -; fi
}

# train_step ARGS...: seconds per optimizer step (the "s/step" column of its table row).
step_seconds() {
  "$W/bin/train_step" --device cuda --pair smollm2 --seq 2048 --steps 2 \
    --plan "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" "$@" 2>&1 | tee -a "$W/measure.log" |
    awk -F'|' '/^\| smollm2/ {gsub(/ /, "", $5); print $5}'
}

measure() {
  stash
  device_env
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "commit $(cat "$W/commit.txt")"; } |
    tee "$W/machine.txt"
  : > "$W/measure.log"
  local kd8 kd16 ild ild2
  kd8=$(step_seconds --batch 8)
  kd16=$(step_seconds --batch 16)
  ild=$(step_seconds --batch 8 --ild)
  # Two ILD processes at once (as the two Stage-I stages will run): the slower one's step time counts.
  step_seconds --batch 8 --ild > "$W/ild2.a" &
  step_seconds --batch 8 --ild > "$W/ild2.b"
  wait
  ild2=$(sort -g "$W/ild2.a" "$W/ild2.b" | tail -n1)
  printf '{"kd8": %s, "kd16": %s, "ild8": %s, "ild8_two_at_once": %s}\n' "${kd8:-null}" "${kd16:-null}" "${ild:-null}" \
    "${ild2:-null}" | tee "$W/rates.json"
  # Issue 7's table with the kernels in: a KD step at 16K (batch 1) and the KL alone at 16K, logit-free vs naive.
  local ts=("$W/bin/train_step" --device cuda --pair smollm2 --plan "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml")
  "${ts[@]}" --seq 16384 --batch 1 --steps 2 >> "$W/measure.log" 2>&1
  "${ts[@]}" --seq 2048 --batch 1 --steps 3 >> "$W/measure.log" 2>&1
  "${ts[@]}" --seq 16384 --kl-only >> "$W/measure.log" 2>&1
  grep -E '^\| |^step' "$W/measure.log"
  cp "$W/measure.log" "$W/rates.json" "${OUT:-/tmp}/" 2>/dev/null || true
}

# Writes $W/recipe.yaml: the shipped recipe with batch and token budgets sized from $W/rates.json so that the two
# Stage-I stages (side by side) take ILD_SHARE of TRAIN_SECONDS and KD the rest.
size_recipe() {
  python3 - "$root/recipes/train/smollm2-135m-6mla24gdn.yaml" "$W/rates.json" "$W/recipe.yaml" \
    "${TRAIN_SECONDS:-900}" "${ILD_SHARE:-0.3}" <<'PY'
import json, math, sys, yaml
src, rates_path, dst, seconds, ild_share = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
r = json.load(open(rates_path))
recipe = yaml.safe_load(open(src))
seq = 2048
# Evaluations, checkpoints and model loading take about 10% beside the steps.
ild_steps = int(0.9 * ild_share * seconds / r["ild8_two_at_once"])
kd_batch = 16 if r["kd16"] < 1.6 * r["kd8"] else 8   # a launch-bound step takes twice the tokens almost for free
kd_steps = int(0.9 * (1 - ild_share) * seconds / r["kd" + str(kd_batch)])
for st in recipe["stages"]:
    if st["kind"] == "ild":
        st.update(batch=8, micro_batch=8, tokens=ild_steps * 8 * seq)
        steps = ild_steps
    elif st["kind"] == "kd":
        st.update(batch=kd_batch, micro_batch=kd_batch, tokens=kd_steps * kd_batch * seq)
        steps = kd_steps
    else:
        continue
    st["eval_every"] = max(1, steps // 10)
    st["eval_batches"] = max(1, 32 // st["batch"])   # the held-out split holds about 34 sequences of 2K
    st["checkpoint_every"] = max(1, steps // 3)
# Paths in the shipped recipe are relative to recipes/train/.
for st in recipe["stages"]:
    if "plan" in st:
        st["plan"] = sys.argv[1].rsplit("/", 1)[0] + "/" + st["plan"]
yaml.safe_dump(recipe, open(dst, "w"), sort_keys=False)
print(f"ILD {ild_steps} steps of 8 x {seq} each (side by side), KD {kd_steps} steps of {kd_batch} x {seq}")
PY
}

# The recipe the run uses: the shipped one, or the one size_recipe wrote.
recipe() {
  if [[ -f "$W/recipe.yaml" ]]; then echo "$W/recipe.yaml"; else echo "$root/recipes/train/smollm2-135m-6mla24gdn.yaml"; fi
}

# The whole run, in its own session: Stage I side by side, then assembly and KD, then the evaluation.
driver() {
  device_env
  cd "$W" || exit 1
  local hylo="$W/bin/hylo" rc=0
  say "Stage I: ild-mla and ild-linear side by side" >> "$W/driver.log"
  "$hylo" train --recipe "$(recipe)" --out "$W/run" --device cuda --stage ild-mla > "$W/ild-mla.log" 2>&1 &
  local a=$!
  "$hylo" train --recipe "$(recipe)" --out "$W/run" --device cuda --stage ild-linear > "$W/ild-linear.log" 2>&1
  rc=$?
  wait "$a" || rc=$?
  say "Stage I exit $rc" >> "$W/driver.log"
  if (( rc == 0 )); then
    "$hylo" train --recipe "$(recipe)" --out "$W/run" --device cuda --resume > "$W/kd.log" 2>&1
    rc=$?
    say "assemble + KD exit $rc" >> "$W/driver.log"
  fi
  local last
  last=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['stages'][-1]['name'])" "$(recipe)")
  if (( rc == 0 )); then
    # The held-out text (never trained on), 2K windows, fp32: the hybrid and its teacher in the same run.
    "$hylo" eval --model "$W/run/$last/final" --name "smollm2-6mla24gdn-$last" --model "$W/teacher.gguf" \
      --name smollm2-135m-teacher --text "$W/text/heldout.txt" --context 2048 --dtype fp32 --device cuda \
      --out "$W/eval" > "$W/eval.log" 2>&1
    rc=$?
    say "eval exit $rc" >> "$W/driver.log"
    # What the text looks like: greedy continuations of three held-out openings, hybrid and teacher.
    local m
    for m in "$W/run/$last/final" "$W/teacher.gguf"; do
      for p in "Call me Ishmael. Some years ago" "The whale" "It was a dark night, and the sea"; do
        printf '== %s | %s\n' "$(basename "$(dirname "$m")")/$(basename "$m")" "$p"
        "$hylo" generate "$m" --prompt "$p" --greedy --max-new-tokens 48 --device cuda 2>/dev/null
        echo
      done
    done > "$W/samples.txt"
  fi
  echo "$rc" > "$W/DONE"
}

progress() {
  say "$(cat "$W/driver.log" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
  local f
  for f in ild-mla ild-linear kd; do   # kd.log: assembly and every KD stage
    [[ -f "$W/$f.log" ]] && say "$f: $(tr '\r' '\n' < "$W/$f.log" | grep -v '^\s*$' | tail -n 1 | cut -c1-200)"
  done
}

pack() {
  local out="${OUT:-$W/out}" d="$W/pack"
  rm -rf "$d"; mkdir -p "$d" "$out"
  cp "$(recipe)" "$W"/rates.json "$W"/measure.log "$W"/machine.txt "$W"/samples.txt "$W"/*.log "$d/" 2>/dev/null
  local sd s
  for sd in "$W"/run/*/; do
    s="$(basename "$sd")"
    mkdir -p "$d/$s"
    cp "$sd/metrics.jsonl" "$sd/loss.svg" "$d/$s/" 2>/dev/null
    cp "$sd/final/config.json" "$d/$s/" 2>/dev/null
  done
  [[ -d "$W/eval" ]] && cp -r "$W/eval" "$d/eval"
  cp "$W/data.log" "$d/" 2>/dev/null
  tar -C "$d" -czf "$out/train-smollm2.tar.gz" .
  cp "$W/samples.txt" "$out/" 2>/dev/null
  cp "$W/eval/report.md" "$out/eval-report.md" 2>/dev/null
  ls -la "$out"
}

wait_run() {
  local budget="${1:-560}" start=$SECONDS
  while [[ ! -f "$W/DONE" ]] && (( SECONDS - start < budget )); do
    sleep 30
    progress
  done
  if [[ -f "$W/DONE" ]]; then
    say "run finished, exit $(cat "$W/DONE")"
    tail -n 20 "$W/eval.log" 2>/dev/null
    cat "$W/eval/report.md" 2>/dev/null | head -n 40
    pack
  else
    say "still running after ${budget}s: call wait again"
    pack   # what there is so far (the curves), in case the lease ends
  fi
}

start() {
  local budget="${1:-540}" t0=$SECONDS
  stash
  device_env
  cat "$W/teacher.part1" "$W/teacher.part2" > "$W/teacher.gguf"
  if [[ "$(sha256sum "$W/teacher.gguf" | cut -d' ' -f1)" != "$(cat "$W/teacher.sha256")" ]]; then
    say "teacher: reassembled file has the wrong sha256"; exit 1
  fi
  say "teacher ok; dataset: teacher samples added on the GPU"
  # Teacher-sampled continuations of seeded slices of the training text (prompts masked out of the loss).
  mkdir -p "$W/run-inputs"
  if ! timeout 150 bash "$root/scripts/data-smollm2-distill.sh" distill "$W/text" "$W/run-inputs/data" --device cuda \
      --dtype bf16 --quiet > "$W/data.log" 2>&1; then
    say "teacher sampling failed or ran out of time (tail below); training on the text alone"
    tail -n 5 "$W/data.log"
    rm -rf "$W/run-inputs/data"; cp -r "$W/text" "$W/run-inputs/data"
  fi
  tail -n 2 "$W/data.log"
  for s in mla linear; do
    "$W/bin/hylo" upcycle "$W/teacher.gguf" --plan "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" --stage1 "$s" \
      --out "$W/run-inputs/stage1-$s" --no-progress > "$W/upcycle-$s.log" 2>&1 ||
      { say "upcycle $s failed"; tail "$W/upcycle-$s.log"; exit 1; }
  done
  rm -f "$W/recipe.yaml"
  if [[ "${SIZE_FROM_RATES:-0}" == 1 ]]; then
    [[ -f "$W/rates.json" ]] || { say "no $W/rates.json: run measure first (call 1)"; exit 1; }
    size_recipe || exit 1
  fi
  say "setup took $(( SECONDS - t0 )) s; starting the run"
  setsid nohup bash "$here/train_smollm2.sh" driver > "$W/driver.out" 2>&1 < /dev/null &
  sleep 5
  wait_run $(( budget - (SECONDS - t0) ))
}

case "$mode" in
  build) build ;;
  measure) measure ;;
  start) start "$@" ;;
  wait) device_env; wait_run "$@" ;;
  driver) driver ;;
  *) echo "usage: $0 build | measure | start [SECONDS] | wait [SECONDS]" >&2; exit 2 ;;
esac
