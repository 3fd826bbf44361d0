#!/usr/bin/env bash
# Builds the SmolLM2-135M distillation dataset (docs/training-data.md says what is in it), in two steps so that
# the second (teacher sampling) can run on the GPU machine, which has no text sources:
#   scripts/data-smollm2-distill.sh text OUT_TEXT
#       train    = KJV Bible (66 books) + Python 3.11 docs (reST sources) + State of the Union addresses (sotu/*.txt)
#       held-out = moby-dick.txt lines 1-4830 (CHAPTER 1. Loomings. through the end of CHAPTER 31. Queen Mab.),
#                  one document, the same on every run; its text is OUT_TEXT/heldout.txt (for `hylo perplexity`)
#       MOBY_REST=1 adds the rest of Moby-Dick (chapters 32-135) to train; the 2026-12-01 run had it off (default).
#       Needs scripts/setup.sh (text under $HYLO_DATA). CPU, about 10 s.
#   scripts/data-smollm2-distill.sh distill OUT_TEXT OUT [hylo data options, e.g. --device cuda --dtype bf16]
#       OUT = OUT_TEXT's documents (held-out unchanged) + NUM_SAMPLES SmolLM2-135M-Instruct continuations of seeded
#       16-128-token slices of OUT_TEXT's training documents (prompts masked out of the loss). Needs only the hylo
#       binary, OUT_TEXT and the teacher ($HYLO_TEACHER_GGUF).
# Environment: NUM_SAMPLES (default 512), MAX_NEW_TOKENS (default 256), GEN_BATCH (default 32), SEED (default 1234),
#              GEN_SECONDS (start no sample after this many seconds, keeping the ones made; default 0 = no limit),
#              HYLO (the hylo binary, default build/bin/hylo).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
hylo="${HYLO:-$root/build/bin/hylo}"
usage="usage: $0 text OUT_TEXT | $0 distill OUT_TEXT OUT [hylo data options]"
step="${1:?$usage}"
case "$step" in
  text)
    out="${2:?$usage}"
    text="$HYLO_DATA/text"
    deb="$HYLO_DATA/debian"
    for p in "$text/moby-dick.txt" "$text/sotu" "$deb/bible-kjv" "$deb/python3.11-doc"; do
      [[ -e "$p" ]] || { echo "$0: $p missing (run scripts/setup.sh)" >&2; exit 1; }
    done
    extra=()
    [[ "${MOBY_REST:-0}" == 1 ]] && extra=("$text/moby-dick.txt")  # its lines 1-4830 are cut out as held-out
    exec "$hylo" data --tokenizer "$HYLO_TEACHER_GGUF" --out "$out" --seed "${SEED:-1234}" \
      "$deb/bible-kjv" "$deb/python3.11-doc" "$text/sotu" "${extra[@]}" \
      --heldout-lines "$text/moby-dick.txt:1-4830"
    ;;
  distill)
    text_ds="${2:?$usage}"
    out="${3:?$usage}"
    shift 3
    exec "$hylo" data --out "$out" --seed "${SEED:-1234}" "$text_ds" \
      --generate-with "$HYLO_TEACHER_GGUF" --prompts-from "$text_ds" \
      --num-samples "${NUM_SAMPLES:-512}" --max-new-tokens "${MAX_NEW_TOKENS:-256}" --prompt-tokens 16:128 \
      --temperature 0.8 --top-p 0.95 --gen-batch "${GEN_BATCH:-32}" --gen-seconds "${GEN_SECONDS:-0}" --mask-prompt "$@"
    ;;
  *) echo "$usage" >&2; exit 1 ;;
esac
