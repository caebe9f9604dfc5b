"""The default model on large fields of view (prints a table; session 18).

    python scripts/large_fov.py [--model default|PATH] [--cases N] [--out runs/large_fov]

The held-out set of ``evaluate_default.py`` has volumes of 88 mm: vessels up to about 4 mm in
radius and bright distractor blobs up to about 8 mm in semi-axis. A CT of a torso or a limb is
180-360 mm across, and the generator scales its trees and blobs with the field of view (root
radius 4.5 % and blob semi-axes 3-9 % of the smallest extent), so blobs 20-55 mm across appear:
wider than the network's window (64 voxels of 0.8 mm). This set is
``napari_tubular.synthetic.make_vessel_tree`` (the ``synth`` defaults: distractors on) on
the shapes and spacings below, seeds ``HELD_OUT_SEED_BASE + 50_000 + i`` (never trained on).
Per case: Dice / clDice / Betti-0 error of ``segment``'s labels (the model's tuned
thresholds, the partial-volume trim and the speck filter) without the blob and confidence
filters (``--blob-ratio off --min-confidence off``), with the blob filter, and with both
(``segment``'s default), and what the blob filter removed; ``--save-labels`` keeps
the filter-off labels and the reference of each case (``OUT/case_I.npz``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

CASES = [
    # shape (z, y, x), spacing (mm)
    ((120, 512, 512), (2.5, 0.7, 0.7)),
    ((128, 256, 256), (1.5, 0.7, 0.7)),
    ((200, 300, 300), (1.0, 1.0, 1.0)),
    ((100, 512, 512), (3.0, 0.7, 0.7)),
    ((160, 256, 256), (1.0, 0.8, 0.8)),
    ((96, 256, 256), (2.0, 0.8, 0.8)),
    ((200, 200, 200), (1.0, 1.0, 1.0)),
    ((80, 320, 320), (3.0, 0.9, 0.9)),
]


def run_case(i: int, model, log=print, save: Path | None = None) -> dict:
    from napari_tubular.geometry import BLOB_RATIO, remove_blob_components, remove_specks_and_blobs
    from napari_tubular.inference import DEFAULT_MIN_CONFIDENCE, segment
    from napari_tubular.io import Volume
    from napari_tubular.synthetic import make_vessel_tree
    from napari_tubular.topology import compute_metrics
    from napari_tubular.training.config import HELD_OUT_SEED_BASE

    shape, sp = CASES[i % len(CASES)]
    seed = HELD_OUT_SEED_BASE + 50_000 + i
    case = make_vessel_tree(shape, sp, seed=seed)
    t0 = time.perf_counter()
    pr = segment(Volume(case.image, sp), model=model, device="cpu", blob_ratio=None,
                 min_confidence=None)
    seconds = time.perf_counter() - t0
    ref = case.mask > 0
    off = pr.labels > 0
    on, removed = remove_blob_components(off, sp)
    both = remove_specks_and_blobs(off, sp, 0.0, BLOB_RATIO, pr.probability,
                                   DEFAULT_MIN_CONFIDENCE)[0]  # segment's default
    if save is not None:  # to measure other filters on the same network output
        np.savez_compressed(save / f"case_{i}.npz", off=off, ref=ref, sp=np.asarray(sp))
    row = {"case": i, "seed": seed, "shape": list(shape), "spacing": list(sp),
           "extent_mm": [round(n * s) for n, s in zip(shape, sp)], "seconds": round(seconds, 1),
           "removed": [{"volume_ml": round(r["volume_mm3"] / 1000, 2),
                        "diameters": round(r["diameters"], 2),
                        "true_voxels": int((ref & off & ~on.astype(bool)).sum())}
                       for r in removed]}
    b0_ref = None
    for name, labels in (("off", off), ("on", on.astype(bool)), ("default", both > 0)):
        m = compute_metrics(labels, ref, sp, measured_lengths=False)
        b0_ref = m["betti_ref"][0]
        row[name] = {"dice": round(m["dice"], 3), "cldice": round(m["cldice"], 3),
                     "b0_error": abs(m["betti_pred"][0] - b0_ref)}
    log(f"case {i} {'x'.join(map(str, shape))} at {'x'.join(f'{s:g}' for s in sp)} mm: "
        f"blob filter off {row['off']['dice']:.3f} / {row['off']['cldice']:.3f} / "
        f"{row['off']['b0_error']}, on {row['on']['dice']:.3f} / {row['on']['cldice']:.3f} / "
        f"{row['on']['b0_error']}; with the confidence filter too (segment's default) "
        f"{row['default']['dice']:.3f} / {row['default']['cldice']:.3f} / "
        f"{row['default']['b0_error']}; removed {row['removed']} ({seconds:.0f} s)")
    return row


def main(argv=None) -> int:
    from napari_tubular.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--cases", type=int, default=len(CASES))
    p.add_argument("--out", default="runs/large_fov", help="output folder (large_fov.json)")
    p.add_argument("--save-labels", action="store_true",
                   help="also OUT/case_I.npz: the labels without the blob filter and the reference")
    a = p.parse_args(argv)
    model = load_model(a.model, device="cpu")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_case(i, model, save=out if a.save_labels else None) for i in range(a.cases)]
    for name in ("off", "on", "default"):
        print(f"{name}: mean Dice {np.mean([r[name]['dice'] for r in rows]):.3f}, "
              f"clDice {np.mean([r[name]['cldice'] for r in rows]):.3f}, Betti-0 error "
              f"{np.mean([r[name]['b0_error'] for r in rows]):.1f}")
    (out / "large_fov.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
