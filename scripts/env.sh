# Shared locations for set-up, build and tests. The venv and models live outside the checkout so that
# worktrees and fresh clones on the same machine reuse them (torch alone is several GB).
hylo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HYLO_CACHE="${HYLO_CACHE:-$HOME/.cache/hylo}"
export HYLO_VENV="${HYLO_VENV:-$HYLO_CACHE/venv-torch2.11}"
export HYLO_SHARED="${HYLO_SHARED:-$hylo_root/../shared}"
export HYLO_DATA="${HYLO_DATA:-$HYLO_CACHE/data}"
export HYLO_TEACHER_GGUF="${HYLO_TEACHER_GGUF:-$HYLO_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
# OpenMP threads that busy-wait between ATen ops starve everything else on small machines (measured on the
# 2-core build machine: SmolLM2 decode 0.6 tok/s spinning vs 5.8 tok/s passive). Callers may override.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
