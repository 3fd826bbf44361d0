"""Oracle for the MLA mixer (src/hylo/model/mixers/mla.cpp) and its YaRN rope slice (src/hylo/ops/rope_yarn.cpp).

Peer: transformers' DeepseekV3Attention is the DeepSeek variant of our block (latent RMSNorms, one KV group per
head, YaRN with mscale / mscale_all_dim). Its `rope_interleave=True` path rotates DeepSeek's adjacent pairs and
returns them in the half-split layout -- the same as Zebra's view(d/2,2).transpose -> rotate_half, our
`pair_order=deepseek`; `rope_interleave=False` is the plain half-split rotation, our `pair_order=half`. Both are
compared.

Tolerances are derived, never tuned:
  * rope tables: ours are computed in fp64; HF computes inv_freq and the angles in fp32, so |angle error| <=
    angle * 2^-22 (inv_freq and product roundings) and each table entry may differ by scale * that + 2 fp32 ulps.
  * attention: the fp64 reference is HF's module in fp64 fed with OUR fp64 tables (checked above against HF's),
    so ours in fp64 must agree to fp64 rounding; ours in fp32 must be within 4x of what HF's own fp32 run (with
    its own fp32 tables) gets against that reference, plus 8 fp32 ulps.

The Zebra/HyLo variant (no latent norms, 8 KV groups repeated to heads, YaRN without mscale_all_dim) has no peer
in transformers: it is compared against `zebra_reference` below, OUR OWN explicit reading of the HYLO.md 2.2/2.3
pseudo-code (itself a digest of Zebra-Llama's hybrid_mla_layer.py), not an independent implementation.
"""
import math
import os
import subprocess
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from transformers import DeepseekV3Config
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

torch.set_num_threads(1)  # tiny tensors: threads would only spin

TESTOPS = os.environ.get("HYLO_TESTOPS") or os.path.join(os.environ.get("HYLO_BUILD_DIR", "build"), "bin",
                                                         "hylo_testops")
EPS32 = 2.0 ** -23

HF_TO_OURS = {"q_proj": "q_proj", "q_a_proj": "q_a_proj", "q_a_layernorm": "q_a_layernorm", "q_b_proj": "q_b_proj",
              "kv_a_proj_with_mqa": "kv_a_proj_with_mqa", "kv_a_layernorm": "kv_a_layernorm",
              "kv_b_proj": "kv_b_proj", "o_proj": "out_proj"}


def run_op(op, tensors, **params):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, src)
        args = [TESTOPS, op, src, dst] + [f"{k}={v}" for k, v in params.items()]
        r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, f"{' '.join(args)} failed: {r.stderr}"
        return load_file(dst)


def rel_rms(a, ref):
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


def rope_params(rp):
    p = {"rope_type": rp["rope_type"], "theta": rp["rope_theta"]}
    if rp["rope_type"] == "yarn":
        p.update(factor=rp["factor"], original_max_pos=rp["original_max_position_embeddings"],
                 beta_fast=rp.get("beta_fast", 32), beta_slow=rp.get("beta_slow", 1),
                 mscale=rp.get("mscale", 1.0), mscale_all_dim=rp.get("mscale_all_dim", 0.0))
    return p


def tiny_config(rope_parameters, interleave, q_lora_rank, bias):
    cfg = DeepseekV3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1, first_k_dense_replace=1, q_lora_rank=q_lora_rank, kv_lora_rank=8, qk_nope_head_dim=4,
        qk_rope_head_dim=8, v_head_dim=6, max_position_embeddings=256, rope_parameters=dict(rope_parameters),
        rope_interleave=interleave, attention_bias=bias)
    cfg._attn_implementation = "eager"
    return cfg


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1] if p.dim() == 2 else 4
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def our_weights(module, dtype):
    out = {}
    for name, p in module.named_parameters():
        mod, kind = name.split(".")
        out[f"mla.{HF_TO_OURS[mod]}.{kind}"] = p.detach().to(dtype)
    # Zebra's full-rank q_proj carries attention_bias, DeepSeek's never does: a zero bias is DeepSeek's.
    if module.config.attention_bias and "mla.q_proj.weight" in out:
        out["mla.q_proj.bias"] = torch.zeros(out["mla.q_proj.weight"].shape[0], dtype=dtype)
    return out


