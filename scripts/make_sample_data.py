"""Regenerate the bundled sample volume (synthetic vessel tree, anisotropic CT-like image).

Writes ``vessels_image.nii.gz`` (int16, HU-like), ``vessels_label.nii.gz`` (uint8),
``vessels_centerline.csv`` (z,y,x,radius,tree,branch in mm) and ``vessels_edges.csv`` to
``sample_data/`` and the same files to ``napari_tubular/data/`` (the copy that is installed with
the package and opened by ``napari_tubular.sample_data``).

    python scripts/make_sample_data.py [--overwrite]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (96, 128, 128)
SPACING = (1.5, 0.8, 0.8)
SEED = 3
STEM = "vessels"
FOLDERS = (ROOT / "sample_data", ROOT / "napari_tubular" / "data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="replace existing sample files")
    args = parser.parse_args(argv)

    from napari_tubular.synthetic import case_paths, make_vessel_tree, save_case

    case = make_vessel_tree(SHAPE, SPACING, seed=SEED, noise=12.0)
    first = save_case(case, FOLDERS[0], STEM, overwrite=args.overwrite, image_dtype=np.int16)
    for folder in FOLDERS[1:]:
        dest = case_paths(folder, STEM)
        folder.mkdir(parents=True, exist_ok=True)
        for key, src in first.items():
            if dest[key].exists() and not args.overwrite:
                raise FileExistsError(f"{dest[key]} already exists; pass --overwrite")
            shutil.copyfile(src, dest[key])
    total = sum(p.stat().st_size for p in first.values())
    print(
        f"seed {SEED}, shape {SHAPE}, spacing {SPACING} mm: {case.params['n_trees']} tree(s), "
        f"{case.params['n_loops']} loop(s), {len(case.centerline)} centerline points, "
        f"radius {case.radii_mm.min():.2f}-{case.radii_mm.max():.2f} mm, "
        f"{total / 1e6:.2f} MB per copy"
    )
    for folder in FOLDERS:
        print(f"  wrote {folder}/{STEM}_*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
