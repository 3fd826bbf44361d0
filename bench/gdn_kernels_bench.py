"""Benchmark driver for hylo's CUDA gated delta kernels against fla 0.6.0, measured in the same run on one card.

Runs our C++ program (bench/gdn_kernels_bench.cpp, path given by --ours) for our times and the card's ceilings,
then times fla's chunk_gated_delta_rule (prefill) and fused_recurrent_gated_delta_rule (decode) on the same
shapes and dtypes, and prints one table: our time, fla's time, the ratio (fla / ours: > 1 means we are faster),
and achieved FLOP/s or bandwidth against the ceilings. Python only drives the peer side (DESIGN.md: benchmarks
are programs; the measured code on our side is the C++ binary).

  python3 bench/gdn_kernels_bench.py --ours build/kernels-dev/gdn_kernels_bench [--quick]
"""
import argparse
import os
import subprocess
import sys

import torch


def median_ms(fn, warm, reps):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def inputs(B, T, H, Dk, Dv):
    f = dict(device="cuda", dtype=torch.float32)
    q = torch.randn(B, T, H, Dk, **f)
    k = torch.randn(B, T, H, Dk, **f)
    q = (q / q.norm(dim=-1, keepdim=True)).bfloat16()
    k = (k / k.norm(dim=-1, keepdim=True)).bfloat16()
    v = torch.randn(B, T, H, Dv, **f).bfloat16()
    A = 0.05 + 15.95 * torch.rand(H, **f)
    g = -A * torch.nn.functional.softplus(torch.randn(B, T, H, **f) - 4.0)
    beta = torch.sigmoid(torch.randn(B, T, H, **f))
    # fla's op-level state layout is [B, H, K, V] (S^T of ours); same values, its own layout.
    h0 = 0.5 * torch.randn(B, H, Dk, Dv, **f)
    return q, k, v, g, beta, h0