def eager_attention_in_input_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager_attention_forward (one KV head per query head) with the softmax in the input dtype
    instead of fp32, so that the fp64 reference is fp64 throughout."""
    w = torch.matmul(query, key.transpose(2, 3)) * scaling + attention_mask
    p = torch.softmax(w, dim=-1)
    return torch.matmul(p, value).transpose(1, 2).contiguous(), p


def causal_mask(t, dtype):
    return torch.full((t, t), float("-inf"), dtype=dtype).triu(1)[None, None]


ROPES = {
    "plain": {"rope_type": "default", "rope_theta": 10000.0},
    "yarn1": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 1.0, "original_max_position_embeddings": 16},
    "yarn4": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
              "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.0},
    "yarn32": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 32.0, "original_max_position_embeddings": 8,
               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.0},
    # DeepSeek-V3 proper sets mscale == mscale_all_dim; unequal values exercise both the cos/sin ratio and the
    # mscale_all_dim^2 softmax factor.
    "yarn40_mscale": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                      "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                      "mscale_all_dim": 0.5},
}


@pytest.mark.parametrize("rope", list(ROPES))
def test_rope_tables_match_transformers(rope):
    cfg = tiny_config(ROPES[rope], True, 12, False)
    rot = DeepseekV3RotaryEmbedding(cfg)
    pos = torch.arange(0, 200, 7, dtype=torch.long)
    cos_hf, sin_hf = rot(torch.zeros(1, dtype=torch.float32), pos[None])
    ours = run_op("mla_rope_tables", {"positions": pos}, rope=8, **rope_params(ROPES[rope]))
    scale = rot.attention_scaling
    angle = pos.double()[:, None] * rot.inv_freq.double().repeat(2)[None]
    bound = scale * angle * 2.0 ** -22 + 2 * EPS32 * scale
    for name, hf in (("cos", cos_hf[0]), ("sin", sin_hf[0])):
        err = (ours[name] - hf.double()).abs()
        assert (err <= bound).all(), f"{rope} {name}: max err {err.max():.3e}, bound {bound.max():.3e}"


# Every rope setting under both pair orders; the low-rank and the full-rank-with-bias query paths alternate.
CASES = [(rope, interleave, *((12, False) if (i + interleave) % 2 else (None, True)))
         for i, rope in enumerate(ROPES) for interleave in (True, False)]


@pytest.mark.parametrize("rope,interleave,q_lora,bias", CASES)
def test_attention_matches_deepseek_v3(rope, interleave, q_lora, bias):
    cfg = tiny_config(ROPES[rope], interleave, q_lora, bias)
    attn = DeepseekV3Attention(cfg, 0).eval()
    randomize(attn, 1)
    rot = DeepseekV3RotaryEmbedding(cfg)
    b, t, start = 2, 11, 29
    pos = torch.arange(start, start + t, dtype=torch.long)
    x64 = torch.randn(b, t, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    params = dict(hidden=32, heads=4, q_lora_rank=q_lora or 0, kv_lora_rank=8, nope=4, rope=8, v=6, groups=4,
                  latent_norms=1, bias=int(bias), pair_order="deepseek" if interleave else "half",
                  **rope_params(ROPES[rope]))
    # Ours: fp64 stateless; fp32 stateless (decompressed); fp32 prefill 6 + absorbed decode of the other 5.
    runs = ["fp64:0:auto", "fp32:0:auto", "fp32:6:auto"]
    ours = run_op("mla_mixer", {"x": x64, "positions": pos, **our_weights(attn, torch.float64)},
                  runs=";".join(runs), **params)
    with torch.no_grad():
        attn64 = DeepseekV3Attention(cfg, 0).eval().double()
        attn64.load_state_dict(attn.state_dict())
        # DeepseekV3RMSNorm always normalises in fp32 (and eager attention takes the softmax in fp32); the fp64
        # reference must be fp64 throughout.
        for norm in (attn64.q_a_layernorm, attn64.kv_a_layernorm):
            if norm is not None:
                norm.forward = lambda h, n=norm: n.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)
                                                                           + n.variance_epsilon)
        eager = ds.eager_attention_forward
        ds.eager_attention_forward = eager_attention_in_input_dtype
        try:
            ref = attn64(x64, (ours["cos"][None], ours["sin"][None]), causal_mask(t, torch.float64))[0]
        finally:
            ds.eager_attention_forward = eager
        x32 = x64.float()
        cos32, sin32 = rot(x32, pos[None])
        hf32 = attn(x32, (cos32, sin32), causal_mask(t, torch.float32))[0]
    base = rel_rms(hf32, ref)
    err64 = rel_rms(ours["y.0"], ref)
    assert err64 < 1e-13, f"fp64 rel err {err64:.3e}"
    for i in (1, 2):
        err32 = rel_rms(ours[f"y.{i}"], ref)
        print(f"{rope} interleave={interleave} q_lora={q_lora} bias={bias} run={runs[i]}: "
              f"ours64 {err64:.2e} ours32 {err32:.2e} hf32 {base:.2e}")
        assert err32 <= 4 * base + 8 * EPS32, f"{runs[i]}: fp32 rel err {err32:.3e}, HF fp32 gets {base:.3e}"


def test_pair_orders_are_different_models():
    """The permutation matters: the same weights under the other pair order give a different output."""
    cfg = tiny_config(ROPES["yarn4"], True, 12, False)
    attn = DeepseekV3Attention(cfg, 0).eval()
    randomize(attn, 3)
    pos = torch.arange(0, 9, dtype=torch.long)
    x = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    params = dict(hidden=32, heads=4, q_lora_rank=12, kv_lora_rank=8, nope=4, rope=8, v=6, groups=4,
                  latent_norms=1, **rope_params(ROPES["yarn4"]))
    w = our_weights(attn, torch.float64)
    a = run_op("mla_mixer", {"x": x, "positions": pos, **w}, pair_order="deepseek", **params)["y"]
    h = run_op("mla_mixer", {"x": x, "positions": pos, **w}, pair_order="half", **params)["y"]
    for out in (a, h):
        assert torch.isfinite(out).all()
    assert rel_rms(a, h) > 1e-3


# ---- Zebra/HyLo variant: our own reading of HYLO.md 2.2 / 2.3 (not a peer) ----------------------------------

def deepseek_yarn_tables(dim, theta, factor, orig, pos, beta_fast=32.0, beta_slow=1.0):
    """DeepSeek's DeepseekV3YarnRotaryEmbedding as HYLO.md 2.3 describes it, in fp64 (mscale 1, mscale_all_dim 0)."""
    i = torch.arange(0, dim, 2, dtype=torch.float64)
    extra = 1.0 / theta ** (i / dim)
    inter = extra / factor
    corr = lambda rot: dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))
    low, high = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    inv_freq = inter * ramp + extra * (1 - ramp)
    freqs = pos.double()[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], -1)
    m = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return emb.cos() * m, emb.sin() * m


