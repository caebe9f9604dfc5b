"""Benchmark: DDT soft reconstruction + refinement, Refiner slider latency, memory.

Compares, in one run, our vectorised scatter with (a) a per-seed Python loop that adds a local
kernel patch and (b) one whole-volume ``scipy.ndimage.gaussian_filter`` per radius class, on a
synthetic vessel tree, for about 1k seeds (every k-th voxel of the hard skeleton), the whole thin
skeleton (a few thousand seeds) and a dense pseudo-skeleton (40k+ seeds).

Large balls (session 32): balls and thick cylinders of radius 8 to 32 voxels whose radius map is
their Euclidean distance transform (a user's hand-made map for ``refine``), refined by the exact
scatter and by ``refine``'s automatic choice (the fast path for large balls where it pays), in
one run; and the same on the network outputs of the bundled sample (the fast path is not taken
there: the outputs are those of the exact scatter).

    python benchmarks/bench_refinement.py [--quick] [--size 256] [--device cpu|cuda|auto]
                                          [--large-only] [--no-sample]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_tubular.geometry import (  # noqa: E402
    Refiner,
    edt_mm,
    local_radius_mm,
    skeletonize_mask,
    soft_reconstruction,
)


# --------------------------------------------------------------------------------------------
# synthetic tree (self-contained so the benchmark does not depend on another module)
# --------------------------------------------------------------------------------------------
def make_tree(size: int = 256, spacing=(1.0, 1.0, 1.0), seed: int = 0, r0_vox: float = 6.0):
    """Binary tree of tubes: returns (mask bool, centreline voxels (N,3) float, radii mm (N,))."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    sp = np.asarray(spacing, float)
    mask = np.zeros(shape, bool)
    pts, rads = [], []

    def segment(p0, p1, r_vox):
        r_mm = r_vox * sp.min()
        lo = np.maximum(np.floor(np.minimum(p0, p1) - r_mm / sp - 1).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(p0, p1) + r_mm / sp + 2).astype(int), shape)
        if np.any(hi <= lo):
            return
        g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        v = (g - p0) * sp
        d = (p1 - p0) * sp
        t = np.clip((v @ d) / max(d @ d, 1e-9), 0, 1)
        dist = np.linalg.norm(v - t[..., None] * d, axis=-1)
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= dist <= r_mm
        n = max(2, int(np.linalg.norm(d) / sp.min()) + 1)
        for s in np.linspace(0, 1, n):
            pts.append(p0 + s * (p1 - p0))
            rads.append(r_mm)

    def grow(p, direction, r_vox, depth):
        if depth == 0 or r_vox < 1.0:
            return
        length = rng.uniform(0.18, 0.3) * size
        q = p + direction * length
        q = np.clip(q, r_vox + 2, np.array(shape) - r_vox - 3)
        segment(p, q, r_vox)
        for sgn in (-1, 1):
            nd = direction + sgn * rng.normal(0, 0.7, 3)
            nd /= np.linalg.norm(nd)
            grow(q, nd, r_vox * 0.75, depth - 1)

    start = np.array([size * 0.1, size / 2, size / 2])
    grow(start, np.array([1.0, 0.0, 0.0]), r0_vox, 5)
    return mask, np.asarray(pts), np.asarray(rads)


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------
def loop_reconstruction(seeds, sigma_mm, weights, shape, spacing, truncate=3.0):
    """Baseline (a): one Python iteration per seed adding a local kernel patch."""
    out = np.zeros(shape, np.float32)
    sp = np.asarray(spacing)
    for (z, y, x), s, w in zip(seeds, sigma_mm, weights):
        h = np.floor(truncate * s / sp).astype(int)
        z0, z1 = max(z - h[0], 0), min(z + h[0] + 1, shape[0])
        y0, y1 = max(y - h[1], 0), min(y + h[1] + 1, shape[1])
        x0, x1 = max(x - h[2], 0), min(x + h[2] + 1, shape[2])
        dz = ((np.arange(z0, z1) - z) * sp[0])[:, None, None] ** 2
        dy = ((np.arange(y0, y1) - y) * sp[1])[None, :, None] ** 2
        dx = ((np.arange(x0, x1) - x) * sp[2])[None, None, :] ** 2
        d2 = dz + dy + dx
        k = np.exp(-d2 / (2 * s * s)) * w
        k[d2 > (truncate * s) ** 2] = 0
        out[z0:z1, y0:y1, x0:x1] += k
    return out


