"""`hylo inspect` on the HyLo hybrids of HYLO.md 2.1.

Full size: the backbone configs of Llama-3.2-1B/3B and Qwen3-1.7B (config.json only, written here with the
published dims) with each shipped HyLo plan (`inspect --plan`): KV/latent-cache bytes per token, the
per-sequence recurrent state, and the parameter counts of HYLO.md 2.1 with an untied head. Materialising
1.6-4.3B random parameters is beyond a CPU test, so at full size the numbers come from the config; the parameter
count formula is pinned to the mixers' real parameter shapes by tests/cpp/upcycle (meta-device count).

Small size, random weights: a random tiny Llama made by transformers, upcycled with a mixed plan, inspected:
the config-based parameter count equals the checkpoint's tensor element count, and the cache sizes are right.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

HYLO = os.environ.get("HYLO_BIN", "build/cpu-release/bin/hylo")
SRC = Path(os.environ.get("HYLO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
PLANS = SRC / "recipes" / "plans"

LLAMA_1B = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=2048,
                intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                head_dim=64, rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=True,
                rope_theta=500000.0, hidden_act="silu",
                rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=8192))
LLAMA_3B = dict(LLAMA_1B, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, head_dim=128)
QWEN3_1_7B = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=2048,
                  intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                  head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=True,
                  rope_theta=1000000.0, hidden_act="silu", attention_bias=False)

# plan, backbone, number of MLA layers, latent width (r_kv + rope), published parameters (HYLO.md 2.1, in B)
CASES = [
    ("llama3.2-1b-4mla12gdn", LLAMA_1B, 4, 160, 1.674),
    ("llama3.2-1b-8mla8gdn", LLAMA_1B, 8, 160, 1.613),
    ("llama3.2-3b-6mla22gdn", LLAMA_3B, 6, 192, 4.268),
    ("llama3.2-3b-14mla14gdn", LLAMA_3B, 14, 192, 3.971),
    ("qwen3-1.7b-7mla21gdn", QWEN3_1_7B, 7, 320, 2.284),
    ("qwen3-1.7b-14mla14gdn", QWEN3_1_7B, 14, 320, 2.183),
    ("qwen3-1.7b-14mla14m2", QWEN3_1_7B, 14, 320, 2.066),
    ("llama3.2-1b-4mla12m2", LLAMA_1B, 4, 160, None),
]


def inspect(model_dir, *extra):
    out = subprocess.run([HYLO, "inspect", str(model_dir), "--json", *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def expected_state_bytes(layer):
    """Recurrent + conv state of one linear layer in fp32, from its dims (HYLO.md 2.4, 2.5)."""
    d = layer["dims"]
    if layer["mixer"] == "gdn":
        key, value = d["num_heads"] * d["head_k_dim"], d["num_heads"] * d["head_v_dim"]
        elems = d["num_heads"] * d["head_k_dim"] * d["head_v_dim"] + (2 * key + value) * (d["conv_size"] - 1)
    else:
        elems = d["n_heads"] * d["head_dim"] * d["d_state"] + (d["d_inner"] + 2 * d["d_xb"]) * (d["conv_size"] - 1)
    return 4 * elems


@pytest.mark.parametrize("plan,backbone,n_mla,width,published", CASES, ids=[c[0] for c in CASES])
def test_full_size_hylo_configs(tmp_path, plan, backbone, n_mla, width, published):
    (tmp_path / "config.json").write_text(json.dumps(backbone))
    teacher = inspect(tmp_path)
    r = inspect(tmp_path, "--plan", str(PLANS / f"{plan}.yaml"), "--context", "65536")
    mixers = [l["mixer"] for l in r["layers"]]
    assert mixers.count("mla") == n_mla
    # Latent cache: n_mla layers x (r_kv + rope) values x 2 bytes (bf16); e.g. 4 x 160 x 2 = 1280 B for 1B 4MLA.
    assert r["kv_bytes_per_token"] == n_mla * width * 2
    assert r["kv_bytes_at_context"] == n_mla * width * 2 * 65536
    assert r["kv_bytes_per_token"] / teacher["kv_bytes_per_token"] < 0.10  # HyLo's ">90% smaller"
    linear = [l for l in r["layers"] if l["mixer"] != "mla"]
    assert r["state_bytes_per_sequence"] == sum(expected_state_bytes(l) for l in linear)
    assert r["tie_word_embeddings"] is False  # HyLo checkpoints store the head untied
    if published is not None:
        assert round(r["parameters"] / 1e9, 3) == pytest.approx(published, abs=0.0015), r["parameters"]


def test_llama_1b_4mla12gdn_numbers(tmp_path):
    """The figures the issue names: 1280 B/token of latent cache, 3.9% of the backbone's 32 KiB."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_1B))
    teacher = inspect(tmp_path)
    r = inspect(tmp_path, "--plan", str(PLANS / "llama3.2-1b-4mla12gdn.yaml"))
    assert teacher["kv_bytes_per_token"] == 16 * 2 * 8 * 64 * 2 == 32768
    assert r["kv_bytes_per_token"] == 1280
    assert round(100 * r["kv_bytes_per_token"] / teacher["kv_bytes_per_token"], 1) == 3.9
    gdn = [l for l in r["layers"] if l["mixer"] == "gdn"]
    assert len(gdn) == 12 and all(l["dims"]["num_heads"] * 256 * 512 == 786432 for l in gdn)


def test_random_weight_hybrid_matches_its_tensors(tmp_path):
    """A real (random-weight) hybrid: inspect's config-derived numbers agree with the tensors on disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    cfg = LlamaConfig(vocab_size=409,  # >= the tiny tokenizer's 403 ids
                      hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(teacher_dir, safe_serialization=True)
    tok = SRC / "tests" / "data" / "tokenizer" / "tiny_bytelevel.json"
    (teacher_dir / "tokenizer.json").write_bytes(tok.read_bytes())
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: tiny-2mla1gdn1m2\n"
        "mla_layers: [0, 2]\n"
        "linear: gdn\n"
        "mla: {q_lora_rank: 32, kv_lora_rank: 24, qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 16,"
        " num_kv_groups: 2, rope: {type: yarn, factor: 4, original_max_position_embeddings: 64}}\n"
        "gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 32, conv_size: 4}\n")
    out_dir = tmp_path / "hybrid"
    run = subprocess.run([HYLO, "upcycle", str(teacher_dir), "--plan", str(plan), "--out", str(out_dir),
                          "--calibration-tokens", "16", "--threads", "1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    r = inspect(out_dir, "--context", "1000")
    assert [l["mixer"] for l in r["layers"]] == ["mla", "gdn", "mla", "gdn"]
    assert r["parameters_match"] is True and r["parameters"] == r["parameters_from_tensors"]
    assert r["kv_bytes_per_token"] == 2 * (24 + 8) * 2
    assert r["state_bytes_per_sequence"] == sum(expected_state_bytes(l) for l in r["layers"] if l["mixer"] == "gdn")
