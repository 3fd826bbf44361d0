"""`hylo export --format amd`: hybrids upcycled here (MLA + Gated DeltaNet and MLA + Mamba2, from a tiny
transformers Llama) are written in AMD's released HyLo / Zebra-Llama layout and read back by hylo's import of
that layout to bit-identical logits. The files are AMD's field by field: config.json is the backbone's HF config
(no hylo `hybrid` block), hybrid_config.json has the keys of Zebra-Llama's HybridConfig (HYLO.md 2.1-2.5) with
the values of the plan, and the tensors carry AMD's names (model.layers.{i}.mla.*, .gdn.*, .mamba.*,
lm_head.weight) with the shapes of HYLO.md 2.2-2.5. What the layout cannot express is refused."""
import json
import subprocess

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from test_upcycle import HYLO, make_teacher, plan_text

# Keys of Zebra-Llama's HybridConfig as AMD's hybrid_config.json files carry them (tests/cpp/model's AMD fixture).
MLA_KEYS = {"hidden_size", "intermediate_size", "hidden_act", "n_layer", "mla_layers", "rms_norm_eps",
            "num_attention_heads", "num_key_value_heads", "kv_lora_rank", "q_lora_rank", "use_lora_layer_norm",
            "use_full_kv_head", "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "max_position_embeddings",
            "rope_theta", "rope_scaling", "attention_bias", "d_model"}
MAMBA_KEYS = {"ssm_cfg", "d_inner", "d_xb"}


def hylo(*args):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True, timeout=600)
    return r


def mla_tensor_shapes(d, heads, dh, q_rank, kv_rank, groups):
    nope = rope = dh // 2
    return {"mla.q_a_proj.weight": [q_rank, d], "mla.q_b_proj.weight": [heads * (nope + rope), q_rank],
            "mla.kv_a_proj_with_mqa.weight": [kv_rank + rope, d],
            "mla.kv_b_proj.weight": [groups * (nope + dh), kv_rank], "mla.out_proj.weight": [d, heads * dh]}


@pytest.mark.parametrize("linear", ["gdn", "mamba2"])
def test_export_then_import_is_the_same_model(tmp_path, linear):
    teacher = make_teacher(tmp_path, "llama")
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("llama", linear))
    ckpt, amd = tmp_path / "hybrid", tmp_path / "amd"
    r = hylo("upcycle", teacher, "--plan", plan, "--out", ckpt, "--no-progress")
    assert r.returncode == 0, r.stderr
    r = hylo("export", "--format", "amd", ckpt, "--out", amd)
    assert r.returncode == 0, r.stderr
    names = {p.name for p in amd.iterdir() if not p.name.startswith("tokenizer")}
    assert {"config.json", "hybrid_config.json", "model.safetensors"} <= names
    assert names <= {"config.json", "hybrid_config.json", "model.safetensors", "generation_config.json",
                     "special_tokens_map.json", "chat_template.jinja"}, names
    assert (amd / "tokenizer.json").exists()

    cfg = json.loads((amd / "config.json").read_text())
    hc = json.loads((amd / "hybrid_config.json").read_text())
    assert "hybrid" not in cfg and cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 4
    assert cfg["num_attention_heads"] == 8 and cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 32
    assert set(hc) == MLA_KEYS | (MAMBA_KEYS if linear == "mamba2" else set())
    assert hc["mla_layers"] == [1, 3] and hc["n_layer"] == 4 and hc["hidden_size"] == hc["d_model"] == 256
    assert (hc["q_lora_rank"], hc["kv_lora_rank"]) == (168, 32)
    assert (hc["qk_nope_head_dim"], hc["qk_rope_head_dim"], hc["v_head_dim"]) == (16, 16, 32)
    assert hc["num_attention_heads"] == 8 and hc["num_key_value_heads"] == 2
    assert hc["use_lora_layer_norm"] is False and hc["use_full_kv_head"] is False and hc["attention_bias"] is False
    assert hc["rope_scaling"] == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}
    assert hc["rope_theta"] == 500000.0 and hc["intermediate_size"] == 512 and hc["rms_norm_eps"] == 1e-5
    if linear == "mamba2":
        # HYLO.md 2.4: d_inner = H * head_dim, d_xb = H_kv * head_dim, d_state = head_dim, ngroups = H, expand 1.
        assert (hc["d_inner"], hc["d_xb"]) == (256, 64)
        assert hc["ssm_cfg"] == {"expand": 1, "ngroups": 8, "d_state": 32, "repeat_kv_before_conv": False,
                                 "d_conv": 4}

    # Tensors: the same names, shapes and bytes as the hylo checkpoint, which are AMD's.
    with safe_open(str(amd / "model.safetensors"), "np") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    assert "lm_head.weight" in shapes and "model.embed_tokens.weight" in shapes and "model.norm.weight" in shapes
    for i in (1, 3):
        for k, s in mla_tensor_shapes(256, 8, 32, 168, 32, 2).items():
            assert shapes[f"model.layers.{i}.{k}"] == s, k
    for i in (0, 2):
        prefix = f"model.layers.{i}." + ("gdn." if linear == "gdn" else "mamba.")
        assert any(k.startswith(prefix) for k in shapes)
        if linear == "mamba2":
            assert shapes[prefix + "in_proj.weight"] == [2 * 256 + 2 * 64 + 8, 256]  # [z | x | B | C | dt]
        else:
            assert shapes[prefix + "q_proj.weight"] == [3 * 64, 256] and shapes[prefix + "a_proj.weight"] == [3, 256]
    ours, theirs = load_file(str(ckpt / "model.safetensors")), load_file(str(amd / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)

    # Read back through the AMD import: bit-identical logits.
    ids = ["--ids", " ".join(str(i) for i in range(3, 60, 2))]
    for d, name in ((ckpt, "a"), (amd, "b")):
        r = hylo("logits", d, *ids, "--out", tmp_path / f"{name}.safetensors")
        assert r.returncode == 0, r.stderr
    a, b = load_file(str(tmp_path / "a.safetensors"))["logits"], load_file(str(tmp_path / "b.safetensors"))["logits"]
    assert np.array_equal(a, b)
    r = hylo("inspect", amd, "--json")
    assert r.returncode == 0, r.stderr
    assert [l["mixer"] for l in json.loads(r.stdout)["layers"]] == [linear, "mla", linear, "mla"]

    # Exporting again over the earlier export replaces it as a whole.
    r = hylo("export", "--format", "amd", ckpt, "--out", amd)
    assert r.returncode == 0, r.stderr


def test_what_the_layout_cannot_express_is_refused(tmp_path):
    teacher = make_teacher(tmp_path, "llama")
    out = tmp_path / "never"
    r = hylo("export", "--format", "amd", teacher, "--out", out)  # a Transformer: every layer attention
    assert r.returncode == 1 and "layer 0 is attention" in r.stderr, r.stderr
    assert not out.exists()
    r = hylo("export", "--format", "gguf", teacher, "--out", out)
    assert r.returncode != 0 and "amd" in r.stderr
