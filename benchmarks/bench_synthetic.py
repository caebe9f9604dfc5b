"""Synthetic vessel generator: time per case, and box rendering vs naive whole-volume rendering.

    python benchmarks/bench_synthetic.py [--quick] [--naive-all]

For each size it times ``make_vessel_tree`` (median of a few seeds) and ``render_capsules``
alone (the label + occupancy of the capsule union, each segment evaluated in its own bounding
box), then a naive rendering of the same centerline: for every segment the point-to-segment
distance over the WHOLE volume (the textbook per-voxel-per-segment loop, vectorised over voxels).
The naive one runs on the smallest size only unless ``--naive-all`` is given. Both renderings
must give the same capsule mask (checked).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from napari_tubular.synthetic import make_vessel_tree, render_capsules  # noqa: E402


def naive_render(points, radii, edges, shape, spacing):
    """Capsule union by evaluating every segment on the whole grid (reference, slow).

    Same arithmetic as ``render_capsules`` (broadcast axes, no full coordinate arrays), but
    every segment is evaluated at every voxel instead of inside its bounding box.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    z0, y0, x0 = (np.arange(n) * s for n, s in zip(shape, sp))
    inside = np.zeros(shape, dtype=bool)
    for i, j in edges:
        a, b, ra, rb = points[i], points[j], radii[i], radii[j]
        z, y, x = (z0 - a[0])[:, None, None], (y0 - a[1])[None, :, None], (x0 - a[2])[None, None, :]
        ab = b - a
        t = np.clip((z * ab[0] + y * ab[1] + x * ab[2]) / max(ab @ ab, 1e-12), 0.0, 1.0)
        d2 = (z - t * ab[0]) ** 2 + (y - t * ab[1]) ** 2 + (x - t * ab[2]) ** 2
        r = ra + t * (rb - ra)
        inside |= d2 <= r * r
    return inside


def timed(fn, repeat=1):
    """Median wall time and median CPU time of this process (fair on a shared machine)."""
    wall, cpu = [], []
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3 and 128^3 only, one seed each")
    ap.add_argument("--naive-all", action="store_true", help="run the naive renderer at every size")
    args = ap.parse_args()
    sizes = [64, 128] if args.quick else [64, 128, 256]
    seeds = [0] if args.quick else [0, 1, 2]
    spacing = (1.0, 1.0, 1.0)
    print(
        f"{'size':>6} {'case wall/cpu (s)':>18} {'render ours (s)':>16} {'naive (s)':>10} "
        f"{'ratio':>7} {'segments':>9} {'vessel %':>9}"
    )
    for n in sizes:
        shape = (n, n, n)
        walls, cpus = [], []
        case = None
        for s in seeds:
            w, c, case = timed(partial(make_vessel_tree, shape, spacing, seed=s))
            walls.append(w)
            cpus.append(c)
        t_case, c_case = float(np.median(walls)), float(np.median(cpus))
        P, R, E = case.points_mm, case.radii_mm, case.edges
        t_ours, _, _ = timed(partial(render_capsules, P, R, E, shape, spacing), repeat=3)
        naive = "-"
        ratio = "-"
        if n == sizes[0] or args.naive_all:
            t_naive, _, m_naive = timed(partial(naive_render, P, R, E, shape, spacing))
            m_caps = render_capsules(
                P, R, E, shape, spacing, occupancy=False, centerline_voxels=False
            )[0]
            if not np.array_equal(m_caps, m_naive):
                raise SystemExit(
                    f"mismatch at {n}^3: {int((m_caps != m_naive).sum())} voxels differ"
                )
            naive = f"{t_naive:.2f}"
            ratio = f"{t_naive / t_ours:.0f}x"
        print(
            f"{n:>5}^3 {t_case:>9.2f}/{c_case:<8.2f} {t_ours:>16.3f} {naive:>10} {ratio:>7} {len(E):>9} "
            f"{100 * case.mask.mean():>9.2f}"
        )
    print(
        "ours X s vs naive Y s = ratio (render columns, same centerline, identical masks). "
        "case = make_vessel_tree (tree growth + label + CT-like image), median over seeds; "
        "render = capsule label + occupancy only (ours: per-segment bounding boxes, incl. the "
        "occupancy; naive: label only, whole volume per segment)."
    )


if __name__ == "__main__":
    main()
