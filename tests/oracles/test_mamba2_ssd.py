"""Mamba2 SSD against mamba_ssm's own reference math (state-spaces/mamba 2.2.4, pure-PyTorch parts, loaded
by mamba_ssm_ref.py from the source scripts/setup.sh fetches). The oracles:
  * ssd_minimal_discrete (mamba_ssm/modules/ssd_minimal.py, "Listing 1" of the paper) for the sequence forms,
    plus its gradients through torch autograd; it has no D term and needs per-head B/C and T % block == 0, so
    the D*x skip, the group broadcast ("(g h)", as mamba_ssm's chunk_scan_ref does) and zero-dt padding are
    added here;
  * selective_state_update_ref (mamba_ssm/ops/triton/selective_state_update.py) for the one-token step.
Tolerances: fp64 runs must agree to 1e-10 relative (both sides are exact math); fp32 runs of ours may be at
most 4x the error of mamba_ssm's own fp32 run of the same reference (against the fp64 oracle on the same
fp32-rounded inputs) plus a floor of 8 fp32 ulps.
"""
import pytest
import torch
from einops import repeat

from mamba_ssm_ref import rel, run_op, selective_state_update_ref, ssd_reference


def make_inputs(b, t, h, p, n, g, with_state, seed):
    gen = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64, generator=gen)
    dt_init = torch.exp(torch.rand(h, **f) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                        + torch.log(torch.tensor(1e-3)))
    dt_bias = dt_init + torch.log(-torch.expm1(-dt_init))
    inp = {
        "x": torch.randn(b, t, h, p, **f),
        "dt": torch.nn.functional.softplus(torch.randn(b, t, h, **f) + dt_bias),
        "A": -torch.exp(torch.log(torch.rand(h, **f) * 15 + 1)),
        "B": torch.randn(b, t, g, n, **f),
        "C": torch.randn(b, t, g, n, **f),
        "D": torch.randn(h, **f),
    }
    if with_state:
        inp["initial_state"] = torch.randn(b, h, p, n, **f)
    weights = {"wy": torch.randn(b, t, h, p, **f), "ws": torch.randn(b, h, p, n, **f)}
    return inp, weights


def mamba_reference(inp, block):
    """y, final_state from mamba_ssm's ssd_minimal_discrete, in the dtype of the inputs."""
    return ssd_reference(*(inp.get(k) for k in ("x", "dt", "A", "B", "C", "D", "initial_state")), block)


def reference_with_grads(inp, weights, block):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    y, final = mamba_reference(leaves, block)
    loss = (y * weights["wy"].to(y.dtype)).sum() + (final * weights["ws"].to(final.dtype)).sum()
    loss.backward()
    return y.detach(), final.detach(), {k: v.grad for k, v in leaves.items()}


CASES = [
    # (T, chunk, H, P, N, G, with_state)
    (1, 64, 4, 8, 64, 2, False),
    (63, 64, 4, 8, 64, 2, True),
    (65, 64, 2, 16, 128, 1, True),
    (200, 64, 6, 8, 64, 3, True),
    (300, 256, 4, 8, 64, 2, False),
]


@pytest.mark.parametrize("t,chunk,h,p,n,g,with_state", CASES)
def test_ssd_matches_mamba_minimal_fp64(tmp_path, t, chunk, h, p, n, g, with_state):
    inp, w = make_inputs(2, t, h, p, n, g, with_state, seed=t * 7 + n)
    y_ref, s_ref, grads_ref = reference_with_grads(inp, w, block=chunk)
    for op, params in (("ssd_chunk", {"chunk_size": chunk}), ("ssd_naive", {})):
        out = run_op(tmp_path, op, {**inp, **w}, **params)
        errs = {"y": rel(out["y"], y_ref), "final_state": rel(out["final_state"], s_ref)}
        errs.update({f"grad_{k}": rel(out[f"grad_{k}"], v) for k, v in grads_ref.items()})
        print(op, t, chunk, {k: f"{v:.2e}" for k, v in errs.items()})
        for name, err in errs.items():
            assert err <= 1e-10, f"{op} T={t} Q={chunk}: {name} differs from mamba_ssm by {err:.3e}"


@pytest.mark.parametrize("t,chunk", [(300, 256)])
def test_ssd_fp32_within_mamba_fp32_error(tmp_path, t, chunk):
    inp, w = make_inputs(1, t, 4, 16, 64, 2, True, seed=99 + t)
    inp32 = {k: v.float() for k, v in inp.items()}
    y_ref, s_ref = mamba_reference({k: v.double() for k, v in inp32.items()}, chunk)  # exact math, same inputs
    y_m32, s_m32 = mamba_reference(inp32, chunk)  # mamba_ssm's reference in fp32: the error fp32 math gets
    e_mamba, es_mamba = rel(y_m32, y_ref), rel(s_m32, s_ref)
    floor = 8 * torch.finfo(torch.float32).eps
    for op, params in (("ssd_chunk", {"chunk_size": chunk}), ("ssd_naive", {})):
        out = run_op(tmp_path, op, inp32, **params)
        e, es = rel(out["y"], y_ref), rel(out["final_state"], s_ref)
        print(f"{op} T={t} fp32: y {e:.2e} (mamba {e_mamba:.2e}), state {es:.2e} (mamba {es_mamba:.2e})")
        assert e <= 4 * e_mamba + floor, f"{op}: y error {e:.3e} vs mamba_ssm fp32 {e_mamba:.3e}"
        assert es <= 4 * es_mamba + floor, f"{op}: state error {es:.3e} vs mamba_ssm fp32 {es_mamba:.3e}"


@pytest.mark.parametrize("h,g", [(4, 4), (6, 2)])
def test_recurrent_step_matches_selective_state_update_ref(tmp_path, h, g):
    b, p, n = 3, 8, 64
    gen = torch.Generator().manual_seed(h * 10 + g)
    f = dict(dtype=torch.float64, generator=gen)
    x, dt = torch.randn(b, h, p, **f), torch.rand(b, h, **f) * 0.2 + 1e-3
    A, D = -torch.rand(h, **f) * 8 - 0.5, torch.randn(h, **f)
    B, C = torch.randn(b, g, n, **f), torch.randn(b, g, n, **f)
    state = torch.randn(b, h, p, n, **f)
    ref_state = state.clone()
    y_ref = selective_state_update_ref(ref_state, x, repeat(dt, "b h -> b h p", p=p), repeat(A, "h -> h p n", p=p, n=n),
                             B, C, D=repeat(D, "h -> h p", p=p))
    out = run_op(tmp_path, "ssd_recurrent", {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "state": state})
    assert rel(out["y"], y_ref) <= 1e-12
    assert rel(out["final_state"], ref_state) <= 1e-12
