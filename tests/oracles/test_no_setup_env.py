"""hylo on a user's own files needs none of the project's set-up variables (HYLO_DATA, HYLO_CACHE, HYLO_SHARED,
HYLO_TEACHER_GGUF): each command here runs with a scrubbed environment (PATH and HOME pointing at an empty
directory only) on a small teacher made by transformers in the test. `hylo upcycle` without calibration text
writes the checkpoint and a report (table and JSON) that says the KL was skipped and how to get it; with
--calibration it measures it."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from test_upcycle import HYLO, make_teacher, plan_text


def scrubbed(tmp: Path) -> dict:
    home = tmp / "empty-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "OMP_NUM_THREADS": "1"}
    assert not any(k.startswith("HYLO_") for k in env)
    return env


def hylo(tmp: Path, *args, cwd=None):
    return subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True, timeout=600, env=scrubbed(tmp),
                          cwd=cwd or tmp)


def test_upcycle_without_calibration_skips_the_kl_and_says_how_to_get_it(tmp_path):
    teacher = make_teacher(tmp_path, "llama")
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("llama", "gdn"))
    out, report = tmp_path / "hybrid", tmp_path / "report.json"
    r = hylo(tmp_path, "upcycle", teacher, "--plan", plan, "--out", out, "--json", report, "--no-progress")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "KL(teacher || hybrid) right after init: skipped" in r.stdout and "--calibration FILE" in r.stdout, r.stdout
    rep = json.loads(report.read_text())
    assert rep["kl_after_init"]["skipped"] is True
    assert "--calibration FILE" in rep["kl_after_init"]["reason"]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()

    # The rest of the user's path on the result, still without any set-up variable.
    text = tmp_path / "calib.txt"
    # One letter per line: GPT-2 pre-tokenizes each to a byte token (id < 256), inside the test teacher's vocabulary.
    text.write_text("\n".join("callmeishmael"[i % 13] for i in range(400)))
    for args in (["inspect", out], ["tokenize", "--tokenizer", out, "--file", text],
                 # (the test teacher's 1000-token vocabulary is smaller than its GPT-2 tokenizer: ids, not text)
                 ["generate", out, "--prompt-ids", "1 2 3", "--max-new-tokens", "4", "--greedy"],
                 ["export", "--format", "amd", out, "--out", tmp_path / "amd"],
                 ["logits", out, "--ids", "1 2 3", "--out", tmp_path / "l.safetensors"]):
        r = hylo(tmp_path, *args)
        assert r.returncode == 0, (args, r.stderr + r.stdout)

    # --calibration asks for the KL, which is then measured.
    out2, report2 = tmp_path / "hybrid2", tmp_path / "report2.json"
    r = hylo(tmp_path, "upcycle", teacher, "--plan", plan, "--out", out2, "--json", report2, "--no-progress",
             "--calibration", text, "--calibration-tokens", "32")
    assert r.returncode == 0, r.stderr + r.stdout
    kl = json.loads(report2.read_text())["kl_after_init"]
    assert kl["tokens"] == 32 and kl["nats_per_token"] > 0 and "skipped" not in kl


def test_smart_without_calibration_says_what_it_needs(tmp_path):
    teacher = make_teacher(tmp_path, "llama")
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("llama", "gdn"))
    r = hylo(tmp_path, "upcycle", teacher, "--plan", plan, "--out", tmp_path / "never", "--smart", "1",
             "--no-progress")
    assert r.returncode == 1, r.stdout
    assert "--calibration FILE" in r.stderr, r.stderr
    assert not (tmp_path / "never").exists()


SMOLLM2 = Path(os.environ.get("HYLO_TEACHER_GGUF", Path.home() / ".cache/hylo/models/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.mark.skipif(not SMOLLM2.is_file(), reason="the SmolLM2 teacher GGUF is not there (run scripts/setup.sh)")
def test_smollm2_gguf_upcycles_without_any_setup_variable(tmp_path):
    src = Path(os.environ.get("HYLO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
    out, report = tmp_path / "hybrid", tmp_path / "report.json"
    r = hylo(tmp_path, "upcycle", SMOLLM2, "--plan", src / "recipes" / "plans" / "smollm2-135m-6mla24gdn.yaml",
             "--out", out, "--json", report, "--no-progress", "--threads", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "right after init: skipped" in r.stdout
    assert json.loads(report.read_text())["kl_after_init"]["skipped"] is True
    assert (out / "model.safetensors").exists() and (out / "tokenizer.gguf").exists()
