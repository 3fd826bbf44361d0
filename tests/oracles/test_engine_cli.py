"""The commands that run on the inference engine: `hylo bench`, `hylo chat`, and `hylo generate` / `perplexity`
against their single-sequence reference paths (`--reference`).

bench: a tiny Llama-shaped config with random weights and a plan making a 2 MLA + 2 GDN hybrid of it, on the CPU at
tiny contexts: the JSON's bytes per token equal the models' formulas (MLA: r_kv + rope values per MLA layer;
attention: 2 x kv_heads x head_dim per layer; fp32), the teacher's are larger, a context beyond the budget is
reported with the number that fits (and the run goes on), the measured points are consistent (pages x bytes + the
state slot), and the SVG is one picture with both models.
chat: two piped turns on the SmolLM2 teacher answer both questions, and the second turn's stats line shows the
first turn's prompt taken from the prefix cache instead of recomputed.
generate / perplexity: the engine's greedy ids equal the reference loop's; per-token NLLs agree to fp32 rounding;
a request longer than the pools is refused with the number of tokens that fit.
"""
import json
import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
TEACHER = os.environ.get("HYLO_TEACHER_GGUF", str(Path.home() / ".cache/hylo/models/SmolLM2-135M-Instruct.Q4_1.gguf"))

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
KV_RANK, ROPE = 24, 8
PLAN = f"""name: tiny-2mla2gdn
teacher: {{num_layers: 4, hidden_size: 64, num_heads: 4, num_kv_heads: 2, head_dim: 16}}
mla_layers: [0, 2]
linear: gdn
mla:
  q_lora_rank: 32
  kv_lora_rank: {KV_RANK}
  qk_nope_head_dim: 8
  qk_rope_head_dim: {ROPE}
  v_head_dim: 16
  num_kv_groups: 2
  latent_norms: false
  rope: {{type: default}}
gdn: {{num_heads: 2, head_k_dim: 16, head_v_dim: 32, conv_size: 4}}
"""
PAGE, DECODE = 8, 4


def run(*args, check=True, stdin=None, timeout=900):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True, input=stdin, timeout=timeout)
    if check:
        assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def need_teacher():
    if not Path(TEACHER).is_file():
        pytest.fail(f"teacher GGUF {TEACHER} missing: run `make setup` (scripts/setup.sh) to fetch it")


