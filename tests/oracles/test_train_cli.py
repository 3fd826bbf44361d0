"""`hylo train` as a process: what a scheduler's SIGTERM (or Ctrl-C) does, and `--stage`.

The tiny teacher, hybrid and dataset of tiny_train_inputs.py and a KD recipe long enough that the signal always
lands mid-stage: SIGTERM ends the process with 143 after the step in flight, with a checkpoint at that step and no final
checkpoint; `--resume` continues from that step. (That the resumed parameters equal an uninterrupted run's, bit for
bit, is tests/cpp/train/resume_test.cpp's job, on the same trainer code.) `--stage` with a name the recipe lacks,
and a stage whose input stage is not done, are refused before any work with messages that say so.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tiny_train_inputs import make_train_inputs

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
ENV = dict(os.environ, OMP_NUM_THREADS="1")  # ctest runs tests side by side on 2 cores


def hylo(*args, check=True, timeout=600):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check:
        assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory):
    tmp = make_train_inputs(tmp_path_factory.mktemp("train-cli"), hylo)
    # 600 steps of 2 x 16 tokens: far more than the seconds before the signal.
    (tmp / "recipe.yaml").write_text(f"""name: tiny-kd
defaults: {{teacher: teacher, data: data, seq_len: 16, batch: 2, micro_batch: 1, precision: fp32, log_every: 1,
           eval_every: 0,
           checkpoint_every: 100000}}
stages:
  - {{name: kd, kind: kd, student: student, tokens: {600 * 2 * 16}, lr: 1.0e-3}}
""")
    return tmp


def metrics_steps(path: Path):
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            j = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if "loss" in j:
            steps.append(j["step"])
    return steps


def sigterm_after_steps(run_inputs, out, steps, *extra):
    """Starts `hylo train` on the recipe, sends SIGTERM once `steps` steps are logged; (exit status, stderr)."""
    p = subprocess.Popen([HYLO, "train", *extra, "--recipe", run_inputs / "recipe.yaml", "--out", out, "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 300
    while max(metrics_steps(out / "kd" / "metrics.jsonl"), default=0) < steps:
        assert p.poll() is None, f"hylo train {' '.join(extra)} ended early ({p.returncode}):\n{p.stderr.read()}"
        assert time.time() < deadline, "no training step logged within 300 s"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def test_sigterm_checkpoints_the_step_and_resume_continues(run_inputs):
    out = run_inputs / "run-sigterm"
    returncode, err = sigterm_after_steps(run_inputs, out, 3)
    assert returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM with a checkpoint; continue with --resume" in err
    state = json.loads((out / "kd" / "train_state" / "state.json").read_text())
    logged = metrics_steps(out / "kd" / "metrics.jsonl")
    # The checkpoint is at the last step that ran: the one in flight when the signal came, or a later one.
    assert state["step"] == max(logged) and 3 <= state["step"] < 600
    assert not (out / "kd" / "final").exists()

    r = hylo("train", "--recipe", run_inputs / "recipe.yaml", "--out", out, "--resume", "--stop-after", "2", "--quiet")
    assert "stopped after --stop-after 2 steps" in r.stderr
    resumed = json.loads((out / "kd" / "train_state" / "state.json").read_text())
    assert resumed["step"] == state["step"] + 2
    assert metrics_steps(out / "kd" / "metrics.jsonl") == list(range(1, resumed["step"] + 1))


def test_sigterm_to_the_nproc_launcher_stops_every_rank_in_order(run_inputs):
    """`hylo train --nproc 2` (two Gloo ranks): the launcher forwards the signal once, every rank checkpoints the
    same step (each its own ZeRO-1 optimizer file) and the launcher exits 143 without calling it a failure."""
    out = run_inputs / "run-nproc"
    returncode, err = sigterm_after_steps(run_inputs, out, 2, "--nproc", "2")
    assert returncode == 128 + signal.SIGTERM, err
    assert "every rank stopped at the same step with a checkpoint; continue with --resume" in err, err
    assert "error" not in err.lower(), err
    state_dir = out / "kd" / "train_state"
    state = json.loads((state_dir / "state.json").read_text())
    assert state["step"] == max(metrics_steps(out / "kd" / "metrics.jsonl")) >= 2
    assert (state_dir / "optimizer.rank0.safetensors").exists() and (state_dir / "optimizer.rank1.safetensors").exists()
    r = hylo("train", "--nproc", "2", "--recipe", run_inputs / "recipe.yaml", "--out", out, "--resume",
             "--stop-after", "1", "--quiet")
    assert json.loads((state_dir / "state.json").read_text())["step"] == state["step"] + 1


def test_stage_option_refuses_unknown_and_unready_stages(run_inputs):
    r = hylo("train", "--recipe", run_inputs / "recipe.yaml", "--out", run_inputs / "run-stage", "--stage", "kd2",
             "--quiet", check=False)
    assert r.returncode == 1 and "--stage kd2: no such stage (the recipe has kd)" in r.stderr, r.stderr
    two = run_inputs / "two.yaml"
    two.write_text((run_inputs / "recipe.yaml").read_text() +
                   "  - {name: more, kind: kd, student: {stage: kd}, tokens: 64, lr: 1.0e-4}\n")
    r = hylo("train", "--recipe", two, "--out", run_inputs / "run-stage", "--stage", "more", "--quiet", check=False)
    assert r.returncode == 1 and "stage more takes a model from stage kd, which is not done" in r.stderr, r.stderr
    assert not (run_inputs / "run-stage" / "more").exists()
