"""Shared by the Mamba2 oracle tests: mamba_ssm's pure-PyTorch reference math, imported by path from the source
that scripts/setup.sh unpacks under $HYLO_CACHE/oracles/mamba_ssm_ref (never built: its CUDA extension cannot
build here, and the package __init__ that loads it is skipped), plus running our ops through hylo_testops.
"""
import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from einops import repeat
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)  # tiny tensors: threads would only spin

TESTOPS = os.environ.get("HYLO_TESTOPS", "build/bin/hylo_testops")
CACHE = Path(os.environ.get("HYLO_CACHE", Path.home() / ".cache" / "hylo"))
REF_ROOT = CACHE / "oracles" / "mamba_ssm_ref"

if not (REF_ROOT / "mamba_ssm" / "modules" / "ssd_minimal.py").is_file():
    pytest.fail(f"mamba_ssm reference source missing under {REF_ROOT}: run scripts/setup.sh", pytrace=False)
if "mamba_ssm" not in sys.modules:
    _pkg = types.ModuleType("mamba_ssm")  # a bare package: its __init__ would import the CUDA extension
    _pkg.__path__ = [str(REF_ROOT / "mamba_ssm")]
    sys.modules["mamba_ssm"] = _pkg

# "Listing 1" of the SSD paper (mamba_ssm/modules/ssd_minimal.py)
ssd_minimal_discrete = importlib.import_module("mamba_ssm.modules.ssd_minimal").ssd_minimal_discrete
# the decode step (mamba_ssm/ops/triton/selective_state_update.py)
selective_state_update_ref = importlib.import_module(
    "mamba_ssm.ops.triton.selective_state_update").selective_state_update_ref
# RMSNormGated's reference (mamba_ssm/ops/triton/layernorm_gated.py)
rms_norm_ref = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated").rms_norm_ref


def ssd_reference(x, dt, A, B, C, D, initial_state, block):
    """y [b, t, h, p], final state [b, h, p, n] from ssd_minimal_discrete, in the inputs' dtype. It has no D
    term and wants per-head B/C and t % block == 0, so the D*x skip, the group broadcast ("(g h)", as
    mamba_ssm's chunk_scan_ref does it) and zero-dt tail padding (decay 1, no input) are added here."""
    b, t, h, p = x.shape
    Bh = repeat(B, "b l g n -> b l (g r) n", r=h // B.shape[2])
    Ch = repeat(C, "b l g n -> b l (g r) n", r=h // C.shape[2])
    pad = (-t) % block

    def pad_t(v):
        return torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, pad))

    y, final = ssd_minimal_discrete(pad_t(x * dt[..., None]), pad_t(A * dt), pad_t(Bh), pad_t(Ch), block,
                                    initial_states=None if initial_state is None else initial_state[:, None])
    return y[:, :t] + x * D[:, None], final


def run_op(tmp_path, op, tensors, **params):
    src, dst = tmp_path / f"{op}_in.safetensors", tmp_path / f"{op}_out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(src))
    args = [TESTOPS, op, str(src), str(dst)] + [f"{k}={v}" for k, v in params.items()]
    # Tiny tensors: intra-op threads would only spin (and cost CPU time on a shared machine).
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return load_file(str(dst))


def rel(a, ref):
    """max |a - ref| / max |ref|, in fp64."""
    a, ref = a.double(), ref.double()
    scale = ref.abs().max().item()
    err = (a - ref).abs().max().item()
    return err / scale if scale > 0 else err
