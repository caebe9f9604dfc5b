"""Count false components in textured soft tissue, with and without vessels (prints a table).

Usage::

    python scripts/texture_phantoms.py [--model default|PATH ...] [--set dev|test] [--n 12]
        [--out DIR] [--save DIR]

Session 23 found that volumes without any vessel get 9-22 false components per 96³ volume in
textured soft tissue, while the same texture around a vessel tree gives 0-1. This script makes
such volumes with code of its own (scipy filters, not ``synthetic.py``'s texture):

* vessel-free: tissue 40 HU with a broad 8 HU texture (Gaussian-filtered white noise, sigma 8
  voxels), a fine mottled texture of ``T`` HU standard deviation (sigma 1.5-2.5 voxels, the size
  of a thin vessel), white noise 10-14 HU, then a 0.6-voxel Gaussian blur;
* tree: the generator's vessel volume (``make_vessel_tree``, its own tissue and vessels) with the
  same fine texture of ``T`` HU added.

``T`` is 20 or 30 HU, the grid 96³ at 0.8 mm or 40 x 110 x 110 at 2 x 0.7 x 0.7 mm (case ``i``
cycles through the 8 combinations). Per model and group: false components per volume (a
26-connected component of ``segment``'s labels with no voxel within one voxel of the truth),
their volume (mL), and on the tree cases Dice / clDice. Seeds: ``dev`` 14000 + i, ``test``
14500 + i.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foreign_phantoms import phantom_parser, prepare_cases, write_results  # noqa: E402

SEEDS = {"dev": 14000, "test": 14500}
GRIDS = (((96, 96, 96), (0.8, 0.8, 0.8)), ((40, 110, 110), (2.0, 0.7, 0.7)))


def _field(rng, shape, sigma_vox) -> np.ndarray:
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox,
                                mode="wrap")
    f -= f.mean()
    f /= max(float(f.std()), 1e-12)
    return f


def make_case(seed: int, i: int) -> dict:
    from scipy import ndimage

    from napari_tubular.synthetic import make_vessel_tree

    rng = np.random.default_rng(seed)
    vessels = i % 2 == 1
    texture_hu = (20.0, 30.0)[(i // 2) % 2]
    shape, spacing = GRIDS[(i // 4) % 2]
    sigma = float(rng.uniform(1.5, 2.5))
    texture = _field(rng, shape, sigma) * np.float32(texture_hu)
    if vessels:
        case = make_vessel_tree(shape, spacing, seed=seed)
        image = case.image + texture
        label = case.mask > 0
    else:
        image = np.float32(40.0) + np.float32(8.0) * _field(rng, shape, 8.0) + texture
        image += rng.standard_normal(shape).astype(np.float32) * np.float32(rng.uniform(10, 14))
        image = ndimage.gaussian_filter(image, 0.6, mode="nearest")
        label = np.zeros(shape, bool)
    return {"name": f"{'tree' if vessels else 'free'}_{int(texture_hu)}hu_{seed}",
            "group": f"{'tree' if vessels else 'vessel-free'}, {int(texture_hu)} HU",
            "image": image.astype(np.float32), "label": label, "options": {"spacing": spacing}}


def make_set(set_name: str, n: int) -> list[dict]:
    return [make_case(SEEDS[set_name] + i, i) for i in range(n)]


def false_components(labels: np.ndarray, truth: np.ndarray, spacing) -> tuple[int, float]:
    """(count, mL) of 26-connected components with no voxel within one voxel of ``truth``."""
    from scipy import ndimage

    comp, n = ndimage.label(labels, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return 0, 0.0
    near = ndimage.binary_dilation(truth, np.ones((3, 3, 3), bool)) if truth.any() else truth
    touched = np.unique(comp[near & (comp > 0)])
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    false = np.setdiff1d(np.arange(1, n + 1), touched)
    return int(false.size), float(sizes[false].sum() * np.prod(spacing) / 1000.0)


def evaluate_model(model: str, cases: list[dict], log=print) -> list[dict]:
    from napari_tubular.inference import segment
    from napari_tubular.io import Volume
    from napari_tubular.topology.metrics import compute_metrics

    rows = []
    for c in cases:
        sp = c["options"]["spacing"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = segment(Volume(c["image"], sp), model=model, device="cpu")
        labels = res.labels > 0
        n, ml = false_components(labels, c["label"], sp)
        row = {"case": c["name"], "group": c["group"], "false_components": n, "false_ml": ml}
        if c["label"].any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = compute_metrics(labels, c["label"], sp)
            row.update(dice=float(m["dice"]), cldice=float(m["cldice"]))
        rows.append(row)
        extra = f", Dice {row['dice']:.3f} / clDice {row['cldice']:.3f}" if "dice" in row else ""
        log(f"  {c['name']}: {n} false components, {ml:.2f} mL{extra}")
    return rows


def table(results: dict) -> str:
    groups = sorted({r["group"] for rows in results.values() for r in rows})
    lines = ["| model | " + " | ".join(groups) + " |", "| --- |" + " --- |" * len(groups)]
    for name, rows in results.items():
        cells = []
        for g in groups:
            rs = [r for r in rows if r["group"] == g]
            cell = (f"{np.mean([r['false_components'] for r in rs]):.1f} "
                    f"({np.mean([r['false_ml'] for r in rs]):.2f} mL)")
            if "dice" in rs[0]:
                cell += (f", {np.mean([r['dice'] for r in rs]):.3f} / "
                         f"{np.mean([r['cldice'] for r in rs]):.3f}")
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = phantom_parser(__doc__, SEEDS, 12, "texture.json / texture.md").parse_args(argv)
    cases = prepare_cases(args, make_set)
    results = {}
    for name in args.model or ["default"]:
        print(name)
        results[name] = evaluate_model(name, cases)
    md = table(results)
    print("\nfalse components per volume (mL); tree cases: Dice / clDice\n" + md)
    write_results(args.out, "texture", results, f"# Texture phantoms ('{args.set}' set)\n\n{md}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
