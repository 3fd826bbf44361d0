"""Gated DeltaNet against flash-linear-attention (fla 0.6), the library HyLo's GDN layers come from.

fla's layer and its fused ops are Triton kernels that do not run on a CPU ("0 active drivers"), so the oracles
are fla's own pure-PyTorch pieces:
  * fla/ops/gated_delta_rule/naive.py: naive_recurrent_gated_delta_rule and naive_chunk_gated_delta_rule, for the
    rule itself (our naive, chunk and recurrent forms), forward and gradients through torch autograd;
  * the full layer composed from fla's reference functions on the parameters of a real
    fla.layers.GatedDeltaNet module (names, shapes and FLA's initialisation come from it): nn.Conv1d.forward of
    its ShortConvolution modules (causal: padding K-1, first T outputs) + SiLU, fla's l2norm formula
    x / sqrt(sum x^2 + 1e-6) (fla/modules/norm/l2norm.py), naive_gdn_gate (gate.py), sigmoid beta,
    naive_recurrent_gated_delta_rule, rms_norm_ref (layernorm_gated.py, norm_before_gate=True as
    FusedRMSNormGated with swish), o_proj.
fla's references compute in fp32 whatever they are given (they cast), so: our fp64 form on the same fp32-rounded
inputs is the exact reference; fla's fp32 result, and our fp32 results, must be within 4x the error of the same
math of ours in fp32 (the naive form for the rule, the layer for the layer) plus a floor of sqrt(n) fp32 roundings
(n = the longest reduction: the key dim plus the chunk, plus the widths of the projections for the layer).
Errors are relative RMS (||a - ref|| / ||ref||).
State layouts: ours is [B, H, Dv, Dk] (fla's layer uses this "state_v_first" layout); fla's naive functions use
[B, H, Dk, Dv], transposed here.
"""
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file

from fla.layers.gated_deltanet import GatedDeltaNet
from fla.modules.norm.layernorm_gated import rms_norm_ref
from fla.ops.gated_delta_rule.gate import naive_gdn_gate
from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

TESTOPS = os.environ.get("HYLO_TESTOPS", "build/bin/hylo_testops")
U32 = 2.0 ** -24
# Small tensors on a shared machine: worker threads only add contention (and wall time), here and in hylo_testops.
torch.set_num_threads(1)
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_op(tmp_path, op, tensors, **params):
    src, dst = tmp_path / f"{op}_in.safetensors", tmp_path / f"{op}_out.safetensors"
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(src))
    args = [TESTOPS, op, str(src), str(dst)] + [f"{k}={v}" for k, v in params.items()]
    r = subprocess.run(args, capture_output=True, text=True, env=ONE_THREAD_ENV)
    assert r.returncode == 0, f"{' '.join(args)} failed: {r.stderr}"
    return load_file(str(dst))


def rel_rms(a, ref):
    a, ref = a.double(), ref.double()
    n = ref.norm().item()
    e = (a - ref).norm().item()
    return e / n if n > 0 else e


def check(name, got, ref64, own32, floor, report, own="our fp32 naive form"):
    """got (fla fp32 or ours fp32) vs the fp64 reference, within 4x what `own` (the same math of ours in fp32)
    gets, plus floor."""
    e, e_own = rel_rms(got, ref64), rel_rms(own32, ref64)
    tol = 4 * e_own + floor
    report.append(f"{name}: {e:.2e} ({own} {e_own:.2e}, tol {tol:.2e})")
    assert e <= tol, f"{name}: relative RMS error {e:.3e} > {tol:.3e} ({own}: {e_own:.3e})"


def rule_inputs(b, t, h, dk, dv, seed):
    gen = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=gen)
    q = torch.randn(b, t, h, dk, **f)
    k = torch.randn(b, t, h, dk, **f)
    a = 0.05 + 15.95 * torch.rand(h, **f)
    inp = {
        "q": q / q.norm(dim=-1, keepdim=True),
        "k": k / k.norm(dim=-1, keepdim=True),
        "v": torch.randn(b, t, h, dv, **f),
        "g": -a * F.softplus(torch.randn(b, t, h, **f) - 4.0),
        "beta": torch.sigmoid(torch.randn(b, t, h, **f)),
        "h0": 0.5 * torch.randn(b, h, dv, dk, **f),
        "do": torch.randn(b, t, h, dv, **f),
        "dht": torch.randn(b, h, dv, dk, **f),
    }
    return {k: v.float() for k, v in inp.items()}  # the fp32-rounded inputs both sides see


def fla_rule(fn, inp):
    """fla's reference with autograd; state and its gradient returned in our [B, H, Dv, Dk] layout."""
    leaves = {k: inp[k].clone().requires_grad_() for k in ("q", "k", "v", "g", "beta", "h0")}
    h0 = leaves["h0"].transpose(-1, -2)  # ours [B,H,Dv,Dk] -> fla [B,H,Dk,Dv]
    kw = dict(scale=inp["q"].shape[-1] ** -0.5, initial_state=h0, output_final_state=True)
    if fn is naive_recurrent_gated_delta_rule:
        o, ht = fn(leaves["q"], leaves["k"], leaves["v"], leaves["beta"], leaves["g"], **kw)
    else:
        o, ht = fn(leaves["q"], leaves["k"], leaves["v"], leaves["g"], leaves["beta"], chunk_size=64, **kw)
    ht = ht.transpose(-1, -2)
    ((o * inp["do"]).sum() + (ht * inp["dht"]).sum()).backward()
    out = {"o": o.detach(), "ht": ht.detach()}
    out.update({f"grad.{k}": v.grad for k, v in leaves.items()})
    return out


