#!/usr/bin/env bash
# Builds the SmolLM2-135M distillation dataset (docs/training-data.md says what is in it):
#   train    = KJV Bible (66 books) + Python 3.11 docs (reST sources) + State of the Union addresses (sotu/*.txt)
#              + teacher-generated text (SmolLM2-135M-Instruct continuing seeded slices of that training text)
#   held-out = moby-dick.txt lines 1-4830 (CHAPTER 1. Loomings. through the end of CHAPTER 31. Queen Mab.),
#              one document, the same on every run; its text is DIR/heldout.txt (for `hylo perplexity`)
# Usage: scripts/data-smollm2-distill.sh OUT_DIR [extra hylo data options, e.g. --device cuda --dtype bf16]
# Environment: NUM_SAMPLES (teacher samples, default 512), MAX_NEW_TOKENS (default 256), GEN_BATCH (default 16),
#              HYLO (the hylo binary, default build/bin/hylo), SEED (default 1234).
# Needs scripts/setup.sh to have run (text under $HYLO_DATA, the teacher GGUF).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
out="${1:?usage: $0 OUT_DIR [hylo data options]}"
shift
hylo="${HYLO:-$root/build/bin/hylo}"
text="$HYLO_DATA/text"
deb="$HYLO_DATA/debian"
for p in "$text/moby-dick.txt" "$text/sotu" "$deb/bible-kjv" "$deb/python3.11-doc" "$HYLO_TEACHER_GGUF"; do
  [[ -e "$p" ]] || { echo "$0: $p missing (run scripts/setup.sh)" >&2; exit 1; }
done
exec "$hylo" data --out "$out" --seed "${SEED:-1234}" \
  "$deb/bible-kjv" "$deb/python3.11-doc" "$text/sotu" \
  --heldout-lines "$text/moby-dick.txt:1-4830" \
  --generate-with "$HYLO_TEACHER_GGUF" --prompts-from "$deb/bible-kjv" "$deb/python3.11-doc" "$text/sotu" \
  --num-samples "${NUM_SAMPLES:-512}" --max-new-tokens "${MAX_NEW_TOKENS:-256}" --prompt-tokens 16:128 \
  --temperature 0.8 --top-p 0.95 --gen-batch "${GEN_BATCH:-16}" --mask-prompt "$@"
