#!/usr/bin/env bash
# Issue 7's GPU run: a SmolLM2-135M-Instruct -> 6MLA24GDN recipe (default recipes/train/smollm2-135m-6mla24gdn.yaml,
# HyLo's stages: Enhanced ILD of the pure-MLA and pure-GDN Stage-I models, assembly, KD) on one H200 within one
# lease, then the held-out perplexity (Moby-Dick ch. 1-31, 2K windows) of every final model and of the teacher in
# the same run, and greedy samples. The binaries are built HERE; the teacher GGUF (98 MB) and the tokenized text
# travel in two calls. The stages run wave by wave: the stages of a wave take models only from earlier waves and
# run side by side as `hylo train --stage` processes (the card is mostly idle between one process's launches).
#
#   bash scripts/device/train_smollm2.sh build         here: cuda-release hylo + train_step, the tokenized text
#                                                      dataset, and carry folders .devwork/train-1, -2 and -3
#   call 1 (carry .devwork/train-1):  bash scripts/device/train_smollm2.sh measure
#        stashes what it carries in $W (the machine's disk, kept while the lease is warm) and measures one
#        optimizer step of the recipe's KD and ILD batches (train_step, random weights), as many processes at once
#        as the recipe's widest wave runs.
#   call 2 (carry .devwork/train-3):  bash scripts/device/train_smollm2.sh stash
#        the tokenized text alone: with the whole of Moby-Dick (MOBY_REST=1) it no longer fits beside the
#        teacher's second part under one call's 64 MiB.
#   call 3 (carry .devwork/train-2):  bash scripts/device/train_smollm2.sh start [SECONDS]
#        reassembles the teacher, adds teacher-sampled text to the dataset (at most SAMPLE_SECONDS, default 150),
#        upcycles the two Stage-I models and starts the run in its own session (it outlives the call while the
#        machine is held); then waits. With SIZE_FROM_RATES=1 the recipe's token budgets are first rescaled from
#        the measured step times so that the training takes TRAIN_SECONDS (default 900).
#   calls 4+:                         bash scripts/device/train_smollm2.sh wait [SECONDS]
#        waits up to SECONDS (default 560) for the run, printing progress; when it has finished, packs the metrics,
#        plots, logs, the recipe used, the evaluation, the samples and the end-to-end rows (the trained hybrid
#        against its teacher: 64K prefill, peak memory of perplexity at 32K) into $OUT/train-smollm2.tar.gz.
# A call that finds the run still going leaves it going: call `wait` again within the lease's warm window (30 s).
# Without training (issue 8's end-to-end rows on the freshly upcycled hybrid): calls carrying train-1 and train-3
# run `stash`, then one carrying train-2 runs `e2e`: the e2e-* files come back in $OUT.
# Environment: RECIPE (a path in the repository), MOBY_REST and NUM_SAMPLES (scripts/data-smollm2-distill.sh),
# SIZE_FROM_RATES, TRAIN_SECONDS, ILD_SHARE, SAMPLE_SECONDS, GROUP_OF_ONE_STAGES (stage names run as a one-rank
# data-parallel job: NCCL on the GPU), GEN_SECONDS (the sampler starts no sample after it; default SAMPLE_SECONDS - 40).
# The fourth run (2026-12-02, 1.291x the teacher's held-out perplexity; its exact calls: docs/results.md):
#   MOBY_REST=1 bash scripts/device/train_smollm2.sh build; then every call with
#   RECIPE=recipes/train/smollm2-135m-6mla24gdn-v3.yaml SIZE_FROM_RATES=1 (`start` also with TRAIN_SECONDS=1000
#   NUM_SAMPLES=32768 GEN_BATCH=512 SAMPLE_SECONDS=330).
# Dry run of the driver on the CPU (tiny models in $HYLO_TRAIN_WORK/run-inputs, a tiny recipe):
#   HYLO_TRAIN_WORK=DIR HYLO_TRAIN_DEVICE=cpu RECIPE=/abs/recipe.yaml HYLO_TRAIN_TEACHER=MODEL EVAL_CONTEXT=64 \
#     bash scripts/device/train_smollm2.sh driver
set -uo pipefail
mode="${1:-}"; shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${HYLO_TRAIN_ROOT:-$(cd "$here/../.." && pwd)}"
W="${HYLO_TRAIN_WORK:-/tmp/hylo-smol}"   # the machine's disk, outside the carried tree
DEV="${HYLO_TRAIN_DEVICE:-cuda}"         # cpu: the dry run of the driver described above
say() { printf '[train-smollm2 %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

build() {
  # shellcheck disable=SC1091
  source "$root/scripts/env.sh"
  cmake --preset cuda-release >/dev/null || return 1
  cmake --build "$root/build/cuda-release" -j "${HYLO_JOBS:-2}" --target hylo train_step || return 1
  local c1="$root/.devwork/train-1" c2="$root/.devwork/train-2" c3="$root/.devwork/train-3"
  local text="$root/.devwork/smol-text"
  rm -rf "$c1" "$c2" "$c3" "$text"
  mkdir -p "$c1" "$c2" "$c3"
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
  tar -C "$text" -cf - . | xz -T2 -6 > "$c3/text.tar.xz"
  du -sh "$c1" "$c2" "$c3"; ls -la "$c1" "$c2" "$c3"
}

# Environment for the carried binaries on the GPU machine.
device_env() {
  local tl; tl="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
  export LD_LIBRARY_PATH="$W/bin:$tl:$tl/../../nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" HYLO_TEACHER_GGUF="${HYLO_TRAIN_TEACHER:-$W/teacher.gguf}" \
    HYLO_RUN="$W/run-inputs" HYLO="$W/bin/hylo"
}

# Copies what this call carried into $W.
stash() {
  mkdir -p "$W/bin"
  local c1="$root/.devwork/train-1" c2="$root/.devwork/train-2" c3="$root/.devwork/train-3"
  if [[ -d "$c1" ]]; then
    cp "$c1"/hylo "$c1"/train_step "$c1"/lib*.so* "$W/bin/" && cp "$c1"/commit.txt "$c1"/teacher.* "$W/"
  fi
  if [[ -d "$c2" ]]; then cp "$c2"/teacher.part2 "$W/"; fi
  if [[ -d "$c3" ]]; then mkdir -p "$W/text" && xz -dc "$c3/text.tar.xz" | tar -C "$W/text" -xf -; fi
}

# The recipe the run uses: RECIPE (default the shipped one, a path in the repository), or the copy size_recipe wrote.
recipe() {
  local r="${RECIPE:-recipes/train/smollm2-135m-6mla24gdn.yaml}"
  [[ "$r" == /* ]] || r="$root/$r"
  if [[ -f "$W/recipe.yaml" ]]; then echo "$W/recipe.yaml"; else echo "$r"; fi
}

# recipe_query WHAT: facts about the recipe's stages, one per line.
#   waves   the stages in dependency waves: a wave's stages take models only from earlier waves (names, one wave a line)
#   leaves  the training stages no other stage takes a model from (what gets evaluated)
#   batch KIND  the largest batch of the stages of that kind (ild | kd); widest KIND: the most such stages in one wave
recipe_query() {
  python3 - "$(recipe)" "$@" <<'PY'
import sys, yaml
stages = yaml.safe_load(open(sys.argv[1]))["stages"]
what = sys.argv[2:]
def inputs(st):
    return [v["stage"] for k in ("student", "teacher", "from_mla", "from_linear")
            if isinstance(v := st.get(k), dict) and "stage" in v]
done, waves = set(), []
while len(done) < len(stages):
    wave = [st["name"] for st in stages if st["name"] not in done and set(inputs(st)) <= done]
    if not wave:
        sys.exit("recipe: a stage takes a model from a stage that never runs")
    waves.append(wave)
    done |= set(wave)
used = {i for st in stages for i in inputs(st)}
kind = {st["name"]: st["kind"] for st in stages}
if what[0] == "waves":
    print("\n".join(" ".join(w) for w in waves))
elif what[0] == "leaves":
    print("\n".join(st["name"] for st in stages if st["kind"] != "assemble" and st["name"] not in used))
elif what[0] == "batch":
    print(max([st.get("batch", 0) for st in stages if st["kind"] == what[1]] or [0]))
elif what[0] == "widest":
    print(max(sum(kind[n] == what[1] for n in w) for w in waves))
PY
}

# step_seconds N ARGS...: N train_step processes at once (as a wave of stages runs); the slowest one's seconds
# per optimizer step (the "s/step" column of its table row).
step_seconds() {
  local n="$1" i; shift
  for (( i = 0; i < n; ++i )); do
    "$W/bin/train_step" --device cuda --pair smollm2 --seq 2048 --steps 2 \
      --plan "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" "$@" > "$W/step.$i" 2>&1 &
  done
  wait
  for (( i = 0; i < n; ++i )); do cat "$W/step.$i" >> "$W/measure.log"; done
  cat "$W"/step.* | awk -F'|' '/^\| smollm2/ {gsub(/ /, "", $5); print $5}' | sort -g | tail -n 1
  rm -f "$W"/step.*
}

# Seconds per step of the recipe's KD and ILD stages at their batch, with as many processes at once as the
# widest wave runs (random weights of the recipe's shapes).
measure() {
  stash
  device_env
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "commit $(cat "$W/commit.txt")"; } |
    tee "$W/machine.txt"
  : > "$W/measure.log"
  local kd_b ild_b kd_n ild_n kd ild
  kd_b=$(recipe_query batch kd); ild_b=$(recipe_query batch ild)
  kd_n=$(recipe_query widest kd); ild_n=$(recipe_query widest ild)
  kd=$(step_seconds "$kd_n" --batch "$kd_b")
  ild=$(step_seconds "$ild_n" --batch "$ild_b" --ild)
  printf '{"kd": {"batch": %s, "at_once": %s, "s_per_step": %s}, "ild": {"batch": %s, "at_once": %s, "s_per_step": %s}}\n' \
    "$kd_b" "$kd_n" "${kd:-null}" "$ild_b" "$ild_n" "${ild:-null}" | tee "$W/rates.json"
  grep -E '^\| |^step' "$W/measure.log"
  cp "$W/measure.log" "$W/rates.json" "${OUT:-/tmp}/" 2>/dev/null || true
}

# Writes $W/recipe.yaml: the recipe with its token budgets scaled (batches kept) from $W/rates.json so that the
# ILD waves take ILD_SHARE of TRAIN_SECONDS and the KD waves the rest.
size_recipe() {
  local src; src="$(recipe)"
  python3 - "$src" "$W/rates.json" "$W/recipe.yaml" "${TRAIN_SECONDS:-900}" "${ILD_SHARE:-0.25}" \
    "$(recipe_query waves | tr '\n' ';')" <<'PY'
import json, os, sys, yaml
src, rates_path, dst, seconds, ild_share, waves = sys.argv[1:7]
seconds, ild_share = float(seconds), float(ild_share)
waves = [w.split() for w in waves.split(";") if w.strip()]
r = json.load(open(rates_path))
recipe = yaml.safe_load(open(src))
by_name = {st["name"]: st for st in recipe["stages"]}
share = {"ild": ild_share, "kd": 1 - ild_share}
n_waves = {k: sum(any(by_name[n]["kind"] == k for n in w) for w in waves) for k in ("ild", "kd")}
seq_default = recipe.get("defaults", {}).get("seq_len", 2048)
for st in recipe["stages"]:
    k = st["kind"]
    if k not in share:
        continue
    # Evaluations, checkpoints and model loading take about 10% beside the steps.
    steps = max(1, int(0.9 * share[k] * seconds / n_waves[k] / r[k]["s_per_step"]))
    seq = st.get("seq_len", seq_default)
    st["tokens"] = steps * st["batch"] * seq
    st["eval_every"] = max(1, steps // 10)
    st["checkpoint_every"] = max(1, steps // 3)
    print(f"{st['name']}: {steps} steps of {st['batch']} x {seq}")
# Relative paths in the recipe are relative to its folder.
for st in recipe["stages"]:
    if "plan" in st and not os.path.isabs(st["plan"]):
        st["plan"] = os.path.join(os.path.dirname(os.path.abspath(src)), st["plan"])
yaml.safe_dump(recipe, open(dst, "w"), sort_keys=False)
PY
}

# The whole run, in its own session: the recipe's stages wave by wave, the stages of a wave side by side (each a
# `hylo train --stage` process); then the held-out evaluation of every leaf stage and the teacher, and samples.
driver() {
  device_env
  cd "$W" || exit 1
  local hylo="$W/bin/hylo" rc=0 wave name pids waves leaves
  if ! waves="$(recipe_query waves)" || ! leaves="$(recipe_query leaves)" || [[ -z "$waves" || -z "$leaves" ]]; then
    say "cannot read the stages of $(recipe)" >> "$W/driver.log"
    echo 1 > "$W/DONE"
    return 1
  fi
  while read -r wave; do
    say "wave: $wave" >> "$W/driver.log"
    pids=()
    for name in $wave; do
      # GROUP_OF_ONE_STAGES: these stages run as one rank of a data-parallel job (NCCL on the GPU, issue 12's
      # single-device check); their results must match a plain process's.
      local dp=()
      [[ " ${GROUP_OF_ONE_STAGES:-} " == *" $name "* ]] && dp=(HYLO_DIST_GROUP_OF_ONE=1 MASTER_PORT=$(( 29500 + ${#pids[@]} )))
      env "${dp[@]}" "$hylo" train --recipe "$(recipe)" --out "$W/run" --device "$DEV" --stage "$name" \
        > "$W/$name.log" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    say "wave exit $rc" >> "$W/driver.log"
    (( rc == 0 )) || break
  done <<< "$waves"
  if (( rc == 0 )); then
    # The held-out text (never trained on), 2K windows, fp32: the hybrids and their teacher in the same run.
    local args=() leaf
    for leaf in $leaves; do args+=(--model "$W/run/$leaf/final" --name "smollm2-6mla24gdn-$leaf"); done
    "$hylo" eval "${args[@]}" --model "$HYLO_TEACHER_GGUF" --name smollm2-135m-teacher --text "$W/text/heldout.txt" \
      --context "${EVAL_CONTEXT:-2048}" --dtype fp32 --device "$DEV" --out "$W/eval" > "$W/eval.log" 2>&1
    rc=$?
    say "eval exit $rc" >> "$W/driver.log"
    # What the text looks like: greedy continuations of three openings, each hybrid and the teacher.
    local m p
    for m in $(sed "s|^|$W/run/|; s|$|/final|" <<< "$leaves") "$HYLO_TEACHER_GGUF"; do
      for p in "Call me Ishmael. Some years ago" "The whale" "It was a dark night, and the sea"; do
        printf '== %s | %s\n' "${m#"$W"/}" "$p"
        "$hylo" generate "$m" --prompt "$p" --greedy --max-new-tokens 48 --device "$DEV" 2>/dev/null
        echo
      done
    done > "$W/samples.txt"
    [[ "$DEV" == cuda ]] && end_to_end "$hylo" "$W/run/$(tail -n 1 <<< "$leaves")/final" "$(tail -n 1 <<< "$leaves")"
  fi
  echo "$rc" > "$W/DONE"
}

# end_to_end HYLO MODEL LABEL: issue 8's end-to-end rows for MODEL (a hybrid; after a run, the last leaf stage's)
# against its teacher, bf16, batch 1: prefill of a 64K-token prompt and decode (`hylo bench`, both in one process),
# and the peak GPU memory of scoring the held-out text in 32K windows one at a time (`hylo perplexity`). Outputs:
# $W/e2e-*.
end_to_end() {
  local hylo="$1" model="$2" label="$3" m name
  "$hylo" bench "$model" --teacher "$HYLO_TEACHER_GGUF" --contexts 64K --teacher-contexts 64K \
    --decode-tokens 16 --device cuda --prefill-chunk 16384 --max-step-tokens 16384 --json "$W/e2e-bench.json" \
    --markdown "$W/e2e-bench.md" > "$W/e2e-bench.log" 2>&1
  say "e2e bench exit $?" >> "$W/driver.log"
  for m in "$model" "$HYLO_TEACHER_GGUF"; do
    name="$([[ "$m" == "$HYLO_TEACHER_GGUF" ]] && echo teacher || echo "$label")"
    "$hylo" perplexity "$m" "$W/text/heldout.txt" --context 32768 --dtype bf16 --device cuda --max-sequences 1 \
      --json > "$W/e2e-perplexity-$name.json" 2> "$W/e2e-perplexity-$name.log"
    say "e2e perplexity 32K $name exit $?" >> "$W/driver.log"
  done
}

# The teacher reassembled and the freshly upcycled 6MLA24GDN hybrid in $W/e2e-hybrid (speed and memory depend on
# the shapes, not on the weights' values), after calls that carried train-1, train-3 and train-2 (stash).
fresh_hybrid() {
  stash
  device_env
  assemble_teacher || return 1
  [[ -d "$W/e2e-hybrid" ]] && return 0
  "$W/bin/hylo" upcycle "$W/teacher.gguf" --plan "$root/recipes/plans/smollm2-135m-6mla24gdn.yaml" \
    --out "$W/e2e-hybrid" --no-progress > "$W/e2e-upcycle.log" 2>&1 || { say "upcycle failed"; tail "$W/e2e-upcycle.log"; return 1; }
}

# Issue 8's end-to-end rows without a training run, on the fresh hybrid.
e2e_fresh() {
  fresh_hybrid || exit 1
  end_to_end "$W/bin/hylo" "$W/e2e-hybrid" upcycled
  # The teacher's sampling throughput as the training run's data step uses it (GEN_SECONDS of sampling).
  local gen_s="${GEN_SECONDS:-40}"
  GEN_SECONDS="$gen_s" timeout $(( gen_s + 60 )) bash "$root/scripts/data-smollm2-distill.sh" distill "$W/text" \
    "$W/e2e-data" --device cuda --dtype bf16 > "$W/e2e-data.log" 2>&1
  say "e2e sampling exit $?: $(tr '\r' '\n' < "$W/e2e-data.log" | grep -o 'teacher: .*' | tail -n 1)" >> "$W/driver.log"
  local out="${OUT:-$W/out}" f
  mkdir -p "$out"
  for f in "$W"/e2e-bench.md "$W"/e2e-bench.json "$W"/e2e-perplexity-*.json "$W"/driver.log; do
    [[ -f "$f" ]] && cp "$f" "$out/"
  done
  cat "$W/e2e-bench.md" "$W"/e2e-perplexity-*.json
  for f in "$W"/e2e-perplexity-*.log; do echo "$f: $(last_lines "$f" 2)"; done
}

# last_lines FILE N: the last N non-empty lines of a log whose progress bars redraw with carriage returns.
last_lines() { tr '\r' '\n' < "$1" | grep -v '^\s*$' | tail -n "$2"; }

progress() {
  say "$(cat "$W/driver.log" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
  local f
  for f in $(recipe_query waves); do
    [[ -f "$W/$f.log" ]] && say "$f: $(last_lines "$W/$f.log" 1 | cut -c1-200)"
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
  cp "$W/data.log" "$W"/e2e-* "$d/" 2>/dev/null
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

# The teacher GGUF from its two carried parts, checked against the sha256 computed here.
assemble_teacher() {
  cat "$W/teacher.part1" "$W/teacher.part2" > "$W/teacher.gguf"
  if [[ "$(sha256sum "$W/teacher.gguf" | cut -d' ' -f1)" != "$(cat "$W/teacher.sha256")" ]]; then
    say "teacher: reassembled file has the wrong sha256"; return 1
  fi
}

start() {
  local budget="${1:-540}" t0=$SECONDS
  stash
  device_env
  assemble_teacher || exit 1
  say "teacher ok; dataset: teacher samples added on the GPU"
  # Teacher-sampled continuations of seeded slices of the training text (prompts masked out of the loss).
  mkdir -p "$W/run-inputs"
  # The sampler stops starting samples GEN_SECONDS in and keeps the ones made (the first k); the timeout is only the
  # hard stop, 40 s later (loading the teacher, finishing the running samples, writing the dataset).
  local sample_s="${SAMPLE_SECONDS:-150}"
  if ! GEN_SECONDS="${GEN_SECONDS:-$(( sample_s > 60 ? sample_s - 40 : sample_s / 2 ))}" timeout "$sample_s" \
      bash "$root/scripts/data-smollm2-distill.sh" distill "$W/text" "$W/run-inputs/data" --device cuda \
      --dtype bf16 > "$W/data.log" 2>&1; then
    say "teacher sampling failed or ran out of time (tail below); training on the text alone"
    last_lines "$W/data.log" 5
    rm -rf "$W/run-inputs/data"; cp -r "$W/text" "$W/run-inputs/data"
  fi
  last_lines "$W/data.log" 2
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
  # bash reads a script as it runs: the driver runs from a copy, since a later call (another job sent while this run
  # goes on) brings a fresh copy of the tree. HYLO_TRAIN_ROOT keeps the copy's paths pointing into the tree.
  cp "$here/train_smollm2.sh" "$W/driver.sh"
  HYLO_TRAIN_ROOT="$root" setsid nohup bash "$W/driver.sh" driver > "$W/driver.out" 2>&1 < /dev/null &
  sleep 5
  wait_run $(( budget - (SECONDS - t0) ))
}

case "$mode" in
  build) build ;;
  measure) measure ;;
  stash) stash && du -sh "$W"/* ;;
  e2e) e2e_fresh ;;
  hybrid) fresh_hybrid ;;
  start) start "$@" ;;
  wait) device_env; wait_run "$@" ;;
  driver) driver ;;
  *) echo "usage: $0 build | measure | stash | start [SECONDS] | wait [SECONDS] | e2e | hybrid" >&2; exit 2 ;;
esac