@pytest.mark.parametrize("t,h,dk,dv", [(1, 2, 16, 32), (65, 2, 16, 32), (130, 1, 16, 32), (70, 1, 256, 512)])
def test_rule_matches_fla_reference(tmp_path, t, h, dk, dv):
    inp = rule_inputs(2 if dk < 256 else 1, t, h, dk, dv, seed=1000 + t + dk)
    ref = run_op(tmp_path, "gdn_rule", {k: v.double() for k, v in inp.items()}, forms="naive")
    ours = run_op(tmp_path, "gdn_rule", inp, forms="naive,chunk,recurrent")
    fla = {"fla_recurrent": fla_rule(naive_recurrent_gated_delta_rule, inp),
           "fla_chunk": fla_rule(naive_chunk_gated_delta_rule, inp)}
    floor = (dk + 64) ** 0.5 * U32
    report = []
    for key in ("o", "ht", "grad.q", "grad.k", "grad.v", "grad.g", "grad.beta", "grad.h0"):
        ref64, own32 = ref["naive." + key], ours["naive." + key]
        assert ref64.dtype == torch.float64 and own32.dtype == torch.float32
        for name, res in fla.items():
            check(f"{name} {key}", res[key], ref64, own32, floor, report)
        for form in ("chunk", "recurrent"):
            check(f"ours_{form} {key}", ours[f"{form}.{key}"], ref64, own32, floor, report)
    print(f"\nT={t} H={h} Dk={dk} Dv={dv}\n  " + "\n  ".join(report))


def fla_layer_reference(layer, x):
    """fla's GatedDeltaNet forward (use_gate, use_short_conv, no GVA) from fla's CPU reference pieces."""
    t = x.shape[1]

    def short_conv(conv, u):  # ShortConvolution is an nn.Conv1d with padding K-1; causal = the first T outputs
        return F.silu(torch.nn.Conv1d.forward(conv, u.transpose(1, 2))[..., :t].transpose(1, 2))

    def l2norm(u):  # fla/modules/norm/l2norm.py: x * rsqrt(sum(x^2) + eps), eps = 1e-6
        return u / torch.sqrt((u * u).sum(-1, keepdim=True) + 1e-6)

    q = l2norm(rearrange(short_conv(layer.q_conv1d, layer.q_proj(x)), "b t (h d) -> b t h d", d=layer.head_k_dim))
    k = l2norm(rearrange(short_conv(layer.k_conv1d, layer.k_proj(x)), "b t (h d) -> b t h d", d=layer.head_k_dim))
    v = rearrange(short_conv(layer.v_conv1d, layer.v_proj(x)), "b t (h d) -> b t h d", d=layer.head_v_dim)
    g = naive_gdn_gate(layer.a_proj(x), layer.A_log, layer.dt_bias)
    beta = layer.b_proj(x).sigmoid()
    o, _ = naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=layer.head_k_dim ** -0.5)
    gate = rearrange(layer.g_proj(x), "b t (h d) -> b t h d", d=layer.head_v_dim)
    o = rms_norm_ref(o, layer.o_norm.weight, None, z=gate, eps=layer.o_norm.eps, norm_before_gate=True)
    return layer.o_proj(rearrange(o, "b t h d -> b t (h d)"))


@pytest.mark.parametrize("t", [5, 70])
def test_layer_matches_fla(tmp_path, t):
    torch.manual_seed(7 + t)
    layer = GatedDeltaNet(hidden_size=32, head_dim=8, num_heads=2, expand_v=2.0, norm_eps=1e-5)
    assert layer.o_norm.activation in ("swish", "silu") and not layer.allow_neg_eigval
    with torch.no_grad():  # fla initialises o_norm to ones; perturb it so that a mis-applied weight shows
        layer.o_norm.weight.add_(0.1 * torch.randn_like(layer.o_norm.weight))
    params = dict(layer.named_parameters())
    x = torch.randn(2, t, 32)
    dy = torch.randn(2, t, 32)
    xl = x.clone().requires_grad_()
    y = fla_layer_reference(layer, xl)
    y.backward(dy)
    fla = {"y": y.detach(), "grad.x": xl.grad}
    fla.update({f"grad.{n}": p.grad for n, p in params.items()})

    tensors = {"x": x, "dy": dy, **{n: p.detach() for n, p in params.items()}}
    ref = run_op(tmp_path, "gdn_layer", {k: v.double() for k, v in tensors.items()}, norm_eps=1e-5)
    ours = run_op(tmp_path, "gdn_layer", tensors, norm_eps=1e-5)
    # Every fla parameter is one of ours, with the same shape, and nothing else.
    assert {k for k in ours if k.startswith("grad.")} == {f"grad.{n}" for n in params} | {"grad.x"}
    floor = (32 + 8 * 2 * 2 + 64) ** 0.5 * U32
    report = []
    for key in fla:
        assert ours[key].shape == fla[key].shape, key
        check(f"fla {key}", fla[key], ref[key], ours[key], floor, report, own="our fp32 layer")
    print(f"\nlayer T={t}\n  " + "\n  ".join(report))
