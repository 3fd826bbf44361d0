"""Our GDN mixer against fla's real GatedDeltaNet layer, Triton kernels included (needs a CUDA GPU for the dump).

test_gdn_fla.py checks us against fla's CPU reference functions, composed into the layer here; this script closes
the remaining gap, that composition itself, by running fla's own layer module on a GPU:
  python fla_gpu_gdn_layer.py dump OUTDIR     (GPU machine; fla importable)
      for each config and dtype: FLA-initialised layer, random x and upstream dy; training path (chunk kernel with
      use_gate_in_kernel / use_qk_l2norm_in_kernel / beta sigmoid, autograd) -> y, grads (fla refuses its Hopper
      backward with Triton < 3.7.1, fla issue #640: then only y); inference path (eval,
      no grad, fla Cache: a P-token prefill then one-token steps through fused_recurrent and ShortConvolution.step)
      -> y_decode. Everything to OUTDIR/<config>_<dtype>.safetensors (on the CPU).
  python fla_gpu_gdn_layer.py compare DUMPDIR (here; HYLO_TESTOPS names hylo_testops)
      runs our gdn_layer op on the same parameters and inputs in fp64 (the reference) and in the dump's dtype, and
      prints, for each output, fla's relative RMS error against our fp64 result next to ours; it fails when fla's
      exceeds 4x ours plus a floor of sqrt(n) roundings of the dtype (n = key dim + chunk) -- for fp32 the floor
      uses TF32's unit roundoff, since fla's Triton dots may run in TF32.
Not a CTest entry: CI has no GPU. Results of a run are quoted in the GDN report.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIGS = {  # name: (hidden, num_heads, head_dim, T, prefill)
    "small": (64, 4, 32, 150, 100),
    "hylo_dims": (256, 2, 256, 80, 70),  # d_k 256, d_v 512 as in HyLo
}


def dump(outdir):
    from fla.layers.gated_deltanet import GatedDeltaNet
    from fla.models.cache_utils import Cache

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, (hidden, heads, head_dim, t, prefill) in CONFIGS.items():
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(1234)
            layer = GatedDeltaNet(hidden_size=hidden, head_dim=head_dim, num_heads=heads, expand_v=2.0,
                                  norm_eps=1e-5, layer_idx=0)
            with torch.no_grad():
                layer.o_norm.weight.add_(0.1 * torch.randn_like(layer.o_norm.weight))
            layer = layer.to("cuda", dtype)
            params = dict(layer.named_parameters())
            x = torch.randn(2, t, hidden, device="cuda").to(dtype)
            dy = torch.randn(2, t, hidden, device="cuda").to(dtype)
            layer.train()
            xl = x.clone().requires_grad_()
            y, _, _ = layer(xl)
            out = {"x": x, "dy": dy, "y": y.detach()}
            out.update({n: p.detach() for n, p in params.items()})
            try:
                y.backward(dy)
                out["grad.x"] = xl.grad
                out.update({f"grad.{n}": p.grad for n, p in params.items()})
            except RuntimeError as e:  # fla refuses its Hopper backward with Triton < 3.7.1 (fla issue #640)
                print(f"{name} {dtype}: no gradients from fla here: {str(e).splitlines()[0][:160]}", flush=True)
            layer.eval()
            with torch.no_grad():
                cache = Cache()
                ys = [layer(x[:, :prefill], past_key_values=cache, use_cache=True)[0]]
                for i in range(prefill, t):
                    ys.append(layer(x[:, i:i + 1], past_key_values=cache, use_cache=True)[0])
            out["y_decode"] = torch.cat(ys, 1)
            out["prefill"] = torch.tensor([prefill])
            save_file({k: v.detach().cpu().contiguous() for k, v in out.items()},
                      str(outdir / f"{name}_{str(dtype).split('.')[-1]}.safetensors"))
            print(name, dtype, "dumped", flush=True)


def rel_rms(a, ref):
    a, ref = a.double(), ref.double()
    return ((a - ref).norm() / ref.norm()).item()


def run_op(tmp, tensors, **params):
    src, dst = Path(tmp) / "in.safetensors", Path(tmp) / "out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(src))
    testops = os.environ.get("HYLO_TESTOPS", "build/bin/hylo_testops")
    args = [testops, "gdn_layer", str(src), str(dst)] + [f"{k}={v}" for k, v in params.items()]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr}")
    return load_file(str(dst))


def compare(dumpdir):
    failures = 0
    for path in sorted(Path(dumpdir).glob("*.safetensors")):
        fla = load_file(str(path))
        prefill = int(fla.pop("prefill")[0])
        dtype = fla["x"].dtype
        inputs = {k: v for k, v in fla.items() if k in ("x", "dy") or not (k.startswith("grad.") or k.startswith("y"))}
        head_k = fla["q_proj.weight"].shape[0] // fla["A_log"].shape[0]
        with tempfile.TemporaryDirectory() as tmp:
            ref = run_op(tmp, {k: v.double() for k, v in inputs.items()}, prefill=prefill)
            ours = run_op(tmp, inputs, prefill=prefill)
        u = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11  # bf16, or TF32 for fla's fp32 Triton dots
        floor = (head_k + 64) ** 0.5 * u
        print(f"{path.name}:")
        for key in ["y", "y_decode"] + sorted(k for k in fla if k.startswith("grad.")):
            e_fla, e_ours = rel_rms(fla[key], ref[key]), rel_rms(ours[key], ref[key])
            tol = 4 * e_ours + floor
            ok = e_fla <= tol
            failures += not ok
            print(f"  {key:24s} fla {e_fla:.2e}  ours {e_ours:.2e}  tol {tol:.2e}  {'ok' if ok else 'FAIL'}")
    if failures:
        sys.exit(f"{failures} comparisons over tolerance")


if __name__ == "__main__":
    {"dump": dump, "compare": compare}[sys.argv[1]](sys.argv[2])
