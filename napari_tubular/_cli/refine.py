"""``napari-tubular refine PROB RADIUS -o OUT_LABELS``: DDT refinement of saved maps, no network.

Reads a probability map and a radius map (mm) written by ``segment`` (same grid), runs the
geometry-aware refinement with new thresholds and writes the labels (uint8) to ``OUT_LABELS``
and the pseudo-skeleton next to it: ``X_labels.nii.gz`` -> ``X_skeleton.nii.gz``, any other
name ``Y.ext`` -> ``Y_skeleton.ext``. Note: ``segment`` stores radii only where
``probability >= min(0.5, tp)``, so a ``--tp`` below the one used there finds seeds without a
radius (they are skipped by the refinement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help=help_text,
        description=(
            "Recompute labels (and the pseudo-skeleton beside them) from a saved probability map "
            "and radius map (mm) with new thresholds T_p / T_r. No network is run."
        ),
    )
    p.add_argument(
        "probability", metavar="PROB", help="probability map (e.g. NAME_probability.nii.gz)"
    )
    p.add_argument("radius", metavar="RADIUS", help="radius map in mm (e.g. NAME_radius.nii.gz)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT_LABELS",
        help="labels file to write (.nii.gz, .nii, .nrrd, .mha)",
    )
    p.add_argument(
        "--tp", type=float, default=0.9, help="pseudo-skeleton threshold T_p (default 0.9)"
    )
    p.add_argument("--tr", type=float, default=0.5, help="refined-map threshold T_r (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def skeleton_path(labels_path: Path) -> Path:
    """``X_labels.nii.gz`` -> ``X_skeleton.nii.gz``; ``Y.ext`` -> ``Y_skeleton.ext``."""
    from ..io import volume_stem

    stem = volume_stem(labels_path)
    ext = labels_path.name[len(stem) :]
    base = stem[: -len("_labels")] if stem.endswith("_labels") else stem
    return labels_path.with_name(f"{base}_skeleton{ext}")


def run(args) -> int:
    import numpy as np

    from ..inference import check_thresholds, refine_maps, shape_report
    from ..io import read_volume, write_volume

    tp, tr = check_thresholds(args.tp, args.tr)
    out = Path(args.output).expanduser()
    skel_out = skeleton_path(out)
    if not args.overwrite:
        existing = [str(p) for p in (out, skel_out) if p.exists()]
        if existing:
            raise FileExistsError(
                f"output file(s) exist: {', '.join(existing)}; pass --overwrite to replace them"
            )
    prob = read_volume(args.probability)
    radius = read_volume(args.radius)
    differences = prob.geometry_differences(radius)
    if differences:
        raise ValueError(
            f"{args.probability} and {args.radius} are not on the same grid: "
            + "; ".join(differences)
        )
    p = prob.data.astype(np.float32, copy=False)
    if p.size and (float(p.min()) < 0.0 or float(p.max()) > 1.0):
        raise ValueError(
            f"{args.probability} is not a probability map: values outside [0, 1] "
            f"({float(p.min()):g}..{float(p.max()):g})"
        )
    r = radius.data.astype(np.float32, copy=False)
    if r.size and float(r.min()) < 0.0:
        raise ValueError(f"{args.radius} holds negative radii; expected a radius map in mm")
    labels, skeleton = refine_maps(p, r, prob.spacing, tp, tr)
    write_volume(out, labels, reference=prob, overwrite=args.overwrite)
    write_volume(skel_out, skeleton, reference=prob, overwrite=args.overwrite)
    stats = shape_report(labels, skeleton, prob.spacing)
    print(
        f"wrote {out} and {skel_out}: volume {stats['volume_ml']:.3f} ml, "
        f"Betti {stats.get('betti_numbers')}",
        file=sys.stderr,
    )
    return 0
