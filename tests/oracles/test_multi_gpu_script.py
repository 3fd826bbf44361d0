"""scripts/device/multi_gpu.sh (issue 12's N-GPU run) driven end to end on the CPU: Gloo ranks stand in for the GPUs
and the tiny teacher/hybrid/dataset of tiny_train_inputs.py for SmolLM2. The baseline and the 2-rank run at the same
global batch agree to float rounding; a rank killed mid-run ends the job with an error that names it; a 2-rank run
stopped half-way resumes on one rank to the end; the report has the table, the chart and the scaling line."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tiny_train_inputs import make_train_inputs

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device" / "multi_gpu.sh"


def hylo(*args):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = make_train_inputs(tmp_path_factory.mktemp("multi-gpu"), hylo)
    env = dict(os.environ, HYLO_TRAIN_DEVICE="cpu", HYLO_TRAIN_WORK=str(tmp / "w"), HYLO=str(Path(HYLO).resolve()),
               STUDENT=str(tmp / "student"), TEACHER=str(tmp / "teacher"), DATA=str(tmp / "data"),
               STEPS="8", BATCH="4", MICRO="2", SEQ="16", NPROC="2", OMP_NUM_THREADS="1", OUT=str(tmp / "out"))
    return tmp, env


def script(env, mode):
    r = subprocess.run(["bash", str(SCRIPT), mode], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, f"multi_gpu.sh {mode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def losses(path):
    return {j["step"]: j["loss"] for j in map(json.loads, path.read_text().splitlines()) if "loss" in j}


def test_runs_faults_and_report(work):
    tmp, env = work
    script(env, "one")
    script(env, "many")
    s = tmp / "w" / "scaling"
    one, many = losses(s / "one" / "kd" / "metrics.jsonl"), losses(s / "many" / "kd" / "metrics.jsonl")
    assert sorted(one) == list(range(1, 9)) and sorted(many) == sorted(one)
    for step in one:  # the same global batch on 1 and 2 ranks: the same losses up to float summation order
        assert abs(one[step] - many[step]) <= 1e-4 * abs(one[step]), (step, one[step], many[step])
    assert "data parallel (2 ranks, gloo, ZeRO-1 on)" in (s / "many.log").read_text()

    out = script(env, "faults")
    assert "faults: the job ended" in out and "exit 0" not in out.split("faults: the job ended")[1].split("\n")[0], out
    killed_log = (s / "killed.log").read_text()
    assert "rank" in killed_log and "error" in killed_log, killed_log
    resumed = losses(s / "stopped" / "kd" / "metrics.jsonl")
    assert max(resumed) == 8, resumed  # stopped at 4 on two ranks, finished on one
    assert (s / "stopped" / "kd" / "final").is_dir()

    report = script(env, "report")
    assert "| many | 8 |" in report and "| stopped | 8 |" in report, report
    assert "scaling efficiency" in report
    assert "<svg" in (tmp / "out" / "scaling-loss.svg").read_text()