def chunk_flops(T, H, Dk, Dv, C=64):
    n = (T + C - 1) // C
    return H * n * (6 * C * C * Dk + 4 * C * C * Dv + 6 * C * Dk * Dv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    ours = {}
    # Per-stage times of the chunk kernel (the launcher prints them when HYLO_GDN_STAGE_TIMES is set).
    env = dict(os.environ, HYLO_GDN_STAGE_TIMES="1")
    st = subprocess.run([args.ours, "--stages"], capture_output=True, text=True, env=env)
    print("".join(l + "\n" for l in st.stderr.splitlines() if l.startswith(("gdn_stages", "gdn_bwd_stages"))), end="")
    res = subprocess.run([args.ours] + (["--quick"] if args.quick else []), capture_output=True, text=True)
    print(res.stdout, end="")
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
    for line in res.stdout.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "ceiling":
            ours[f[1]] = float(f[2])
        elif f[0] == "chunk":
            ours[("chunk", int(f[1]), int(f[2]), int(f[3]), int(f[4]))] = float(f[6])
        elif f[0] == "fwdbwd":
            ours[("fwdbwd", int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]))] = float(f[7])
        elif f[0] == "step":
            ours[("step", int(f[1]), int(f[2]), int(f[3]), int(f[4]))] = float(f[6])

    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception as e:  # the wheels did not install: our side alone
        print(f"fla unavailable: {e}")
        chunk_gated_delta_rule = fused_recurrent_gated_delta_rule = None

    rows = []
    T = 8192 if args.quick else 65536
    gemm, copy = ours.get("gemm_tflops", float("nan")), ours.get("copy_tbps", float("nan"))
    for H, Dk, Dv in [(3, 128, 256), (6, 256, 512)]:
        key = ("chunk", H, Dk, Dv, T)
        ms = ours.get(key, float("nan"))
        fla_ms = float("nan")
        if chunk_gated_delta_rule is not None:
            q, k, v, g, beta, h0 = inputs(1, T, H, Dk, Dv)
            fn = lambda: chunk_gated_delta_rule(q, k, v, g=g, beta=beta, scale=Dk ** -0.5, initial_state=h0,
                                                output_final_state=True)
            fla_ms = median_ms(fn, 3, 15)
        tflops = chunk_flops(T, H, Dk, Dv) / (ms * 1e-3) / 1e12
        rows.append((f"chunk fwd B1 T{T} H{H} K{Dk} V{Dv}", f"{ms:.3f} ms", f"{fla_ms:.3f} ms", fla_ms / ms,
                     f"{tflops:.1f} TFLOP/s = {100 * tflops / gemm:.1f}% of GEMM"))
    # Forward + backward (training): every input's gradient from d o and d final_state, fla with the same inputs
    # requiring grad (its h0 in its own [B, H, K, V] layout).
    for B, Tt in [(8, 2048), (1, T)]:
        for H, Dk, Dv in [(3, 128, 256), (6, 256, 512)]:
            ms = ours.get(("fwdbwd", B, H, Dk, Dv, Tt), float("nan"))
            fla_ms = float("nan")
            if chunk_gated_delta_rule is not None:
                xs = [x.requires_grad_() for x in inputs(B, Tt, H, Dk, Dv)]
                q, k, v, g, beta, h0 = xs
                do = torch.randn_like(v)
                dht = torch.randn_like(h0)

                def fwdbwd():
                    o, ht = chunk_gated_delta_rule(q, k, v, g=g, beta=beta, scale=Dk ** -0.5, initial_state=h0,
                                                   output_final_state=True)
                    torch.autograd.backward([o, ht], [do, dht])
                    for x in xs:
                        x.grad = None

                fla_ms = median_ms(fwdbwd, 2, 7)
            tflops = 3 * chunk_flops(Tt, H, Dk, Dv) * B / (ms * 1e-3) / 1e12  # backward ~ 2x the forward's work
            rows.append((f"chunk fwd+bwd B{B} T{Tt} H{H} K{Dk} V{Dv}", f"{ms:.3f} ms", f"{fla_ms:.3f} ms",
                         fla_ms / ms, f"~{tflops:.1f} TFLOP/s = {100 * tflops / gemm:.1f}% of GEMM"))
    for B in (1, 64):
        for H, Dk, Dv in [(3, 128, 256), (6, 256, 512)]:
            us = ours.get(("step", B, H, Dk, Dv), float("nan"))
            fla_us = float("nan")
            if fused_recurrent_gated_delta_rule is not None:
                q, k, v, g, beta, h0 = inputs(B, 1, H, Dk, Dv)
                steps = 100
                fn = lambda: fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, scale=Dk ** -0.5, initial_state=h0,
                                                              output_final_state=True)
                fn()
                torch.cuda.synchronize()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.stream(s):
                    fn()
                    torch.cuda.synchronize()
                    with torch.cuda.graph(graph, stream=s):
                        for _ in range(steps):
                            fn()
                fla_us = median_ms(graph.replay, 3, 20) * 1e3 / steps
            state_bytes = 2 * B * H * Dk * Dv * 4
            rows.append((f"step B{B} H{H} K{Dk} V{Dv}", f"{us:.2f} us", f"{fla_us:.2f} us", fla_us / us,
                         f"{state_bytes / (us * 1e-6) / 1e12:.2f} TB/s = {100 * state_bytes / (us * 1e-6) / 1e12 / copy:.0f}% of copy"))

    print()
    print(f"card: {torch.cuda.get_device_name()}  ceilings measured now: bf16 GEMM {gemm:.0f} TFLOP/s, "
          f"D2D copy {copy:.2f} TB/s")
    print(f"{'case':38s} {'hylo':>12s} {'fla 0.6.0':>12s} {'fla/hylo':>9s}  achieved (hylo)")
    for name, a, b, r, ach in rows:
        print(f"{name:38s} {a:>12s} {b:>12s} {r:9.2f}  {ach}")


if __name__ == "__main__":
    main()
