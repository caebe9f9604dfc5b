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
"""

from __future__ import annotations

import argparse
import sys

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


def phantom(r, sp, fov, blurred, seed=0):
    from scipy import ndimage

    from napari_tubular.synthetic import make_tube

    shape = tuple(int(round(fov / s)) for s in sp)
    c = make_tube(shape, sp, radius_mm=r, axis=2, contrast=250.0, noise=0.0, seed=seed)
    img = c.image.astype(np.float64)
    if blurred:
        img = 40.0 + ndimage.gaussian_filter(img - 40.0, 0.6)
    img = img + np.random.default_rng(seed).normal(0, 15, img.shape)
    return img.astype(np.float32), c


def probe(model, log=print) -> list[dict]:
    from napari_tubular.inference import segment
    from napari_tubular.io import Volume

    def _dice(p, m):
        return float(2 * (p & m).sum() / max(1, p.sum() + m.sum()))

    rows = []
    for r, sp, fov, blurred in PHANTOMS:
        img, c = phantom(r, sp, fov, blurred)
        pr = segment(Volume(img, sp), model=model, device="cpu")
        m = c.mask > 0
        dice = _dice(pr.probability > 0.5, m)
        dice_seg = _dice(pr.labels > 0, m)
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


def main(argv=None) -> int:
    from napari_tubular.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None)
    a = p.parse_args(argv)
    for m in a.model or ["default"]:
        print(f"== {m}")
        rows = probe(load_model(m, device="cpu"))
        print(f"mean Dice {np.mean([r['dice'] for r in rows]):.3f} (segment "
              f"{np.mean([r['dice_segment'] for r in rows]):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
