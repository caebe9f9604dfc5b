"""Benchmark: centreline graph extraction, ours (vectorised numpy/scipy) vs skan.

Prints the time of both (skan's first call includes its numba compilation, reported apart) and
compares their branch counts and total lengths on the same skeleton.

    python benchmarks/bench_skeleton_graph.py [--quick] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_refinement import make_case  # noqa: E402

from napari_tubular.geometry import centerline_graph, local_radius_mm, skeletonize_mask  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args(argv)
    size = args.size or (128 if args.quick else 256)
    spacing = (1.0, 1.0, 1.0)
    mask, source = make_case(size, spacing)
    t0 = time.perf_counter()
    skel = skeletonize_mask(mask).astype(bool)
    t_skel = time.perf_counter() - t0
    radius = local_radius_mm(mask, spacing)
    print(f"{source}, {size}^3: {skel.sum()} skeleton voxels (skeletonize_mask {t_skel:.2f} s)")

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        g = centerline_graph(skel, radius, spacing)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    try:
        import skan
    except ImportError:
        print(f"centerline graph: ours {t_ours:.3f} s ({g.n_branches} branches, "
              f"{g.total_length_mm:.0f} mm); skan not installed")
        return
    t0 = time.perf_counter()
    sk = skan.Skeleton(skel, spacing=spacing, source_image=radius)
    summary = skan.summarize(sk, separator="_")
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        sk = skan.Skeleton(skel, spacing=spacing, source_image=radius)
        summary = skan.summarize(sk, separator="_")
        times.append(time.perf_counter() - t0)
    t_skan = min(times)
    print(f"centerline graph: ours {t_ours:.3f} s vs skan {t_skan:.3f} s warm "
          f"({t_skan / t_ours:.1f}x), skan first call {t_first:.2f} s "
          f"({t_first / t_ours:.0f}x, numba compilation)")
    print(f"branches: ours {g.n_branches} vs skan {len(summary)}; total length: ours "
          f"{g.total_length_mm:.1f} mm vs skan {summary['branch_distance'].sum():.1f} mm "
          "(skan also counts the steps between voxels of one junction cluster)")


if __name__ == "__main__":
    main()
