"""Loss benchmark: soft-clDice (ours) vs MONAI's SoftclDiceLoss, plus DDT and boundary loss cost.

Forward + backward on CPU of soft-clDice on a 1x1xN^3 logit volume (default N=96) with the same
soft-skeleton iterations, ours (min/max on shifted slices, the selected neighbour's gradient
routed by selection masks in one autograd node per step, no autograd through the target's
skeleton) against
``monai.losses.SoftclDiceLoss``; also the soft skeleton alone (``soft_skeleton`` vs MONAI's
``soft_skel``). Checks that loss values and gradients agree: on the benchmark's random logits
(where a few distinct voxels share a float32 probability and the two implementations may route
such a tie's gradient to different voxels) and on tie-free logits (gradients then agree to
rounding). Then the cost per step (forward + backward) of ``DDTLoss`` and of ``GDLBoundaryLoss``.

    python benchmarks/bench_losses.py [--quick] [--size 96] [--iters 5] [--repeats 5] [--threads 1]

Times are medians over ``--repeats`` runs, ours and MONAI interleaved in the same process, for
each torch thread count in ``--threads`` (comma-separated; 0: all CPUs this process may use, e.g.
``--threads 1,0``). Default 2; on a small machine shared with other busy processes, every
multi-threaded op waits for its slowest thread and both implementations can slow down by orders
of magnitude (measured on the 2-core dev machine: 48^3 went from 0.014 s to 5.8 s): use
``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def _fb(fn, x, *args):
    xi = x.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = fn(xi, *args)
    t1 = time.perf_counter()
    loss.sum().backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, float(loss.detach().sum()), xi.grad


def _compare(fns, x, t, repeats):
    """Interleaved timings (median fwd, bwd per name), last loss values and gradients."""
    times = {name: ([], []) for name in fns}
    out = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            f, b, val, grad = _fb(fn, x, *t)
            times[name][0].append(f)
            times[name][1].append(b)
            out[name] = (val, grad)
    med = {name: (statistics.median(f), statistics.median(b)) for name, (f, b) in times.items()}
    return med, out


def _report(title, med, out):
    (fo, bo), (fr, br) = med["ours"], med["monai"]
    (vo, go), (vr, gr) = out["ours"], out["monai"]
    d = (go - gr).abs()
    print(title)
    print(f"  ours  {fo + bo:.3f} s (fwd {fo:.3f} + bwd {bo:.3f})")
    print(f"  MONAI {fr + br:.3f} s (fwd {fr:.3f} + bwd {br:.3f})")
    print(f"  ours {fo + bo:.3f} s vs MONAI {fr + br:.3f} s, {(fr + br) / (fo + bo):.2f}x")
    gmax = float(gr.abs().max())
    print(f"  max |loss diff| = {abs(vo - vr):.2e}, max |grad diff| = {float(d.max()):.2e} "
          f"(max |grad| {gmax:.2e}; voxels differing by > 1e-4 max |grad|: {int((d > 1e-4 * gmax).sum())})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48^3, 3 repeats")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="2", help="comma-separated thread counts; 0: all CPUs available")
    ap.add_argument("--K", type=int, default=6, help="DDT scale classes")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.repeats = 48, 3
    threads = []
    for tok in a.threads.split(","):
        n_th = int(tok) if int(tok) > 0 else len(os.sched_getaffinity(0))
        if n_th not in threads:
            threads.append(n_th)

    from monai.losses import SoftclDiceLoss as MonaiSoftclDice
    from monai.losses.cldice import soft_skel as monai_soft_skel

    from napari_tubular.geometry.soft_skeleton import soft_skeleton
    from napari_tubular.losses import DDTLoss, GDLBoundaryLoss, SoftclDiceLoss

    n = a.size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, n, n, n, generator=g)
    # a target with tubes: random blobs thresholded (the values do not matter for timing)
    t = (torch.nn.functional.avg_pool3d(torch.rand(1, 1, n, n, n, generator=g), 5, 1, 2) > 0.52).float()
    ours = SoftclDiceLoss(iters=a.iters, smooth=1.0, eps=1e-4)  # eps as MONAI's harmonic mean
    ref = MonaiSoftclDice(iter_=a.iters, sigmoid=True)
    # tie-free logits: every voxel has a different float32 probability
    u = (torch.randperm(n**3, generator=g).double() + 0.5) / n**3
    xu = torch.logit(0.01 + 0.98 * u).float().reshape(1, 1, n, n, n)
    for th in threads:
        torch.set_num_threads(th)
        med, out = _compare({"ours": ours, "monai": ref}, x, (t,), a.repeats)
        _report(f"soft-clDice fwd+bwd, 1x1x{n}^3, iters={a.iters}, CPU threads={th}, "
                f"median of {a.repeats}:", med, out)

        p = torch.sigmoid(xu)
        med, out = _compare({"ours": lambda v: soft_skeleton(v, a.iters).sum(),
                             "monai": lambda v: monai_soft_skel(v, a.iters).sum()}, p, (), a.repeats)
        _report(f"soft skeleton alone (sum), fwd+bwd, tie-free 1x1x{n}^3, iters={a.iters}:", med, out)

    out_u = {name: _fb(fn, xu, t)[2:] for name, fn in (("ours", ours), ("monai", ref))}
    d = (out_u["ours"][1] - out_u["monai"][1]).abs()
    print(f"soft-clDice on tie-free logits: max |loss diff| = "
          f"{abs(out_u['ours'][0] - out_u['monai'][0]):.2e}, max |grad diff| = {float(d.max()):.2e}")

    k = a.K
    seg = torch.randn(1, 1, n, n, n, generator=g)
    scale = torch.randn(1, k + 1, n, n, n, generator=g)
    z = (t[:, 0] * torch.randint(1, k + 1, (1, n, n, n), generator=g)).long()
    phi = torch.randn(1, 1, n, n, n, generator=g) * 5
    ddt = DDTLoss(K=k)
    gb = GDLBoundaryLoss()
    tb = {"ddt": [], "boundary": []}
    for _ in range(a.repeats):
        segv = seg.clone().requires_grad_(True)
        sc = scale.clone().requires_grad_(True)
        t0 = time.perf_counter()
        ddt(segv, sc, t, z).backward()
        tb["ddt"].append(time.perf_counter() - t0)
        f, b, _, _ = _fb(lambda s: gb(s, t, phi), seg)
        tb["boundary"].append(f + b)
    tb = {k: statistics.median(v) for k, v in tb.items()}
    print(f"DDTLoss (K={k}) fwd+bwd, seg 1x1x{n}^3 + scale 1x{k + 1}x{n}^3: {tb['ddt']:.3f} s per step")
    print(f"GDLBoundaryLoss fwd+bwd, 1x1x{n}^3: {tb['boundary']:.3f} s per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