def test_bench_reports_memory_by_formula_and_what_fits(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(CONFIG))
    (tmp_path / "plan.yaml").write_text(PLAN)
    budget = 2 << 20
    r = run("bench", "--random-config", tmp_path / "tiny.json", "--plan", tmp_path / "plan.yaml",
            "--contexts", "40,64,1M", "--decode-tokens", DECODE, "--batch", "1,2", "--batch-prompt", 16,
            "--page-size", PAGE, "--prefill-chunk", 16, "--max-step-tokens", 32, "--memory-bytes", "2M",
            "--json", tmp_path / "b.json", "--svg", tmp_path / "b.svg")
    j = json.loads((tmp_path / "b.json").read_text())
    assert j["device"] == "cpu" and j["dtype"] == "fp32" and "hylo bench" in j["command"]
    hybrid, teacher = j["models"]
    assert (hybrid["role"], teacher["role"]) == ("hybrid", "teacher")
    assert hybrid["name"].startswith("tiny-2mla2gdn") and teacher["name"].startswith("tiny")
    assert hybrid["layers"] == "2 mla + 2 gdn" and teacher["layers"] == "4 gqa"
    # The formulas, fp32: MLA caches r_kv + rope per layer; attention K and V per KV head.
    assert hybrid["bytes_per_token"] == hybrid["bytes_per_token_formula"] == 2 * (KV_RANK + ROPE) * 4
    assert teacher["bytes_per_token"] == teacher["bytes_per_token_formula"] == 4 * 2 * 2 * 16 * 4
    assert teacher["bytes_per_token"] > hybrid["bytes_per_token"]
    # GDN state per layer: 2 heads x 16 x 32 fp32, plus the conv tails of q, k, v (3 positions, fp32 model).
    gdn_state = (2 * 16 * 32 + (2 * 32 + 64) * 3) * 4
    assert hybrid["bytes_per_slot"] == 2 * gdn_state and teacher["bytes_per_slot"] == 0
    for m in (hybrid, teacher):
        bpp = m["bytes_per_token"] * PAGE
        assert m["budget_bytes"] == budget
        assert m["max_context"] == (budget - m["bytes_per_slot"]) // bpp * PAGE
        assert m["weight_bytes"] is None  # no allocator statistics on the CPU
        small, mid, huge = m["contexts"]
        for p in (small, mid):
            assert p["fits"] and p["error"] == "" and p["decoded"] == DECODE
            assert p["prefill_seconds"] > 0 and p["tpot_ms"] > 0 and p["peak_bytes"] is None
            pages = math.ceil((p["context"] + DECODE) / PAGE)
            assert p["sequence_bytes"] == pages * bpp + m["bytes_per_slot"]
        assert not huge["fits"] and huge["prefill_seconds"] is None
        assert huge["max_context"] == m["max_context"] - DECODE
        assert f"| {m['name']} | 1M | does not fit ({m['max_context'] - DECODE} tokens fit)" in r.stdout
        for b in m["batches"]:
            assert b["fits"] and b["timed_steps"] == DECODE and b["decode_tokens_per_second"] > 0
    # Memory per sequence grows with the context in proportion to bytes per token.
    grow = lambda m: m["contexts"][1]["sequence_bytes"] - m["contexts"][0]["sequence_bytes"]
    assert grow(teacher) * hybrid["bytes_per_token"] == grow(hybrid) * teacher["bytes_per_token"]
    svg = ET.parse(tmp_path / "b.svg").getroot()
    text = ET.tostring(svg, encoding="unicode")
    assert hybrid["name"] in text and teacher["name"] in text
    assert "[bench]" in r.stderr  # progress


def test_bench_refuses_bad_flags(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(CONFIG))
    for args, needle in [
        (["--contexts", "64"], "--random-config"),
        (["--random-config", tmp_path / "tiny.json", "--contexts", "4Q"], "--contexts"),
        (["--random-config", tmp_path / "tiny.json", "--contexts", "64", "--decode-tokens", 1], "decode-tokens"),
        (["--random-config", tmp_path / "tiny.json", "--contexts", "64", "--gpu-memory", "0.5"], "--memory-bytes"),
        (["--random-config", tmp_path / "tiny.json", "--contexts", "64", "--memory-bytes", "lots"], "--memory-bytes"),
    ]:
        r = run("bench", *args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)


STATS = re.compile(r"\[context (\d+)/(\d+) tokens \| prompt (\d+), (\d+) from the prefix cache, (\d+) computed")


def test_chat_second_turn_reuses_the_first(tmp_path):
    need_teacher()
    page = 16
    r = run("chat", TEACHER, "--greedy", "--max-new-tokens", 24, "--page-size", page, "--prefill-chunk", page,
            stdin="What is the capital of France?\n\nAnd the capital of Germany?\n/exit\nnot read\n")
    print(r.stdout, r.stderr)
    replies = r.stdout.strip().split("\n")
    assert len(replies) == 2 and "Paris" in replies[0] and "Berlin" in replies[1]
    turns = [tuple(map(int, m)) for m in STATS.findall(r.stderr)]
    assert len(turns) == 2
    (ctx1, _, p1, cached1, computed1), (ctx2, _, p2, cached2, computed2) = turns
    assert cached1 == 0 and computed1 == p1
    # The second prompt starts with the first conversation; every full page of the first prompt is reused.
    assert p2 > ctx1 > p1
    assert cached2 >= p1 // page * page and cached2 + computed2 == p2 and computed2 < p2 - p1 + page


