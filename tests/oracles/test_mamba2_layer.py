"""The whole Mamba2 mixer against Zebra-Llama / MambaInLlama's Mamba2 layer (hybrid_mamba_layer.py), with the
layer's Triton/CUDA calls replaced by mamba_ssm's own pure-PyTorch references (mamba_ssm_ref.py):
  forward: in_proj -> split [z | x (d_xb) | B (d_xb) | C (d_inner) | dt] -> causal depthwise conv + SiLU over
           xBC (nn.Conv1d semantics, or over the repeated x/B with repeat_kv_before_conv) -> x, B reshaped to
           (xb_group, d_state) and repeat_kv'ed to the heads -> SSD (ssd_minimal_discrete, with
           dt = softplus(dt + dt_bias), A = -exp(A_log), D skip) -> RMSNormGated(norm_before_gate=False,
           group_size = d_inner / ngroups) via rms_norm_ref -> out_proj;
  step:    Zebra's Mamba2.step: conv state rolled by one token, selective_state_update_ref with dt_softplus.
Our mixer runs through hylo_testops (op mamba2_mixer) on the same parameters, as one stateless forward and as
a prefill followed by token-by-token decode. fp64 must agree to 1e-10; fp32 may be at most 4x the error of the
same reference run in fp32, plus a floor of 8 fp32 ulps.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from mamba_ssm_ref import rel, rms_norm_ref, run_op, selective_state_update_ref, ssd_reference


def repeat_kv(h, n_rep):  # Llama's: (b, g, l, d) -> (b, g*n_rep, l, d), head i reads group i // n_rep
    b, g, l, d = h.shape
    return h[:, :, None].expand(b, g, n_rep, l, d).reshape(b, g * n_rep, l, d)


class Zebra:
    def __init__(self, params, heads, d_state, d_xb, conv, chunk, repeat_before_conv, eps=1e-5):
        self.p, self.h, self.n, self.d_xb = params, heads, d_state, d_xb
        self.d_inner = heads * d_state
        self.rep = self.d_inner // d_xb
        self.conv, self.chunk, self.before, self.eps = conv, chunk, repeat_before_conv, eps

    def _norm_out(self, y, z):
        # rms_norm_ref upcasts to fp32 by default (right for bf16/fp32, a loss for fp64): keep fp64 in fp64.
        y = rms_norm_ref(y, self.p["mamba.norm.weight"], None, z=z, eps=self.eps,
                         group_size=self.d_inner // self.h, norm_before_gate=False,
                         upcast=y.dtype != torch.float64)
        return F.linear(y, self.p["mamba.out_proj.weight"])

    def forward(self, u):
        """Returns y and the inference state Zebra leaves behind: conv_state [b, conv_dim, d_conv], ssm state."""
        p, n, d_xb, di = self.p, self.n, self.d_xb, self.d_inner
        t = u.shape[1]
        z, xBC, dt = torch.split(F.linear(u, p["mamba.in_proj.weight"]), [di, di + 2 * d_xb, self.h], dim=-1)
        if self.before:
            x, B, C = torch.split(xBC, [d_xb, d_xb, di], dim=-1)
            x = rearrange(repeat_kv(rearrange(x, "b l (g d) -> b g l d", d=n), self.rep), "b g l p -> b l (g p)")
            B = rearrange(repeat_kv(rearrange(B, "b l (g d) -> b g l d", d=n), self.rep), "b g l p -> b l (g p)")
            xBC = torch.cat((x, B, C), dim=-1)
        xt = xBC.transpose(1, 2)
        conv_state = F.pad(xt, (self.conv - xt.shape[-1], 0))
        w, bias = p["mamba.conv1d.weight"], p["mamba.conv1d.bias"]
        xBC = F.silu(F.conv1d(xt, w, bias, padding=self.conv - 1, groups=w.shape[0])[..., :t]).transpose(1, 2)
        if self.before:
            x, B, C = torch.split(xBC, [di, di, di], dim=-1)
            x = rearrange(x, "b l (h p) -> b l h p", p=n)
            B = rearrange(B, "b l (g n) -> b l g n", g=self.h)
        else:
            x, B, C = torch.split(xBC, [d_xb, d_xb, di], dim=-1)
            x = rearrange(repeat_kv(rearrange(x, "b l (g d) -> b g l d", d=n), self.rep), "b g l p -> b l g p")
            B = rearrange(repeat_kv(rearrange(B, "b l (g d) -> b g l d", d=n), self.rep), "b g l n -> b l g n")
        C = rearrange(C, "b l (g n) -> b l g n", g=self.h)
        delta = F.softplus(dt + p["mamba.dt_bias"])
        A = -torch.exp(p["mamba.A_log"])
        y, ssm_state = ssd_reference(x, delta, A, B, C, p["mamba.D"], None, self.chunk)
        return self._norm_out(rearrange(y, "b l h p -> b l (h p)"), z), conv_state, ssm_state

    def step(self, u, conv_state, ssm_state):  # Zebra's Mamba2.step without the causal_conv1d package
        p, n, d_xb, di = self.p, self.n, self.d_xb, self.d_inner
        z, xBC, dt = torch.split(F.linear(u.squeeze(1), p["mamba.in_proj.weight"]), [di, di + 2 * d_xb, self.h],
                                 dim=-1)
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = xBC
        xBC = F.silu(torch.sum(conv_state * rearrange(p["mamba.conv1d.weight"], "d 1 w -> d w"), dim=-1)
                     + p["mamba.conv1d.bias"])
        x, B, C = torch.split(xBC, [d_xb, d_xb, di], dim=-1)
        x = torch.repeat_interleave(rearrange(x, "b (g d) -> b g d", d=n), dim=1, repeats=self.rep)
        B = torch.repeat_interleave(rearrange(B, "b (g d) -> b g d", d=n), dim=1, repeats=self.rep)
        C = rearrange(C, "b (g n) -> b g n", g=self.h)
        A = -torch.exp(p["mamba.A_log"])
        y = selective_state_update_ref(
            ssm_state, x, dt[..., None].expand(-1, -1, n), A[:, None, None].expand(-1, n, n), B, C,
            D=p["mamba.D"][:, None].expand(-1, n), dt_bias=p["mamba.dt_bias"][:, None].expand(-1, n),
            dt_softplus=True)
        return self._norm_out(rearrange(y, "b h p -> b (h p)"), z).unsqueeze(1)


def make_params(hidden, heads, d_state, d_xb, conv, repeat_before_conv, seed):
    gen = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=gen)
    di = heads * d_state
    conv_dim = 3 * di if repeat_before_conv else di + 2 * d_xb
    dt = torch.exp(torch.rand(heads, **f) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "mamba.in_proj.weight": torch.randn(2 * di + 2 * d_xb + heads, hidden, **f) / math.sqrt(hidden),
        "mamba.conv1d.weight": (torch.rand(conv_dim, 1, conv, **f) * 2 - 1) / math.sqrt(conv),
        "mamba.conv1d.bias": (torch.rand(conv_dim, **f) * 2 - 1) / math.sqrt(conv),
        "mamba.dt_bias": dt + torch.log(-torch.expm1(-dt)),
        "mamba.A_log": torch.log(torch.rand(heads, **f) * 15 + 1),
        "mamba.D": 1 + 0.3 * torch.randn(heads, **f),
        # rms_norm_ref always takes weight.float(): fp32-representable values keep the fp64 comparison exact.
        "mamba.norm.weight": (1 + 0.3 * torch.randn(di, **f)).float().double(),
        "mamba.out_proj.weight": torch.randn(hidden, di, **f) / math.sqrt(di),
    }


CASES = [
    # hidden, heads, d_state, d_xb, conv, chunk, repeat_before_conv, T
    (16, 4, 8, 16, 4, 32, False, 70),   # H_kv = 2
    (24, 6, 8, 16, 4, 16, True, 45),    # repeat before the conv (Zebra's switch)
    (32, 4, 64, 64, 4, 16, False, 40),  # d_state 64, H_kv = 1
]


def ops_params(heads, d_state, d_xb, conv, chunk, before):
    return dict(heads=heads, d_state=d_state, d_xb=d_xb, conv=conv, chunk=chunk, repeat_before_conv=int(before))


@pytest.mark.parametrize("hidden,heads,d_state,d_xb,conv,chunk,before,t", CASES)
def test_mixer_matches_zebra_layer_fp64(tmp_path, hidden, heads, d_state, d_xb, conv, chunk, before, t):
    params = make_params(hidden, heads, d_state, d_xb, conv, before, seed=t)
    u = torch.randn(2, t, hidden, dtype=torch.float64, generator=torch.Generator().manual_seed(t + 1))
    zebra = Zebra(params, heads, d_state, d_xb, conv, chunk, before)
    y_ref, _, _ = zebra.forward(u)
    out = run_op(tmp_path, "mamba2_mixer", {"x": u, **params}, **ops_params(heads, d_state, d_xb, conv, chunk, before))
    err = rel(out["y"], y_ref)
    print(f"forward fp64 T={t} before={before}: {err:.2e}")
    assert err <= 1e-10


@pytest.mark.parametrize("prefill", [1, 33])
def test_prefill_then_decode_matches_zebra_step(tmp_path, prefill):
    hidden, heads, d_state, d_xb, conv, chunk, t = 16, 4, 8, 16, 4, 16, 41
    params = make_params(hidden, heads, d_state, d_xb, conv, False, seed=5)
    u = torch.randn(2, t, hidden, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    zebra = Zebra(params, heads, d_state, d_xb, conv, chunk, False)
    y0, conv_state, ssm_state = zebra.forward(u[:, :prefill])
    ys = [y0] + [zebra.step(u[:, i:i + 1], conv_state, ssm_state) for i in range(prefill, t)]
    y_ref = torch.cat(ys, dim=1)
    out = run_op(tmp_path, "mamba2_mixer", {"x": u, **params}, prefill=prefill,
                 **ops_params(heads, d_state, d_xb, conv, chunk, False))
    err = rel(out["y"], y_ref)
    print(f"prefill {prefill} + decode fp64: {err:.2e}")
    assert err <= 1e-10


def test_mixer_fp32_within_reference_fp32_error(tmp_path):
    hidden, heads, d_state, d_xb, conv, chunk, t = 32, 4, 16, 32, 4, 32, 100
    p32 = {k: v.float() for k, v in make_params(hidden, heads, d_state, d_xb, conv, False, seed=8).items()}
    u32 = torch.randn(1, t, hidden, generator=torch.Generator().manual_seed(9))
    args = (heads, d_state, d_xb, conv, chunk, False)
    y_ref, _, _ = Zebra({k: v.double() for k, v in p32.items()}, *args).forward(u32.double())
    y_peer, _, _ = Zebra(p32, *args).forward(u32)
    out = run_op(tmp_path, "mamba2_mixer", {"x": u32, **p32}, **ops_params(*args))
    e_peer, e = rel(y_peer, y_ref), rel(out["y"], y_ref)
    print(f"fp32: ours {e:.2e}, reference in fp32 {e_peer:.2e}")
    assert e <= 4 * e_peer + 8 * torch.finfo(torch.float32).eps
