"""Betti numbers and evaluation metrics: ours vs the straightforward recipe vs cubical persistence.

Usage: ``python benchmarks/bench_topology.py [--quick] [--size N] [--gudhi-size N] [--cases K]
[--spacing SZ SY SX] [--old REV|none] [--repeat R]``

1. Betti numbers of synthetic vessel masks (``make_vessel_tree``, size ``--size``^3):
   ours (cc3d + Euler lookup table on the bounding box) vs the straightforward recipe (scipy
   labelling + scikit-image ``euler_number`` on the padded volume); same numbers checked.
2. The same three ways plus gudhi's cubical persistent homology on smaller volumes
   (``--gudhi-size``^3: gudhi builds the full cubical complex, about 30 s at 128^3 and 400 s /
   16 GB at 256^3 here, so it is kept small by default).
3. ``compute_metrics`` on (prediction, reference) pairs at ``--size``^3 (``--spacing``), ours
   against the package at git revision ``--old`` (default: the commit before the speed-up of
   session 36; ``--old 7297d89``: before session 34's; extracted with ``git archive`` as
   ``napari_tubular_old``), timed interleaved
   (``--repeat`` runs each, wall and process CPU time: other jobs share the machine), with a
   check that the two give the same values; for the first pair also the masks moved inside
   the volume (no face touched: the measuring skeleton is then the clDice one). Then its parts,
   HD95 + ASSD by MONAI (distance-transform based) for comparison, ``error_map`` and
   ``self_check`` times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package


def timed(fn, repeat=3):
    """``(wall, cpu, result)``: the best wall time of ``repeat`` runs and that run's process CPU
    time (on a shared, loaded machine the CPU time is closer to what an idle machine gives;
    everything timed here is single-threaded)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, cpu = wall, time.process_time() - c
    return best, cpu, out


def recipe_betti(mask):
    """The straightforward recipe of METHODS.md section 3 (whole padded volume)."""
    from skimage.measure import euler_number

    p = np.pad(mask, 1)
    _, b0 = ndi.label(p, structure=np.ones((3, 3, 3)))
    _, n_bg = ndi.label(~p)
    chi = euler_number(p, connectivity=3)
    b2 = n_bg - 1
    return (int(b0), int(b0 + b2 - chi), int(b2))


def gudhi_betti(mask):
    import gudhi

    cc = gudhi.CubicalComplex(top_dimensional_cells=np.where(np.pad(mask, 1), 0.0, 1.0))
    cc.compute_persistence()
    b = list(cc.persistent_betti_numbers(0.0, 0.0)) + [0, 0, 0]
    return tuple(int(v) for v in b[:3])


def vessel_mask(size, seed, spacing=(1.0, 1.0, 1.0)):
    from napari_tubular.synthetic import make_vessel_tree

    case = make_vessel_tree(
        (size,) * 3, spacing=spacing, seed=seed, distractors=False, bias=False, blur=False,
        noise=10.0
    )
    return case.mask.astype(bool), case.spacing


#: the last commit before compute_metrics' latest speed-up (session 36: the lost-branch check
#: without the distance transform of the box; session 34's: 7297d89): ``--old``'s default
OLD_REVISION = "cbbf56e"


