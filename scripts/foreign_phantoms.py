"""Evaluate models on tube volumes from a SECOND, independent generator (prints a table).

    python scripts/foreign_phantoms.py [--model default|PATH ...] [--set dev|test] [--n 10]
        [--out DIR] [--save DIR]

The held-out set of ``evaluate_default.py`` comes from the same generator as the training data
(``napari_tubular.synthetic``): it cannot show what that generator never makes. This script
renders its volumes with code of its own, written independently of ``synthetic.py``, the way a
user's or a reviewer's simple phantom would be: a few random-walk tubes (constant-step
centreline, a radius tapering linearly along each tube, blunt ends where a tube stops inside the
volume, tubes that cross each other), the label = voxel centres within the radius of the nearest
centreline point (a KD-tree query), the image = ``0.2 + 0.6 * occupancy`` in [0, 1] units
(occupancy ``clip(0.5 + (r - d) / h, 0, 1)``), a Gaussian blur of 0.4-1.2 finest voxels (in mm,
isotropic), white Gaussian noise of 0.03-0.12 (contrast 0.6: per-voxel CNR 5-20). No tissue
texture, no distractors, no bias field; intensities in [0, 1], so ``intensity='auto'`` must
rescale them. Spacings: 1, 0.8, 0.6 mm isotropic, 1.5 x 0.8 x 0.8 and 2 x 0.7 x 0.7 mm; field of
view 80 mm.

Two sets of seeds: ``dev`` (3000 + i: the set used while developing, e.g. to find that the
default model rejected short thick tubes with blunt ends) and ``test`` (5000 + i: looked at
only to report); a third, ``coarse`` (6000 + i), renders the same kind of volume on coarse grids
(1.5-2 mm in-plane, up to 2.5 mm slices). Per model and case: Dice / clDice / Betti-0 error of the labels
``napari-tubular segment`` writes (refinement with the model's tuned T_p/T_r, speck filter)
and of ``segment --no-refine`` (``P > 0.5`` + speck filter), from the same network output.
``--save DIR`` writes the cases as NIfTI (``DIR/images``, ``DIR/labels``) for the CLI.
``--no-intensity-refit`` segments without the vessel-fitted second pass (the first pass alone:
the robust-range rescale); ``--units hu`` gives the images in the default model's units
(``x 400 - 40``: background 40 HU, tubes 280 HU), where no rescale happens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SEEDS = {"dev": 3000, "test": 5000, "coarse": 6000}
SPACINGS = [(1.0, 1.0, 1.0), (0.8, 0.8, 0.8), (0.6, 0.6, 0.6), (1.5, 0.8, 0.8), (2.0, 0.7, 0.7)]
#: the "coarse" set's grids (session 10: 2 mm isotropic volumes gave Dice 0.4-0.55)
COARSE_SPACINGS = [(1.5, 1.5, 1.5), (2.0, 2.0, 2.0), (1.8, 1.8, 1.8), (2.5, 1.5, 1.5),
                   (2.0, 1.2, 1.2)]
FOV_MM = 80.0
STEP_MM = 0.25


def case_options(i: int, set_name: str = "dev") -> dict:
    """The random options of case ``i`` of a set (spacing, tube count, radii, blur, noise)."""
    rng = np.random.default_rng([77, SEEDS[set_name], i])
    grids = COARSE_SPACINGS if set_name == "coarse" else SPACINGS
    sp = grids[i % len(grids)]
    return {
        "seed": SEEDS[set_name] + i,
        "spacing": sp,
        "shape": tuple(int(round(FOV_MM / s)) for s in sp),
        "n": int(rng.integers(3, 9)),
        "rmin": float(rng.uniform(0.5, 1.5)),
        "rmax": float(rng.uniform(2.0, 6.0)),
        "blur": float(rng.uniform(0.4, 1.2)),
        "noise": float(rng.uniform(0.03, 0.12)),
    }


def foreign_case(seed: int, shape, spacing, n: int = 6, rmin: float = 0.6, rmax: float = 3.5,
                 blur: float = 0.8, noise: float = 0.08):
    """(image float32 in [0, 1] units, label uint8) of ``n`` random-walk tubes."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    ext = np.asarray(shape) * sp
    pts, rads = [], []
    for _ in range(n):
        p = rng.uniform(0.1, 0.9, 3) * ext
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        r0 = rng.uniform(rmin, rmax)
        r1 = rng.uniform(rmin, r0)
        m = int(rng.uniform(0.5, 1.2) * ext.mean() / STEP_MM)
        for k in range(m):
            d += rng.normal(scale=0.05, size=3)
            d /= np.linalg.norm(d)
            p = p + STEP_MM * d
            if np.any(p < 0) or np.any(p > ext):
                break
            pts.append(p.copy())
            rads.append(r0 + (r1 - r0) * k / m)
    pts, rads = np.asarray(pts), np.asarray(rads)
    grid = np.stack(np.meshgrid(*[np.arange(s) * h for s, h in zip(shape, sp)], indexing="ij"),
                    -1).reshape(-1, 3)
    dist, j = cKDTree(pts).query(grid, distance_upper_bound=rmax + 3)
    j = np.minimum(j, len(pts) - 1)
    d = dist.reshape(shape)
    r = rads[j].reshape(shape)
    label = d <= r
    occ = np.clip(0.5 + (r - d) / sp.min(), 0, 1)
    img = 0.2 + 0.6 * occ
    img = ndimage.gaussian_filter(img, blur * sp.min() / sp)
    img = img + rng.normal(scale=noise, size=tuple(shape))
    return img.astype(np.float32), label.astype(np.uint8)


