"""Benchmark: anisotropic EDT at 256^3, ours (``edt_mm``, the ``edt`` package) vs scipy and SimpleITK.

    python benchmarks/bench_edt.py [--quick] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_tubular.geometry import edt_mm  # noqa: E402


def best_of(fn, repeat):
    t = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.size or (128 if args.quick else 256)
    repeat = 2 if args.quick else 3
    spacing = (2.5, 0.7, 0.7)
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    # a vessel-like mask: smoothed noise thresholded (about 12 % foreground, many components)
    noise = ndi.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 4)
    mask = noise > np.quantile(noise, 0.88)
    t_ours, d = best_of(lambda: edt_mm(mask, spacing), repeat)
    t_scipy, ref = best_of(lambda: ndi.distance_transform_edt(mask, sampling=spacing), 1)
    err = float(np.abs(d.astype(np.float64) ** 2 - ref**2).max())
    line = (f"EDT {n}^3 spacing {spacing}: ours {t_ours:.3f} s vs scipy {t_scipy:.3f} s "
            f"({t_scipy / t_ours:.1f}x)")
    try:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetSpacing(spacing[::-1])

        def run_sitk():
            f = sitk.SignedMaurerDistanceMapImageFilter()
            f.SetUseImageSpacing(True)
            f.SetSquaredDistance(False)
            f.SetInsideIsPositive(True)
            return sitk.GetArrayFromImage(f.Execute(img))

        t_sitk, _ = best_of(run_sitk, 1)
        line += f" vs SimpleITK Maurer {t_sitk:.3f} s ({t_sitk / t_ours:.1f}x)"
    except ImportError:
        pass
    print(line)
    print(f"max |ours^2 - scipy^2| = {err:.2e} mm^2 (float32 output)")
    # the comparison only counts if both computed the same distances (float32 rounding allowed)
    tol = 1e-5 * max(1.0, float((ref**2).max()))
    if not err <= tol:
        raise SystemExit(f"EDT mismatch: ours differs from scipy by {err:.3g} mm^2 (> {tol:.3g})")


if __name__ == "__main__":
    main()