def grouped_filter_reconstruction(seeds, sigma_mm, weights, shape, spacing, truncate=3.0,
                                  n_classes=None):
    """Baseline (b): one whole-volume Gaussian filter per (integer-voxel) radius class."""
    from scipy import ndimage as ndi

    sp = np.asarray(spacing)
    radius_vox = np.rint(3 * sigma_mm / sp.min()).astype(int)
    radius_vox = np.maximum(radius_vox, 1)
    out = np.zeros(shape, np.float32)
    for rc in np.unique(radius_vox):
        sel = radius_vox == rc
        imp = np.zeros(shape, np.float32)
        np.add.at(imp, tuple(seeds[sel].T), weights[sel])
        s_mm = rc * sp.min() / 3.0
        s_vox = s_mm / sp
        # peak normalisation: a unit impulse gives 1 at its centre
        g = ndi.gaussian_filter(imp, s_vox, truncate=truncate, mode="constant")
        unit = np.zeros((2 * int(truncate * s_vox.max()) + 3,) * 3, np.float32)
        c = unit.shape[0] // 2
        unit[c, c, c] = 1
        peak = ndi.gaussian_filter(unit, s_vox, truncate=truncate, mode="constant")[c, c, c]
        out += g / peak
    return out


def timeit(fn, repeat=1):
    best = math.inf
    res = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM; ru_maxrss is inherited over exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_case(size: int, spacing):
    """(mask, source): napari_tubular.synthetic's tree when available, else :func:`make_tree`."""
    try:
        from napari_tubular.synthetic import make_vessel_tree
    except ImportError:
        mask, _, _ = make_tree(size, spacing, seed=1, r0_vox=6.0)
        return mask, "bench_refinement.make_tree"
    case = make_vessel_tree((size,) * 3, spacing, seed=0, distractors=False, bias=False,
                            blur=False)
    return case.mask.astype(bool), "napari_tubular.synthetic.make_vessel_tree(seed=0)"


def network_like_outputs(mask, spacing):
    """A probability map peaking on the centreline (0.5 at the wall, 0.99 on the axis) and a
    radius map in mm: ``local_radius_mm`` (the largest EDT in each voxel's 3 x 3 x 3
    neighbourhood + 0.1 voxel; an earlier text said EDT + 0.2 voxel). Off the axis it is about a
    voxel above the voxel's own distance to the wall (the DDT target), so the dense case's
    refined labels come out wider than the tube (Dice 0.87 / 0.90 at T_r = 0.25 / 0.5 at 256^3;
    0.97 / 0.92 with EDT + 0.2: ``refiner.py``'s module docstring)."""
    from scipy import ndimage as ndi

    d = edt_mm(mask, spacing)
    dmax = ndi.maximum_filter(d, size=9)
    prob = np.where(mask, 0.5 + 0.49 * np.clip(d / np.maximum(dmax, 1e-3), 0, 1), 0.0)
    return prob.astype(np.float32), local_radius_mm(mask, spacing)


def scipy_trim(labels, fraction, min_fraction):
    """The partial-volume trim by its definition, on the whole volume (before session 11)."""
    from scipy import ndimage as ndi

    lab = labels.astype(bool)
    interior = ndi.binary_erosion(lab)
    boundary = lab & ~interior & ndi.binary_dilation(interior)
    return (lab & ~(boundary & (fraction < min_fraction))).astype(np.uint8)


def volume_bincount_specks(mask, spacing, min_mm3):
    """The speck filter with a whole-volume bincount and lookup (before session 11)."""
    import cc3d

    labels, n = cc3d.connected_components(mask.view(np.uint8), connectivity=26, return_N=True)
    keep = np.bincount(labels.ravel(), minlength=n + 1) * float(np.prod(spacing)) >= min_mm3
    keep[0] = False
    return keep[labels].astype(np.uint8)