def make_set(set_name: str, n: int) -> list[dict]:
    cases = []
    for i in range(n):
        o = case_options(i, set_name)
        img, lab = foreign_case(o["seed"], o["shape"], o["spacing"], n=o["n"], rmin=o["rmin"],
                                rmax=o["rmax"], blur=o["blur"], noise=o["noise"])
        cases.append({"name": f"{set_name}{i}", "options": o, "image": img, "label": lab})
    return cases


def segment_both(image, spacing, model, **kwargs):
    """``(result, no_refine mask)``: ``napari-tubular segment``'s result and the labels of
    ``segment --no-refine`` (``P > 0.5`` + speck filter) from the same network output, warnings
    silenced (also used by body_phantoms.py)."""
    from napari_tubular.geometry import remove_small_components
    from napari_tubular.inference import DEFAULT_MIN_SIZE_MM3, NO_REFINE_THRESHOLD, segment
    from napari_tubular.io import Volume

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = segment(Volume(image, spacing), model=model, device="cpu", **kwargs)
        no_refine = remove_small_components(res.probability > NO_REFINE_THRESHOLD, spacing,
                                            DEFAULT_MIN_SIZE_MM3)[0] > 0
    return res, no_refine


def evaluate_model(model, cases, log=print, refit_intensity: bool = True,
                   units: str = "unit") -> list[dict]:
    from napari_tubular.topology.metrics import compute_metrics

    rows = []
    for c in cases:
        sp = c["options"]["spacing"]
        image = c["image"] if units == "unit" else c["image"] * 400.0 - 40.0
        res, no_refine = segment_both(image, sp, model, refit_intensity=refit_intensity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = {"case": c["name"], "options": c["options"]}
            for key, mask in (("segment", res.labels > 0), ("no_refine", no_refine)):
                m = compute_metrics(mask, c["label"] > 0, sp)
                row[key] = {k: float(m[k]) for k in ("dice", "cldice", "b0_error")}
        rows.append(row)
        log(f"  {c['name']}: segment {row['segment']['dice']:.3f} / "
            f"{row['segment']['cldice']:.3f}, no-refine {row['no_refine']['dice']:.3f} / "
            f"{row['no_refine']['cldice']:.3f}")
    return rows


def summary(rows) -> dict:
    return {k: {m: float(np.mean([r[k][m] for r in rows])) for m in ("dice", "cldice", "b0_error")}
            for k in ("segment", "no_refine")}


def save_cases(cases, folder, parts=(("images", "image"), ("labels", "label"))) -> None:
    """Write each case's arrays as NIfTI: ``folder/<sub>/<name>.nii.gz`` for every
    ``(sub, key)`` of ``parts``, with the case's spacing (also used by body_phantoms.py)."""
    from napari_tubular.io import Volume, write_volume

    for c in cases:
        sp = c["options"]["spacing"]
        for sub, key in parts:
            Path(folder, sub).mkdir(parents=True, exist_ok=True)
            write_volume(Path(folder, sub, f"{c['name']}.nii.gz"), Volume(c[key], sp),
                         overwrite=True)


def prepare_cases(args, make_set, parts=(("images", "image"), ("labels", "label"))) -> list:
    """The cases of ``args.set`` (timed, said), saved as NIfTI with ``--save`` (also used by
    body_phantoms.py and organ_phantoms.py)."""
    t = time.perf_counter()
    cases = make_set(args.set, args.n)
    print(f"{len(cases)} '{args.set}' cases in {time.perf_counter() - t:.1f} s")
    if args.save:
        save_cases(cases, args.save, parts)
    return cases


def write_results(out, stem: str, results: dict, markdown: str) -> None:
    """``out/stem.json`` (the results) and ``out/stem.md`` (``markdown``), if ``out``."""
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
        (out / f"{stem}.md").write_text(markdown)


def finish(args, n_cases: int, results: dict, stem: str, title: str, extra=()) -> None:
    """Print the table of means (Dice / clDice / b0, then the ``extra`` keys, of ``segment``
    and ``--no-refine`` per model) and write ``--out``'s files (also used by organ_phantoms.py)."""
    head = " / ".join(["Dice", "clDice", "b0", *extra])
    lines = [f"| model | `segment` {head} | `--no-refine` |", "| --- | --- | --- |"]
    for name, r in results.items():
        cells = []
        for key in ("segment", "no_refine"):
            m = r["mean"][key]
            values = [f"{m['dice']:.3f}", f"{m['cldice']:.3f}", f"{m['b0_error']:.1f}"]
            cells.append(" / ".join(values + [f"{m[k]:.1f}" for k in extra]))
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    table = "\n".join(lines)
    print(f"\n'{args.set}' set, {n_cases} volumes (mean):\n{table}")
    write_results(args.out, stem, results, f"# {title} ('{args.set}' set)\n\n{table}\n")


def phantom_parser(doc: str, sets, n: int, out_files: str) -> argparse.ArgumentParser:
    """The options every phantom-set script shares (also used by body_phantoms.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", action="append", default=None,
                    help="default or a model file (repeatable)")
    ap.add_argument("--set", choices=sorted(sets), default="test")
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--out", default=None, help=f"folder for {out_files}")
    ap.add_argument("--save", default=None, help="also write the cases as NIfTI here")
    return ap


def main(argv=None) -> int:
    ap = phantom_parser(__doc__, SEEDS, 10, "foreign.json / foreign.md")
    ap.add_argument("--no-intensity-refit", action="store_true",
                    help="segment without the second, vessel-fitted intensity pass")
    ap.add_argument("--units", choices=("unit", "hu"), default="unit",
                    help="'hu': give the images as HU (x 400 - 40: background 40, tubes 280), "
                         "the default model's own units, instead of [0, 1]")
    args = ap.parse_args(argv)
    models = args.model or ["default"]
    cases = prepare_cases(args, make_set)
    results = {}
    for name in models:
        print(name)
        rows = evaluate_model(name, cases, refit_intensity=not args.no_intensity_refit,
                              units=args.units)
        results[name] = {"cases": rows, "mean": summary(rows)}
    finish(args, len(cases), results, "foreign", "Foreign phantoms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
