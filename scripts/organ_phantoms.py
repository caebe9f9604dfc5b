"""Evaluate models on tube volumes with enhancing organs beside them (prints a table).

    python scripts/organ_phantoms.py [--model default|PATH ...] [--set dev|test] [--n 8]
        [--out DIR] [--save DIR]

An outside audit found a kidney-like ellipsoid at 160 HU in plain tissue labelled whole as
vessel; a contrast CT of the abdomen has kidneys, spleen and liver enhancing. This script adds,
with code of its own (not ``synthetic.py``'s organs), one or two organs to the tube volumes of
``foreign_phantoms.py`` given in HU (background 40, tubes 280): a kidney (an ellipsoid with a
notch cut at its hilum, a bright cortex 2-5 mm thick over a darker medulla) or a spleen / liver
piece (a smooth superellipsoid, uniform parenchyma), 90-220 HU, semi-axes 10-30 mm, a smooth
texture of 5-15 HU. Tubes keep their label where they cross an organ (they are drawn over it).
Per model and case: Dice / clDice / Betti-0 error of ``segment``'s labels and of ``segment
--no-refine``, and the false-positive volume inside the organs (mL).

Seeds: ``dev`` 12000 + i, ``test`` 13000 + i, ``check`` 14000 + i (session 26: a set for checking
rules set on the other two).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foreign_phantoms import (  # noqa: E402
    case_options,
    finish,
    foreign_case,
    phantom_parser,
    prepare_cases,
    segment_both,
)

SEEDS = {"dev": 12000, "test": 13000, "check": 14000}


def add_organs(seed: int, image_hu: np.ndarray, label: np.ndarray, spacing):
    """Organs drawn into ``image_hu`` (in place) where the tubes are not; returns their mask."""
    from scipy import ndimage

    rng = np.random.default_rng([seed, 99])
    sp = np.asarray(spacing, dtype=float)
    shape = np.asarray(image_hu.shape)
    ext = shape * sp
    organ_mask = np.zeros(image_hu.shape, dtype=bool)
    zz, yy, xx = np.meshgrid(*[np.arange(s) * h for s, h in zip(shape, sp)], indexing="ij")
    for _ in range(int(rng.integers(1, 3))):
        semi = rng.uniform(10.0, 30.0, 3)
        c = rng.uniform(0.25, 0.75, 3) * ext
        q, _r = np.linalg.qr(rng.normal(size=(3, 3)))
        u = [q[0, i] * (zz - c[0]) + q[1, i] * (yy - c[1]) + q[2, i] * (xx - c[2])
             for i in range(3)]
        kidney = rng.random() < 0.5
        if kidney:
            rho = np.sqrt(sum((u[i] / semi[i]) ** 2 for i in range(3)))
            notch = np.sqrt((u[0] / (0.5 * semi[0])) ** 2 + ((u[1] - semi[1]) / (0.6 * semi[1])) ** 2
                            + (u[2] / (0.5 * semi[2])) ** 2) < 1.0
            inside = (rho < 1.0) & ~notch
        else:
            p = rng.uniform(2.5, 4.0)
            rho = sum(np.abs(u[i] / semi[i]) ** p for i in range(3)) ** (1.0 / p)
            inside = rho < 1.0
        level = rng.uniform(90.0, 220.0)
        hu = np.full(image_hu.shape, level, dtype=np.float32)
        if kidney:  # cortex over a darker medulla
            depth = ndimage.distance_transform_edt(inside, sampling=sp)
            cortex_mm = rng.uniform(2.0, 5.0)
            hu -= np.float32(rng.uniform(25.0, 70.0)) * (depth > cortex_mm)
        texture = ndimage.gaussian_filter(rng.normal(size=image_hu.shape), 3.0 / sp)
        texture /= texture.std() + 1e-9
        hu += np.float32(rng.uniform(5.0, 15.0)) * texture.astype(np.float32)
        put = inside & (label == 0)
        image_hu[put] = hu[put]
        organ_mask |= put
    return organ_mask


def make_set(set_name: str, n: int) -> list[dict]:
    cases = []
    for i in range(n):
        o = case_options(i, "dev")
        o["seed"] = SEEDS[set_name] + i
        img, lab = foreign_case(o["seed"], o["shape"], o["spacing"], n=o["n"], rmin=o["rmin"],
                                rmax=o["rmax"], blur=0.0, noise=0.0)
        # the tubes' image in HU before blur and noise, then the organs, then blur and noise
        from scipy import ndimage

        rng = np.random.default_rng([o["seed"], 7])
        hu = img * 400.0 - 40.0
        organs = add_organs(o["seed"], hu, lab, o["spacing"])
        sp = np.asarray(o["spacing"])
        hu = ndimage.gaussian_filter(hu, o["blur"] * sp.min() / sp)
        hu += rng.normal(scale=o["noise"] * 400.0, size=hu.shape)
        cases.append({"name": f"{set_name}{i}", "options": o, "image": hu.astype(np.float32),
                      "label": lab, "organs": organs.astype(np.uint8)})
    return cases


def evaluate_model(model, cases, log=print) -> list[dict]:
    from napari_tubular.topology.metrics import compute_metrics

    rows = []
    for c in cases:
        sp = c["options"]["spacing"]
        res, no_refine = segment_both(c["image"], sp, model)
        voxel_ml = float(np.prod(sp)) / 1000.0
        row = {"case": c["name"], "organ_ml": float(c["organs"].sum() * voxel_ml)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, mask in (("segment", res.labels > 0), ("no_refine", no_refine)):
                m = compute_metrics(mask, c["label"] > 0, sp)
                row[key] = {k: float(m[k]) for k in ("dice", "cldice", "b0_error")}
                row[key]["organ_fp_ml"] = float((mask & (c["organs"] > 0)).sum() * voxel_ml)
        rows.append(row)
        s = row["segment"]
        log(f"  {c['name']}: segment {s['dice']:.3f} / {s['cldice']:.3f} / b0 {s['b0_error']:.0f},"
            f" organ FP {s['organ_fp_ml']:.1f} of {row['organ_ml']:.1f} mL")
    return rows


def summary(rows) -> dict:
    return {k: {m: float(np.mean([r[k][m] for r in rows]))
                for m in ("dice", "cldice", "b0_error", "organ_fp_ml")}
            for k in ("segment", "no_refine")}


def main(argv=None) -> int:
    ap = phantom_parser(__doc__, SEEDS, 8, "organs.json / organs.md")
    args = ap.parse_args(argv)
    models = args.model or ["default"]
    cases = prepare_cases(args, make_set, (("images", "image"), ("labels", "label"),
                                           ("organs", "organs")))
    results = {}
    for name in models:
        print(name)
        rows = evaluate_model(name, cases)
        results[name] = {"cases": rows, "mean": summary(rows)}
    finish(args, len(cases), results, "organs", "Organ phantoms", extra=("organ_fp_ml",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
