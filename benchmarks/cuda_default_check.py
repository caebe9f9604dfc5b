"""Quick check of the shipped default model on CUDA (one short device call).

    PYTHONPATH=. python benchmarks/cuda_default_check.py [cuda|cpu]

fp32 vs fp16 autocast ``predict`` on a synthetic tree (96 x 128 x 128 at 1.5 x 0.8 x 0.8 mm):
time, Dice against its label and between the two, max probability difference; Dice of a 7 mm
tube (a large vessel); ``predict`` time on a 256^3 volume (64^3 on the CPU). Needs only
numpy/scipy/torch (no SimpleITK). Writes ``$OUT/cuda_default_check.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

from napari_tubular.inference import predict
from napari_tubular.io import Volume
from napari_tubular.synthetic import make_tube, make_vessel_tree

DEV = sys.argv[1] if len(sys.argv) > 1 else "cuda"
ON_GPU = DEV.startswith("cuda")
SIZE = 256 if ON_GPU else 64


def sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> dict:
    out = {"device": torch.cuda.get_device_name(0) if ON_GPU else "cpu",
           "torch": torch.__version__}
    case = make_vessel_tree((96, 128, 128), (1.5, 0.8, 0.8), seed=200_000_123)
    img, lab = Volume(case.image, (1.5, 0.8, 0.8)), case.mask > 0
    predict(img, "default", DEV)  # warm-up
    probs = []
    for amp in (False, True):
        sync()
        t = time.perf_counter()
        pr = predict(img, "default", DEV, amp=amp)
        sync()
        out[f"amp={amp}"] = {"time_s": round(time.perf_counter() - t, 3),
                             "dice_vs_label": round(dice(pr.probability > 0.5, lab), 4)}
        probs.append(pr.probability)
    out["max_abs_diff_fp32_fp16"] = float(np.abs(probs[0] - probs[1]).max())
    out["dice_fp32_vs_fp16"] = dice(probs[0] > 0.5, probs[1] > 0.5)
    tube = make_tube((80, 80, 80), (1.0, 1.0, 1.0), radius_mm=7.0, axis=1, contrast=250.0,
                     noise=15.0, seed=2)
    pr = predict(Volume(tube.image, (1.0, 1.0, 1.0)), "default", DEV)
    out["tube7_dice"] = dice(pr.probability > 0.5, tube.mask > 0)
    vol = np.random.default_rng(0).normal(40, 20, (SIZE,) * 3).astype(np.float32)
    sync()
    t = time.perf_counter()
    predict(Volume(vol, (0.8, 0.8, 0.8)), "default", DEV)
    sync()
    out[f"predict_{SIZE}_s"] = round(time.perf_counter() - t, 3)
    return out


if __name__ == "__main__":
    res = main()
    print(json.dumps(res, indent=1))
    with open(os.path.join(os.environ.get("OUT", "."), "cuda_default_check.json"), "w") as f:
        json.dump(res, f, indent=1)