def test_chat_reset_and_unknown_commands(tmp_path):
    need_teacher()
    r = run("chat", TEACHER, "--greedy", "--max-new-tokens", 8, stdin="/what\n/reset\n")
    assert r.stdout == "" and "unknown command /what" in r.stderr and "[history cleared]" in r.stderr


def test_generate_on_the_engine_equals_the_reference_loop():
    need_teacher()
    prompt = "1 504 3456 28 9 2096 300 12 4455 611 19 88 77 1337 42 5 6 7 8 9"
    args = ["generate", TEACHER, "--prompt-ids", prompt, "--greedy", "--print-ids", "--ignore-eos",
            "--max-new-tokens", 32]
    want = run(*args, "--reference").stdout.split()
    assert len(want) == 32
    for engine_flags in ([], ["--page-size", 4, "--prefill-chunk", 8]):
        r = run(*args, *engine_flags)
        assert r.stdout.split() == want, engine_flags
        assert "engine, page" in r.stderr


def test_generate_longer_than_the_pools_says_what_fits():
    need_teacher()
    # 30 layers x 2 (K, V) x 3 KV heads x 64 fp32 values = 46080 bytes per token, 2949120 per page of 64:
    # 10 MiB hold 3 pages, 192 tokens; 3 prompt + 300 new do not fit.
    r = run("generate", TEACHER, "--prompt-ids", "1 2 3", "--max-new-tokens", 300, "--memory-bytes", "10M",
            check=False)
    assert r.returncode == 1 and "303 tokens of cache, but at most 192 tokens fit in one sequence" in r.stderr, r.stderr


def test_perplexity_on_the_engine_equals_the_reference(tmp_path):
    need_teacher()
    text = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, "
            "and nothing particular to interest me on shore, I thought I would sail about a little. ") * 3
    (tmp_path / "t.txt").write_text(text)
    args = ["perplexity", TEACHER, tmp_path / "t.txt", "--context", 40, "--json", "--per-token"]
    want = json.loads(run(*args, "--reference").stdout)
    got = json.loads(run(*args, "--page-size", 8, "--prefill-chunk", 16).stdout)
    for k in ("tokens", "predicted", "windows", "context"):
        assert got[k] == want[k]
    # Two fp32 computations of the same function (chunked over pages vs one forward per window): they differ by
    # fp32 rounding, which test_transformer_parity bounds at 1e-5 relative RMS for a forward against transformers.
    got_nll, want_nll = np.array(got["nll"]), np.array(want["nll"])
    assert np.sqrt(np.mean((got_nll - want_nll) ** 2)) / np.sqrt(np.mean(want_nll ** 2)) <= 1e-5
    assert abs(got["perplexity"] - want["perplexity"]) <= 1e-5 * want["perplexity"]


def test_bench_teacher_sweeps_can_differ(tmp_path):
    """--teacher-contexts / --teacher-batch: a long context for the hybrid alone, the teacher only where it is cheap."""
    (tmp_path / "tiny.json").write_text(json.dumps(CONFIG))
    (tmp_path / "plan.yaml").write_text(PLAN)
    run("bench", "--random-config", tmp_path / "tiny.json", "--plan", tmp_path / "plan.yaml", "--contexts", "32,48",
        "--teacher-contexts", "32", "--batch", "2", "--teacher-batch", "none", "--batch-prompt", 16,
        "--decode-tokens", DECODE, "--page-size", PAGE, "--prefill-chunk", 16, "--memory-bytes", "2M", "--quiet",
        "--json", tmp_path / "b.json")
    hybrid, teacher = json.loads((tmp_path / "b.json").read_text())["models"]
    assert [p["context"] for p in hybrid["contexts"]] == [32, 48] and [b["batch"] for b in hybrid["batches"]] == [2]
    assert [p["context"] for p in teacher["contexts"]] == [32] and teacher["batches"] == []
    assert teacher["bytes_per_token"] > hybrid["bytes_per_token"]  # the memory figures are there all the same