def old_compute_metrics(rev):
    """``compute_metrics`` of the package at git revision ``rev``, imported from a temporary
    copy named ``napari_tubular_old`` (its geometry and topology use relative imports), or None
    (with a line saying why) when git or the revision is not there."""
    import importlib
    import io
    import subprocess
    import tarfile
    import tempfile

    root = Path(__file__).resolve().parents[1]
    try:
        data = subprocess.run(["git", "-C", str(root), "archive", rev, "napari_tubular"],
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(no comparison: git archive {rev} failed: {exc})")
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench_topology_old_"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp)  # our own repository's files
    (tmp / "napari_tubular").rename(tmp / "napari_tubular_old")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("napari_tubular_old.topology.metrics").compute_metrics


def interleaved(fns, repeat):
    """``{name: (walls, cpus, result)}``: the calls of ``fns`` (a dict) run in turn, ``repeat``
    rounds, the order reversed every other round (a load that changes during the run weighs on
    both alike)."""
    out = {name: ([], [], None) for name in fns}
    names = list(fns)
    for i in range(repeat):
        for name in names if i % 2 == 0 else names[::-1]:
            t, c = time.perf_counter(), time.process_time()
            result = fns[name]()
            walls, cpus, _ = out[name]
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            out[name] = (walls, cpus, result)
    return out


def perturb(ref, seed):
    """A plausible prediction: thicker in one half, three cuts, a few spurious blobs."""
    rng = np.random.default_rng(seed)
    pred = ref.copy()
    half = ref.shape[0] // 2
    pred[:half] = ndi.binary_dilation(ref[:half])
    pts = np.argwhere(ref)
    for z, y, x in pts[rng.choice(len(pts), 3, replace=False)]:
        pred[max(z - 1, 0) : z + 2, max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5] = False
    for _ in range(5):
        c = rng.integers(4, np.array(ref.shape) - 4)
        pred[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = True
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128^3 volumes, gudhi at 48^3, 2 cases")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--gudhi-size", type=int, default=80)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--no-monai", action="store_true", help="skip the MONAI HD95/ASSD timing")
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                    metavar=("SZ", "SY", "SX"), help="voxel size of the section 3 pairs (mm)")
    ap.add_argument("--old", default=OLD_REVISION,
                    help="git revision whose compute_metrics section 3 compares with ours "
                         f"(default {OLD_REVISION}: before the speed-up; 'none': no comparison)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved runs of each compute_metrics in section 3 (default 3)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.gudhi_size, args.cases = 128, 48, 2

    from napari_tubular.topology import (
        betti_numbers,
        compute_metrics,
        error_map,
        hard_skeleton,
        self_check,
        surface_distances,
    )

    print(f"== 1. Betti numbers at {args.size}^3 (best of 3 runs) ==")
    masks = []
    ratios = []
    for seed in range(args.cases):
        m, spacing = vessel_mask(args.size, seed)
        masks.append((m, spacing))
        t_ours, c_ours, b_ours = timed(lambda m=m: betti_numbers(m))
        t_rec, c_rec, b_rec = timed(lambda m=m: recipe_betti(m), repeat=2)
        assert b_ours == b_rec, (b_ours, b_rec)
        ratios.append((t_rec / t_ours, c_rec / c_ours))
        print(
            f"case {seed}: fg {m.mean() * 100:.2f}%  betti {b_ours}  ours {t_ours:.3f} s vs "
            f"recipe {t_rec:.3f} s  ({t_rec / t_ours:.1f}x); CPU time ours {c_ours:.3f} s vs "
            f"{c_rec:.3f} s ({c_rec / c_ours:.1f}x)"
        )
    print(
        f"speed-up ours vs recipe: median {statistics.median(r[0] for r in ratios):.1f}x wall, "
        f"{statistics.median(r[1] for r in ratios):.1f}x CPU time"
    )

    print(f"\n== 2. With cubical persistent homology (gudhi) at {args.gudhi_size}^3 ==")
    for seed in range(args.cases):
        m, _ = vessel_mask(args.gudhi_size, 100 + seed)
        t_ours, _, b_ours = timed(lambda m=m: betti_numbers(m))
        t_rec, _, b_rec = timed(lambda m=m: recipe_betti(m), repeat=2)
        t_g, _, b_g = timed(lambda m=m: gudhi_betti(m), repeat=1)
        assert b_ours == b_rec == b_g, (b_ours, b_rec, b_g)
        print(
            f"case {seed}: betti {b_ours}  ours {t_ours:.4f} s, recipe {t_rec:.3f} s "
            f"({t_rec / t_ours:.1f}x), gudhi {t_g:.2f} s ({t_g / t_ours:.0f}x)"
        )

    print(f"\n== 3. All metrics of one {args.size}^3 pair, spacing {tuple(args.spacing)} ==")
    old = None if args.old == "none" else old_compute_metrics(args.old)
    totals, old_totals = [], []
    for seed in range(args.cases):
        ref, spacing = masks[seed] if tuple(args.spacing) == tuple(masks[seed][1]) else \
            vessel_mask(args.size, seed, tuple(args.spacing))
        pred = perturb(ref, seed)
        pairs = [("crossing the faces", pred, ref)]
        if seed == 0:
            inner = tuple(slice(4, -4) for _ in range(3))
            pairs.append(("inside the volume", np.pad(pred[inner], 4), np.pad(ref[inner], 4)))
        for where, p, r in pairs:
            fns = {"ours": lambda p=p, r=r, s=spacing: compute_metrics(p, r, s)}
            if old is not None:
                fns["old"] = lambda p=p, r=r, s=spacing: old(p, r, s)
            runs = interleaved(fns, args.repeat)
            line = []
            for name, (walls, cpus, _) in runs.items():
                line.append(f"{name} wall {min(walls):.2f} s (median {statistics.median(walls):.2f}),"
                            f" CPU {min(cpus):.2f} s")
                if where == "crossing the faces":
                    (totals if name == "ours" else old_totals).append((min(walls), min(cpus)))
            if where == "crossing the faces":
                met = runs["ours"][2]
            same = "" if old is None else (
                "; same values" if runs["ours"][2] == runs["old"][2] else "; VALUES DIFFER")
            print(f"case {seed} {where}: compute_metrics " + " vs ".join(line) + same)
        t_all, c_all = totals[-1]
        t_sk, _, sk = timed(lambda p=pred: hard_skeleton(p), repeat=1)
        t_b, _, _ = timed(lambda p=pred: betti_numbers(p), repeat=1)
        t_sd, _, _ = timed(lambda p=pred, r=ref, s=spacing: surface_distances(p, r, s), repeat=1)
        sk_r = hard_skeleton(ref)
        t_em, _, rep = timed(
            lambda p=pred, r=ref, s=spacing, a=sk, b=sk_r: error_map(
                p, r, s, skeleton_pred=a, skeleton_ref=b
            ),
            repeat=1,
        )
        t_sc, _, rep2 = timed(
            lambda p=pred, s=spacing, a=sk: self_check(p, s, skeleton=a), repeat=1
        )
        print(
            f"case {seed}: compute_metrics {t_all:.2f} s (CPU {c_all:.2f} s)  [one skeleton {t_sk:.2f} s, one betti "
            f"{t_b:.3f} s, surface distances {t_sd:.3f} s]  dice {met['dice']:.3f} cldice "
            f"{met['cldice']:.3f} b1_err {met['b1_error']} hd95 {met['hd95_mm']:.2f} mm"
        )
        print(
            f"        error_map {t_em:.2f} s ({len(rep.sites)} sites), self_check {t_sc:.2f} s "
            f"({len(rep2.sites)} sites)  (skeletons given)"
        )
        if not args.no_monai:
            from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

            def monai_sd(p=pred, r=ref, s=spacing):
                def t(x):
                    return x[None, None].astype(np.float32)

                h = compute_hausdorff_distance(t(p), t(r), percentile=95, spacing=list(s))
                a = compute_average_surface_distance(t(p), t(r), symmetric=True, spacing=list(s))
                return float(h), float(a)

            t_m, _, (h, a) = timed(monai_sd, repeat=1)
            print(
                f"        HD95+ASSD: ours {t_sd:.3f} s vs MONAI {t_m:.2f} s ({t_m / t_sd:.0f}x); "
                f"hd95 {met['hd95_mm']:.4f} vs {h:.4f} mm, assd {met['assd_mm']:.4f} vs {a:.4f} mm"
            )
    for name, rows in (("ours", totals), ("old", old_totals)):
        if not rows:
            continue
        wall, cpu = np.array(rows).T
        print(
            f"compute_metrics ({name}) per {args.size}^3 pair crossing the faces: wall mean "
            f"{wall.mean():.2f} s, max {wall.max():.2f} s; CPU time mean {cpu.mean():.2f} s, "
            f"max {cpu.max():.2f} s"
        )


if __name__ == "__main__":
    main()
