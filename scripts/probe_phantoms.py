"""Probe a model with simple phantoms outside the synthetic tree family (prints a table).

    python scripts/probe_phantoms.py [--model default|PATH] [--model OTHER ...]

Straight tubes (``napari_tubular.synthetic.make_tube``, along x, contrast 250 HU over 40 HU
tissue) of radius 1 to 12 mm, on an isotropic 0.8 mm grid and an anisotropic 2 x 0.7 x 0.7 mm
grid, with a field of view of 80 mm (and 48 mm: smaller than the model's window), rendered
sharp (binary tube + 15 HU noise) or blurred (0.6 voxel Gaussian of the tube before the noise,
as a CT point-spread function). Per phantom: Dice of ``probability > 0.5``, Dice of the labels
``napari-tubular segment`` writes (refinement with the model's tuned T_p/T_r and the speck
filter, from the same network output) and the median radius at the tube's axis voxels. These shapes are what the held-out set does not contain: straight,
untextured, very large, sharp-edged or small volumes.

``--perturb``: a second table, two held-out volumes of ``evaluate_default.py`` (iso_1.0 and
aniso_z2.0) under perturbations the synthetic family does not contain or covers only partly: an
extra 1-voxel Gaussian blur (a wider PSF), 40 HU more noise, half the contrast (alone and with
25 HU more noise), and the same image in other units (raw CT stored as HU + 1024 in uint16,
MR-like counts x 4 + 500, an 8-bit export) that ``--intensity auto`` must recognise. Dice /
clDice / Betti-0 error of ``probability > 0.5`` after the speck filter (``segment --no-refine``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PHANTOMS = [
    # radius mm, spacing, field of view mm, blurred
    (1.0, (0.8, 0.8, 0.8), 80, False),
    (1.0, (0.8, 0.8, 0.8), 80, True),
    (2.5, (0.8, 0.8, 0.8), 48, False),
    (3.5, (2.0, 0.7, 0.7), 48, False),
    (3.5, (2.0, 0.7, 0.7), 48, True),
    (3.5, (2.0, 0.7, 0.7), 80, False),
    (5.0, (1.0, 1.0, 1.0), 80, False),
    (5.0, (1.0, 1.0, 1.0), 80, True),
    (8.0, (1.0, 1.0, 1.0), 80, True),
    (12.0, (0.8, 0.8, 0.8), 96, True),
]


def probe(model, log=print) -> list[dict]:
    from napari_tubular.inference import segment
    from napari_tubular.io import Volume
    from napari_tubular.topology import dice_score
    from napari_tubular.training.data import tube_phantom

    rows = []
    for r, sp, fov, blurred in PHANTOMS:
        img, c = tube_phantom(r, sp, fov, blurred)
        pr = segment(Volume(img, sp), model=model, device="cpu")
        m = c.mask > 0
        dice = dice_score(pr.probability > 0.5, m)
        dice_seg = dice_score(pr.labels > 0, m)
        idx = np.round(c.centerline[:, :3] / np.asarray(sp)).astype(int)
        idx = idx[len(idx) // 8: -len(idx) // 8]
        r_axis = float(np.median(pr.radius_mm[idx[:, 0], idx[:, 1], idx[:, 2]]))
        row = {"radius_mm": r, "spacing": sp, "fov_mm": fov, "blurred": blurred,
               "dice": round(dice, 3), "dice_segment": round(dice_seg, 3),
               "radius_at_axis_mm": round(r_axis, 2)}
        rows.append(row)
        log(f"r {r:>4} mm, {'x'.join(f'{s:g}' for s in sp):>11} mm, FOV {fov:>3} mm, "
            f"{'blurred' if blurred else 'sharp  '}: Dice {dice:.3f} (segment {dice_seg:.3f}), "
            f"radius at axis {r_axis:.2f} mm")
    return rows


PERTURB_CASES = (0, 6)  # evaluate_default.HELD_OUT indices: iso_1.0, aniso_z2.0


def perturbations(img: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The perturbed copies of a held-out image (HU, tissue 40 HU)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(img, [0.5, 99.9])
    return {
        "as is": img,
        "extra blur 1 voxel": 40.0 + ndimage.gaussian_filter(img - 40.0, 1.0),
        "noise +40 HU": img + rng.normal(0, 40, img.shape),
        "contrast x0.5": 40.0 + (img - 40.0) * 0.5,
        "contrast x0.5, noise +25 HU": 40.0 + (img - 40.0) * 0.5 + rng.normal(0, 25, img.shape),
        "raw CT (HU + 1024, uint16)": np.clip(img + 1024, 0, None).astype(np.uint16),
        "MR-like (x4 + 500)": img * 4 + 500,
        "8-bit": (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8),
    }


def perturb(model, log=print) -> list[dict]:
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import evaluate_default as ev

    from napari_tubular.inference import segment
    from napari_tubular.io import Volume
    from napari_tubular.topology.metrics import compute_metrics

    specs = ev.case_specs(max(PERTURB_CASES) + 1, False)
    rows = []
    for i in PERTURB_CASES:
        spec = specs[i]
        img, ref, _ = ev.make_case(spec)
        for name, data in perturbations(img).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = segment(Volume(data, spec["spacing"]), model=model, device="cpu",
                              refine=False)
            m = compute_metrics(res.labels, ref, spec["spacing"])
            rescaled = res.report["parameters"]["intensity_rescale"] is not None
            rows.append({"case": spec["name"], "perturbation": name, "dice": m["dice"],
                         "cldice": m["cldice"], "b0_error": m["b0_error"], "rescaled": rescaled})
            log(f"{spec['name']:<11} {name:<28} Dice {m['dice']:.3f} clDice {m['cldice']:.3f} "
                f"b0 error {m['b0_error']}{'  (intensities rescaled)' if rescaled else ''}")
    return rows


def main(argv=None) -> int:
    from napari_tubular.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None)
    p.add_argument("--perturb", action="store_true",
                   help="also the perturbation table on two held-out volumes")
    a = p.parse_args(argv)
    for m in a.model or ["default"]:
        print(f"== {m}")
        model = load_model(m, device="cpu")
        rows = probe(model)
        print(f"mean Dice {np.mean([r['dice'] for r in rows]):.3f} (segment "
              f"{np.mean([r['dice_segment'] for r in rows]):.3f})")
        if a.perturb:
            rows = perturb(model)
            print(f"perturbations: mean Dice {np.mean([r['dice'] for r in rows]):.3f}, clDice "
                  f"{np.mean([r['cldice'] for r in rows]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