def post_processing_latency(labels, mask, spacing, repeat):
    """What every slider move runs after the refinement (``segment``'s partial-volume trim and
    speck filter), ours vs the whole-volume versions, on a CT-like image of the tree."""
    import cc3d
    from scipy import ndimage as ndi

    from napari_tubular.geometry import remove_small_components
    from napari_tubular.geometry.partial_volume import partial_volume_fraction, trim_partial_volume

    rng = np.random.default_rng(0)
    image = ndi.gaussian_filter(40.0 + 260.0 * mask, 0.7) + rng.normal(0, 15, mask.shape)
    labels = np.asarray(labels, np.uint8)
    labels |= (rng.random(mask.shape) < 2e-4).astype(np.uint8)  # specks for the filter
    fraction = partial_volume_fraction(image.astype(np.float32), labels > 0)
    print(f"\n== per slider move after the refinement ({labels.sum()} label voxels, "
          f"{int(((labels > 0) & (fraction < 0.4)).sum())} below the trim fraction)")
    from napari_tubular.geometry import partial_volume

    partial_volume.THIN_TRIM = False  # the thick parts' rule alone: what scipy_trim defines
    try:
        t_ours, a = timeit(lambda: trim_partial_volume(labels, fraction, 0.4), repeat)
    finally:
        partial_volume.THIN_TRIM = True
    t_ref, b = timeit(lambda: scipy_trim(labels, fraction, 0.4), repeat)
    print(f"partial-volume trim, thick parts' rule: ours {t_ours:.3f} s vs whole-volume "
          f"erosion/dilation {t_ref:.3f} s ({t_ref / t_ours:.1f}x), identical: "
          f"{np.array_equal(a, b)}")
    t_full, c = timeit(lambda: trim_partial_volume(labels, fraction, 0.4), repeat)
    print(f"the whole trim (session 25: thin parts too, simple points only): {t_full:.3f} s, "
          f"{int(labels.sum() - c.sum())} voxels removed (thick parts' rule: "
          f"{int(labels.sum() - a.sum())})")
    t_ours, (a, _) = timeit(lambda: remove_small_components(labels, spacing, 20.0), repeat)
    t_ref, b = timeit(lambda: volume_bincount_specks(labels, spacing, 20.0), repeat)
    vox = int(np.ceil(20.0 / np.prod(spacing)))
    t_dust, c = timeit(lambda: cc3d.dust(labels, vox, connectivity=26), repeat)
    print(f"speck filter (< 20 mm^3): ours {t_ours:.3f} s vs whole-volume bincount "
          f"{t_ref:.3f} s ({t_ref / t_ours:.1f}x) vs cc3d.dust {t_dust:.3f} s "
          f"({t_dust / t_ours:.1f}x), identical: {np.array_equal(a, b) and np.array_equal(a, c)}")
    from napari_tubular.geometry import (
        BLOB_RATIO,
        fill_cavities,
        remove_blob_components,
        remove_specks_and_blobs,
        remove_unconfident_components,
    )
    from napari_tubular.geometry.components import CONFIDENCE_MAX_MM3

    prob = np.clip(image / 300.0, 0.0, 1.0).astype(np.float32)

    def four_steps():
        out, _ = remove_small_components(fill_cavities(labels, spacing), spacing, 20.0)
        out, _ = remove_unconfident_components(out, prob, 0.99, spacing, CONFIDENCE_MAX_MM3)
        return remove_blob_components(out, spacing, BLOB_RATIO)[0]

    t_ours, (a, _, _) = timeit(lambda: remove_specks_and_blobs(labels, spacing, 20.0,
                                                               BLOB_RATIO, prob, 0.99), repeat)
    t_ref, b = timeit(four_steps, repeat)
    print(f"the whole clean-up (cavities, specks, confidence 0.99, blobs; session 29: one "
          f"labelling): ours {t_ours:.3f} s vs the four functions one after the other "
          f"{t_ref:.3f} s ({t_ref / t_ours:.1f}x), identical: {np.array_equal(a, b)}")


