"""Fit a model's radius calibration on validation volumes and check it on the held-out set.

    python scripts/calibrate_radius.py napari_tubular/weights/default.pt --out runs/cal.pt
    python scripts/calibrate_radius.py napari_tubular/weights/default.pt --in-place

The scale head's radius at a centreline voxel (``(E[k | k > 0] + 0.2) * model spacing``) is
biased: about 10-20 % short for vessels over 1 mm (the expected class regresses to the middle
classes and resampling the map back to the native grid lowers its ridge), and never below one
class (0.96 mm at 0.8 mm) for sub-voxel vessels. The calibration is a monotone map from that
value to the true radius: synthetic validation volumes (seeds ``VAL_SEED_BASE + 700 + i``, the
10 designs of the held-out set, disjoint from training and from the held-out seeds; plus
``--large-cases`` volumes of the ordinary designs with roots of 5 to 12 mm, seeds
``VAL_SEED_BASE + 800 + i``, so that a model with enough scale classes is calibrated for large
vessels too) give pairs
(predicted radius at the voxel nearest each true centreline point where ``P > 0.5``, true
radius); the knots are the medians of both per bin of the predicted radius, made
non-decreasing. ``predict`` applies it (``meta["radius_calibration"]``).

Prints the median absolute relative radius error per true-radius bin on the held-out set
before and after, and stores those numbers with the knots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

R_BINS_MM = (0.0, 0.6, 1.0, 1.6, 2.5, 4.0, np.inf)


def centreline_pairs(model, specs, data, calibrated: bool):
    """(predicted radius, true radius) at the voxel nearest each true centreline point, P > 0.5."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume

    preds, trues = [], []
    for spec, (img, _, cl) in zip(specs, data):
        sp = np.asarray(spec["spacing"], dtype=float)
        pr = predict(Volume(img, spec["spacing"]), model=model, device="cpu",
                     calibrate_radius=calibrated)
        idx = np.round(cl[:, :3] / sp).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(img.shape)), axis=1)
        idx, r = idx[ok], cl[ok, 3]
        found = pr.probability[idx[:, 0], idx[:, 1], idx[:, 2]] > 0.5
        preds.append(pr.radius_mm[idx[:, 0], idx[:, 1], idx[:, 2]][found])
        trues.append(r[found])
    return np.concatenate(preds), np.concatenate(trues)


def large_specs(n: int, seed_base: int) -> list[dict]:
    """``n`` (<= 8) volumes of the ordinary held-out designs with root radii 5 to 12 mm."""
    from evaluate_default import case_specs

    if not 0 <= n <= 8:
        raise ValueError(f"--large-cases must be in 0..8, got {n}")
    specs = case_specs(n, False, seed_base=seed_base)
    for i, spec in enumerate(specs):
        spec["options"] = {"max_radius_mm": round(5.0 + 7.0 * i / max(1, n - 1), 2)}
        spec["name"] += "_large"
    return specs


# extra bin edges (mm of predicted radius) for the rare large vessels: quantile bins alone put
# every radius above ~4.5 mm in one bin, and the 12 mm probe read 9.2 mm
TAIL_EDGES_MM = (5.0, 6.5, 8.0, 10.0, 13.0)


def fit_knots(pred: np.ndarray, true: np.ndarray, n_bins: int = 14, min_count: int = 40,
              tail_edges=TAIL_EDGES_MM):
    """Monotone knots: medians of (pred, true) per bin of ``pred``: quantile bins, split further
    at ``tail_edges`` (bins with fewer than ``min_count`` points are skipped)."""
    order = np.argsort(pred, kind="stable")
    pred, true = pred[order], true[order]
    edges = np.quantile(pred, np.linspace(0, 1, n_bins + 1))
    tail = [e for e in tail_edges if edges[0] < e < edges[-1]]
    edges = np.unique(np.concatenate([edges, tail]))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (pred >= lo) & ((pred < hi) | (hi == edges[-1]))
        if sel.sum() < min_count:
            continue
        xs.append(float(np.median(pred[sel])))
        ys.append(float(np.median(true[sel])))
    xs, ys = np.asarray(xs), np.maximum.accumulate(np.asarray(ys))
    keep = np.concatenate([[True], np.diff(xs) > 1e-4])
    return [round(float(v), 4) for v in xs[keep]], [round(float(v), 4) for v in ys[keep]]


def error_table(pred: np.ndarray, true: np.ndarray) -> dict:
    rel = np.abs(pred - true) / true
    out = {}
    for lo, hi in zip(R_BINS_MM[:-1], R_BINS_MM[1:]):
        sel = (true >= lo) & (true < hi)
        if sel.any():
            key = f"{lo:g}-{hi:g} mm" if np.isfinite(hi) else f">= {lo:g} mm"
            out[key] = {"n": int(sel.sum()), "median_rel_error": float(np.median(rel[sel])),
                        "median_ratio": float(np.median(pred[sel] / true[sel]))}
    out["all"] = {"n": int(true.size), "median_rel_error": float(np.median(rel)),
                  "median_ratio": float(np.median(pred / true))}
    return out


def main(argv=None) -> int:
    from evaluate_default import case_specs, generate

    from napari_tubular.models import load_model, save_model
    from napari_tubular.training.loop import VAL_SEED_BASE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="write the calibrated model here")
    g.add_argument("--in-place", action="store_true", help="rewrite MODEL (and its .json)")
    p.add_argument("--cases", type=int, default=20, help="validation volumes (default 20)")
    p.add_argument("--large-cases", type=int, default=0,
                   help="extra validation volumes with roots of 5-12 mm (max 8; default 0)")
    p.add_argument("--processes", type=int, default=2)
    a = p.parse_args(argv)

    net, meta = load_model(a.model, device="cpu")
    meta.pop("path", None)
    meta.pop("radius_calibration", None)
    model = (net, meta)
    val_specs = case_specs(a.cases, False, seed_base=VAL_SEED_BASE + 700) + large_specs(
        a.large_cases, VAL_SEED_BASE + 800)
    val = generate(val_specs, a.processes)
    pred, true = centreline_pairs(model, val_specs, val, calibrated=False)
    xs, ys = fit_knots(pred, true)
    print(f"fitted on {true.size} centreline points of {len(val_specs)} validation volumes")
    print("knots pred_mm:", xs)
    print("knots true_mm:", ys)

    held_specs = case_specs(10, False)
    held = generate(held_specs, a.processes)
    before = error_table(*centreline_pairs(model, held_specs, held, calibrated=False))
    meta["radius_calibration"] = {"pred_mm": xs, "true_mm": ys}
    after = error_table(*centreline_pairs(model, held_specs, held, calibrated=True))
    print("\nheld-out centreline radius, median |relative error| (median pred/true):")
    print(f"{'true radius':>14} {'n':>6} {'before':>16} {'after':>16}")
    for k in before:
        b, c = before[k], after[k]
        print(f"{k:>14} {b['n']:>6} {b['median_rel_error']:>7.3f} ({b['median_ratio']:.2f})"
              f" {c['median_rel_error']:>7.3f} ({c['median_ratio']:.2f})")
    meta["radius_calibration"].update({
        "fitted_on": f"{true.size} centreline points, {len(val_specs)} synthetic validation "
                     f"volumes (seeds {VAL_SEED_BASE + 700}+), scripts/calibrate_radius.py",
        "held_out_before": before, "held_out_after": after})
    dest = Path(a.model) if a.in_place else Path(a.out)
    save_model(dest, net, meta, json_sidecar=True)
    print(f"\nwrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
