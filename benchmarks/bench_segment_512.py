"""All of ``segment`` on a 512^3 int16 CT-like volume against issue 7's memory target (< 8 GB
peak on CPU): a -1024 circular field of view, a body straight against air (the body-edge step),
three winding tubes and a 900 HU slab (the bone step). Prints the time and the peak RSS.

    python benchmarks/bench_segment_512.py [--n 512]

Session 16, 2 shared cores, the default model: 339 s, peak RSS 4.95 GB (target 8 GB).
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package


def make_volume(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((n, n, n), np.int16)
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    c = n / 2
    r = np.hypot(yy - c, xx - c)
    body = np.hypot((yy - c) / (0.37 * n), (xx - c) / (0.45 * n)) <= 1
    for z in range(n):
        sl = np.where(body, 40.0, -1000.0)
        for k, (cy, cx, rad) in enumerate(((0.39, 0.43, 6), (0.59, 0.51, 4), (0.5, 0.64, 3))):
            cyz = cy * n + 20 * np.sin(z / 60 + k)
            cxz = cx * n + 20 * np.cos(z / 80 + k)
            sl[np.hypot(yy - cyz, xx - cxz) <= rad] = 320.0
        sl[int(0.49 * n):int(0.51 * n), int(0.23 * n):int(0.39 * n)] = 900.0  # bone-bright slab
        sl += rng.normal(0, 15, sl.shape)
        sl[r > 0.49 * n] = -1024
        img[z] = np.round(sl).astype(np.int16)
    return img


def main() -> None:
    from napari_tubular.inference import segment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="edge length of the cube (default 512)")
    args = ap.parse_args()
    sp = (1.0, 0.8, 0.8)
    img = make_volume(args.n)
    t = time.perf_counter()
    res = segment(img, "default", "cpu", spacing=sp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"segment {args.n}^3: {time.perf_counter() - t:.0f} s, peak RSS {peak:.2f} GB "
          f"(target < 8 GB), labels {res.labels.sum() * np.prod(sp) / 1000:.1f} mL")
    for m in res.report["messages"]:
        print("  " + m[:120])


if __name__ == "__main__":
    main()