def zebra_reference(x, w, H, G, r_kv, nope, rope, v, cos, sin):
    """The HYLO.md 2.2 pseudo-code, line by line."""
    B, T, _ = x.shape
    c_q = x @ w["mla.q_a_proj.weight"].T                                        # r_q (no q_a_layernorm)
    q = (c_q @ w["mla.q_b_proj.weight"].T).view(B, T, H, nope + rope).transpose(1, 2)
    q_nope, q_pe = q.split([nope, rope], -1)
    ckv = x @ w["mla.kv_a_proj_with_mqa.weight"].T
    c_kv, k_pe = ckv.split([r_kv, rope], -1)
    k_pe = k_pe.view(B, T, 1, rope).transpose(1, 2)                             # one head shared by all
    kv = (c_kv @ w["mla.kv_b_proj.weight"].T).view(B, T, G, nope + v).transpose(1, 2)
    kv = kv[:, :, None].expand(B, G, H // G, T, nope + v).reshape(B, H, T, nope + v)  # repeat_kv
    k_nope, val = kv.split([nope, v], -1)

    def perm_rot(z):  # DeepSeek permutation, then x cos + rotate_half(x) sin
        b, h, s, d = z.shape
        z = z.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
        rot = torch.cat([-z[..., d // 2:], z[..., :d // 2]], -1)
        return z * cos + rot * sin

    q_pe, k_pe = perm_rot(q_pe), perm_rot(k_pe)
    qf = torch.cat([q_nope, q_pe], -1)
    kf = torch.cat([k_nope, k_pe.expand(B, H, T, rope)], -1)
    scores = qf @ kf.transpose(-1, -2) * (nope + rope) ** -0.5 + causal_mask(T, x.dtype)
    o = torch.softmax(scores, -1) @ val                                          # [B, H, T, v]
    return o.transpose(1, 2).reshape(B, T, H * v) @ w["mla.out_proj.weight"].T


@pytest.mark.parametrize("factor,orig", [(1.0, 2048), (32.0, 8), (4.0, 16)])
def test_zebra_variant_against_own_reading(factor, orig):
    H, G, r_q, r_kv, nope, rope, v, d = 16, 8, 24, 12, 4, 8, 6, 40
    g = torch.Generator().manual_seed(5)
    w = {"mla.q_a_proj.weight": torch.randn(r_q, d, generator=g, dtype=torch.float64) / math.sqrt(d),
         "mla.q_b_proj.weight": torch.randn(H * (nope + rope), r_q, generator=g, dtype=torch.float64) / math.sqrt(r_q),
         "mla.kv_a_proj_with_mqa.weight": torch.randn(r_kv + rope, d, generator=g, dtype=torch.float64) / math.sqrt(d),
         "mla.kv_b_proj.weight": torch.randn(G * (nope + v), r_kv, generator=g, dtype=torch.float64) / math.sqrt(r_kv),
         "mla.out_proj.weight": torch.randn(d, H * v, generator=g, dtype=torch.float64) / math.sqrt(H * v)}
    b, t = 2, 10
    pos = torch.arange(40, 40 + t, dtype=torch.long)
    x = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    cos, sin = deepseek_yarn_tables(rope, 500000.0, factor, orig, pos)
    ref = zebra_reference(x, w, H, G, r_kv, nope, rope, v, cos, sin)
    ref32 = zebra_reference(x.float(), {k: u.float() for k, u in w.items()}, H, G, r_kv, nope, rope, v,
                            cos.float(), sin.float())
    base = rel_rms(ref32, ref)
    params = dict(hidden=d, heads=H, q_lora_rank=r_q, kv_lora_rank=r_kv, nope=nope, rope=rope, v=v, groups=G,
                  latent_norms=0, bias=0, pair_order="deepseek", rope_type="yarn", theta=500000.0, factor=factor,
                  original_max_pos=orig)
    runs = ["fp64:0:auto", "fp32:0:decompressed", "fp32:0:absorbed", "fp32:4:auto"]
    ours = run_op("mla_mixer", {"x": x, "positions": pos, **w}, runs=";".join(runs), **params)
    err64 = rel_rms(ours["y.0"], ref)
    assert err64 < 1e-13
    for i in (1, 2, 3):
        err = rel_rms(ours[f"y.{i}"], ref)
        print(f"zebra factor={factor} run={runs[i]}: ours64 {err64:.2e} ours32 {err:.2e} ref32 {base:.2e}")
        assert err <= 4 * base + 8 * EPS32