def blob_case(kind: str, radius_vox: int):
    """A ball, or a cylinder along z four radii long, of ``radius_vox`` voxels (1 mm), with P =
    0.95 inside and its EDT as the radius map."""
    n = 2 * radius_vox + 5
    c = (n - 1) / 2
    z, y, x = np.ogrid[:n, :n, :n]
    if kind == "ball":
        mask = (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= radius_vox ** 2
    else:
        disc = (y - c) ** 2 + (x - c) ** 2 <= radius_vox ** 2
        mask = np.broadcast_to(disc, (4 * radius_vox, n, n)).copy()
    prob = np.where(mask, 0.95, 0.0).astype(np.float32)
    return prob, edt_mm(mask, (1.0, 1.0, 1.0)).astype(np.float32)


def compare_exact_and_auto(prob, radius, spacing, tp, tr, repeat=1):
    """``refine`` by the exact scatter and by its automatic choice, interleaved: (exact s, auto
    s, exact result, auto result)."""
    from napari_tubular.geometry import refine, spheres

    saved = spheres.FAST_MIN_ENTRIES
    t_exact, t_auto = math.inf, math.inf
    for _ in range(repeat):
        try:
            spheres.FAST_MIN_ENTRIES = math.inf
            t, exact = timeit(lambda: refine(prob, radius, spacing, tp=tp, tr=tr))
            t_exact = min(t_exact, t)
        finally:
            spheres.FAST_MIN_ENTRIES = saved
        t, auto = timeit(lambda: refine(prob, radius, spacing, tp=tp, tr=tr))
        t_auto = min(t_auto, t)
    return t_exact, t_auto, exact, auto


def describe(exact, auto, trs=(0.25, 0.5, 0.6)):
    differ = [int(((auto.refined > t) != (exact.refined > t)).sum()) for t in trs]
    inside = exact.refined > 0
    rel = float((np.abs(auto.refined - exact.refined)[inside] / exact.refined[inside]).max()
                if inside.any() else 0.0)
    same_support = np.array_equal(auto.refined > 0, inside)
    return (f"labels differing at T_r {'/'.join(f'{t:g}' for t in trs)}: "
            f"{'/'.join(map(str, differ))} of {int(exact.labels.sum())}; max relative |dY_r| "
            f"{rel:.1e}; same support: {same_support}")


def large_balls(quick: bool, sample: bool):
    from napari_tubular.geometry import spheres

    radii = (8, 16, 24) if quick else (8, 16, 24, 32)
    print("\n== large balls: EDT of a mask as the radius map (refine's worst case), T_p 0.9, "
          "exact scatter vs refine's automatic choice (fast path when estimated >= "
          f"{spheres.FAST_MIN_GAIN:g}x cheaper than >= {spheres.FAST_MIN_ENTRIES:.1e} pairs)")
    prob, radius = blob_case("ball", 8)
    compare_exact_and_auto(prob, radius, (1.0,) * 3, 0.9, 0.25)  # warm-up (threads, imports)
    for kind in ("ball", "cylinder"):
        for r in radii:
            prob, radius = blob_case(kind, r)
            t_exact, t_auto, exact, auto = compare_exact_and_auto(prob, radius, (1.0,) * 3, 0.9,
                                                                  0.25, 2 if r <= 16 else 1)
            print(f"{kind:8s} r={r:2d} {prob.shape}, {exact.n_seeds:6d} seeds: fast path "
                  f"{'taken' if auto.info.get('fast') else 'not taken'}: {t_auto:.2f} s vs "
                  f"exact scatter {t_exact:.2f} s, {t_exact / t_auto:.1f}x; "
                  f"{describe(exact, auto)}", flush=True)
    if not sample:
        return
    try:
        from napari_tubular.inference import predict, recommended_thresholds
        from napari_tubular.io import read_volume

        path = Path(__file__).resolve().parents[1] / "napari_tubular/data/vessels_image.nii.gz"
        pred = predict(read_volume(path), "default", "cpu")
    except (OSError, ValueError, ImportError) as exc:
        print(f"the bundled sample's network outputs: skipped ({exc})")
        return
    tp0, tr0 = recommended_thresholds(pred.meta)
    for tp, tr in ((tp0, tr0), (0.5, 0.5)):
        t_exact, t_auto, exact, auto = compare_exact_and_auto(
            pred.probability, pred.radius_mm, pred.spacing, tp, tr, repeat=3)
        print(f"the bundled sample's network outputs, T_p {tp:g} T_r {tr:g} "
              f"({exact.n_seeds} seeds, largest radius {float(exact.radii_mm.max()):.2f} mm at "
              f"spacing {tuple(round(float(v), 3) for v in pred.spacing)}): fast path "
              f"{'taken' if auto.info.get('fast') else 'not taken'}: {t_auto:.3f} s vs exact "
              f"scatter {t_exact:.3f} s; labels identical: "
              f"{np.array_equal(auto.labels, exact.labels)}, max |dY_r| "
              f"{float(np.abs(auto.refined - exact.refined).max()):.1e} (the threads add their "
              "chunks in any order) ; seeds eligible for the fast path (support >= "
              f"{spheres.FAST_MIN_RADIUS_VOX:g} voxels): "
              f"{int(np.sum(exact.radii_mm >= spheres.FAST_MIN_RADIUS_VOX * min(pred.spacing)))}")


def memory_child(path, tp, device):
    """Run in a subprocess: load P and the radius map, refine, report the peak RSS."""
    data = np.load(path)
    prob, radius, spacing = data["prob"], data["radius"], tuple(data["spacing"])
    base = peak_rss_mb()
    ref = Refiner(prob, radius, spacing, device=device)
    res = ref.update(tp=tp, tr=0.5)
    ref.update(tp=tp - 0.002)
    print(f"{peak_rss_mb():.0f} {base:.0f} {res.n_seeds}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="128^3 and fewer repeats")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--large-only", action="store_true",
                    help="only the large balls and the bundled sample (session 32)")
    ap.add_argument("--no-sample", action="store_true",
                    help="leave out the bundled sample (it runs the default model)")
    ap.add_argument("--memory-child", nargs=2, metavar=("NPZ", "TP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], float(args.memory_child[1]), args.device)
        return
    if args.large_only:
        large_balls(args.quick, not args.no_sample)
        return
    size = args.size or (128 if args.quick else 256)
    spacing = (1.0, 1.0, 1.0)
    repeat = 2 if args.quick else 3

    t0 = time.perf_counter()
    mask, source = make_case(size, spacing)
    print(f"{source}, {size}^3: {mask.sum()} foreground voxels "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    prob, radius = network_like_outputs(mask, spacing)
    skel = skeletonize_mask(mask).astype(bool)
    prob_thin = prob.copy()
    prob_thin[skel] = 0.995  # the thin case: T_p = 0.99 selects exactly the hard skeleton
    thin_seeds = np.argwhere(prob_thin > 0.99)
    # the "about 1k seeds": every k-th voxel of the hard skeleton (a sparse centerline)
    step = max(1, int(round(len(thin_seeds) / 1000)))
    prob_1k = prob.copy()
    prob_1k[tuple(thin_seeds[::step].T)] = 0.995
    seeds_1k = np.argwhere(prob_1k > 0.99)
    target = 45000 if size >= 256 else int(45000 * (size / 256) ** 3)
    tp_dense = float(np.quantile(prob[mask], 1 - min(1.0, target / mask.sum())))
    dense_seeds = np.argwhere(prob > tp_dense)

    print(f"\n== soft reconstruction + refinement Y_r, {size}^3, spacing {spacing}, "
          f"device {args.device}")
    ratios = {}
    for name, seeds, p in (("~1k", seeds_1k, prob_1k), ("thin", thin_seeds, prob_thin),
                           ("dense", dense_seeds, prob)):
        sig = radius[tuple(seeds.T)] / 3.0
        w = p[tuple(seeds.T)]
        t_ours, y_ours = timeit(lambda s=seeds, g=sig, w=w: soft_reconstruction(
            s, g, w, mask.shape, spacing, device=args.device), repeat)
        t_loop, y_loop = timeit(lambda s=seeds, g=sig, w=w: loop_reconstruction(
            s, g, w, mask.shape, spacing), 1)
        t_filt, _ = timeit(lambda s=seeds, g=sig, w=w: grouped_filter_reconstruction(
            s, g, w, mask.shape, spacing), 1)
        err = float(np.abs(y_ours - y_loop).max())
        best = min(t_loop, t_filt)
        ratios[name] = best / t_ours
        print(f"{name:5s} ({len(seeds):6d} seeds): ours {t_ours:.3f} s vs per-seed loop "
              f"{t_loop:.3f} s ({t_loop / t_ours:.1f}x) vs filter per radius class {t_filt:.3f} s "
              f"({t_filt / t_ours:.1f}x); vs the faster baseline {best / t_ours:.1f}x; "
              f"max |ours - loop| = {err:.1e}")
    print(f"targets: dense >= 5x ({'ok' if ratios['dense'] >= 5 else 'MISSED'}), "
          f"thin >= 1x ({'ok' if ratios['thin'] >= 1 else 'MISSED'}), "
          f"~1k seeds >= 1x ({'ok' if ratios['~1k'] >= 1 else 'MISSED'})")

    print(f"\n== Refiner slider latency, {size}^3")
    from napari_tubular.geometry import refiner as refiner_module

    steps = (tp_dense, tp_dense + 0.002, tp_dense - 0.002, tp_dense + 0.01, tp_dense - 0.01)
    saved = refiner_module.INCREMENTAL_MAX_FRACTION
    t_whole = []
    try:  # the same steps, each summing every seed again (the refiner before session 29)
        refiner_module.INCREMENTAL_MAX_FRACTION = -1.0
        ref = Refiner(prob, radius, spacing, device=args.device)
        ref.update(tp=tp_dense + 0.004, tr=0.5)
        for tp in steps:
            t0 = time.perf_counter()
            whole = ref.update(tp=tp)
            t_whole.append(time.perf_counter() - t0)
    finally:
        refiner_module.INCREMENTAL_MAX_FRACTION = saved
    ref = Refiner(prob, radius, spacing, device=args.device)
    ref.update(tp=tp_dense + 0.004, tr=0.5)
    t_tp = []
    for tp in steps:
        t0 = time.perf_counter()
        res = ref.update(tp=tp)
        t_tp.append(time.perf_counter() - t0)
    diff = float(np.abs(res.refined - whole.refined).max())
    print(f"T_p steps of 0.002-0.01: incremental (adds / subtracts only the seeds a step "
          f"changes) median {np.median(t_tp):.3f} s vs summing every seed again "
          f"{np.median(t_whole):.3f} s ({np.median(t_whole) / np.median(t_tp):.1f}x); "
          f"max |difference| of Y_r after {len(steps)} steps {diff:.1e}, labels differing "
          f"{int((res.labels != whole.labels).sum())}")
    ref.update(tp=tp_dense)
    t_tr = []
    for tr in (0.3, 0.6, 0.5):
        t0 = time.perf_counter()
        ref.update(tr=tr)
        t_tr.append(time.perf_counter() - t0)
    lim = 0.3 if size >= 256 else 0.1
    print(f"T_p change (dense, {res.n_seeds} seeds): median {np.median(t_tp):.3f} s, "
          f"the largest {max(t_tp):.3f} s, every seed summed again {max(t_whole):.3f} s "
          f"(target {lim} s); T_r change: median {np.median(t_tr):.4f} s (target 0.05 s)")
    for tr in (0.25, 0.5):
        lab = ref.update(tr=tr).labels.astype(bool)
        dice = 2 * (lab & mask).sum() / (lab.sum() + mask.sum())
        print(f"dense refinement at T_r={tr}: Dice with the mask {dice:.3f}")

    post_processing_latency(ref.update(tr=0.5).labels, mask, spacing, repeat)

    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "case.npz")
        np.savez(path, prob=prob, radius=radius, spacing=np.asarray(spacing))
        out = subprocess.run([sys.executable, __file__, "--device", args.device,
                              "--memory-child", path, str(tp_dense)],
                             check=True, capture_output=True, text=True).stdout.split()
    print(f"\n== memory: peak RSS of a process that loads P + radius ({size}^3) and refines "
          f"({out[2]} seeds, then a T_p change): {float(out[0]):.0f} MB (of which "
          f"{float(out[1]):.0f} MB before refining: interpreter, libraries, P and radius; "
          "target < 2048 MB)")
    large_balls(args.quick, not args.no_sample)


if __name__ == "__main__":
    main()
