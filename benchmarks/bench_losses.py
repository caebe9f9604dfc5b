"""Loss benchmark: soft-clDice (ours) vs MONAI's SoftclDiceLoss, plus DDT and boundary loss cost.

Forward + backward on CPU of soft-clDice on a 1x1xN^3 logit volume (default N=96) with the same
soft-skeleton iterations, ours (min/max over shifted views, no autograd through the target's
skeleton) against ``monai.losses.SoftclDiceLoss``; checks the loss values and gradients agree.
Then the cost per step (forward + backward) of ``DDTLoss`` and of ``GDLBoundaryLoss``.

    python benchmarks/bench_losses.py [--quick] [--size 96] [--iters 5] [--repeats 3] [--threads 0]

Times are the minimum over ``--repeats`` runs (interleaved ours/MONAI). ``--threads 0`` keeps
torch's default; on a shared machine ``--threads 1`` gives steadier numbers.
"""

from __future__ import annotations

import argparse
import time

import torch


def _fb(fn, x, *args):
    xi = x.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = fn(xi, *args)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, float(loss.detach()), xi.grad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="48^3, 1 repeat")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--K", type=int, default=6, help="DDT scale classes")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.repeats = 48, 1
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    from monai.losses import SoftclDiceLoss as MonaiSoftclDice

    from napari_tubular.losses import DDTLoss, GDLBoundaryLoss, SoftclDiceLoss

    n = a.size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, n, n, n, generator=g)
    # a target with tubes: random blobs thresholded (the values do not matter for timing)
    t = (torch.nn.functional.avg_pool3d(torch.rand(1, 1, n, n, n, generator=g), 5, 1, 2) > 0.52).float()
    ours = SoftclDiceLoss(iters=a.iters, smooth=1.0, eps=1e-4)  # eps as MONAI's harmonic mean
    ref = MonaiSoftclDice(iter_=a.iters, sigmoid=True)

    best = {"ours": [1e9, 1e9], "monai": [1e9, 1e9]}
    for _ in range(a.repeats):
        for name, fn in (("ours", ours), ("monai", ref)):
            f, b, val, grad = _fb(fn, x, t)
            best[name] = [min(best[name][0], f), min(best[name][1], b)]
            if name == "ours":
                v_ours, g_ours = val, grad
            else:
                v_ref, g_ref = val, grad
    t_ours, t_ref = sum(best["ours"]), sum(best["monai"])
    dv = abs(v_ours - v_ref)
    dg = float((g_ours - g_ref).abs().max())
    print(f"soft-clDice fwd+bwd, 1x1x{n}^3, iters={a.iters}, CPU threads={torch.get_num_threads()}:")
    print(f"  ours  {t_ours:.3f} s (fwd {best['ours'][0]:.3f} + bwd {best['ours'][1]:.3f})")
    print(f"  MONAI {t_ref:.3f} s (fwd {best['monai'][0]:.3f} + bwd {best['monai'][1]:.3f})")
    print(f"  ours {t_ours:.3f} s vs MONAI {t_ref:.3f} s, {t_ref / t_ours:.2f}x")
    print(f"  |loss diff| = {dv:.2e}, max |grad diff| = {dg:.2e} (max |grad| {float(g_ref.abs().max()):.2e})")

    k = a.K
    seg = torch.randn(1, 1, n, n, n, generator=g)
    scale = torch.randn(1, k + 1, n, n, n, generator=g)
    z = (t[:, 0] * torch.randint(1, k + 1, (1, n, n, n), generator=g)).long()
    phi = torch.randn(1, 1, n, n, n, generator=g) * 5
    ddt = DDTLoss(K=k)
    gb = GDLBoundaryLoss()
    tb = {"ddt": 1e9, "boundary": 1e9}
    for _ in range(a.repeats):
        segv = seg.clone().requires_grad_(True)
        sc = scale.clone().requires_grad_(True)
        t0 = time.perf_counter()
        ddt(segv, sc, t, z).backward()
        tb["ddt"] = min(tb["ddt"], time.perf_counter() - t0)
        f, b, _, _ = _fb(lambda s: gb(s, t, phi), seg)
        tb["boundary"] = min(tb["boundary"], f + b)
    print(f"DDTLoss (K={k}) fwd+bwd, seg 1x1x{n}^3 + scale 1x{k + 1}x{n}^3: {tb['ddt']:.3f} s per step")
    print(f"GDLBoundaryLoss fwd+bwd, 1x1x{n}^3: {tb['boundary']:.3f} s per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
