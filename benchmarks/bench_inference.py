"""Sliding-window inference: our streaming loop vs MONAI's ``sliding_window_inference``.

Same network (a small random TubularUNet), same windows, overlap and Gaussian weights, same two
output channels (probability, E[k | k>0]); each engine runs in its own fresh process so that its
peak resident memory (ru_maxrss) is its own. Prints time, peak RSS (and its rise during the
sliding window), and the max abs difference of the outputs.

    python benchmarks/bench_inference.py            # 256^3 on the CPU
    python benchmarks/bench_inference.py --quick    # 128^3
    python benchmarks/bench_inference.py --big      # + full predict() on a 512^3 int16 volume at
                                                    #   1.0 x 0.8 x 0.8 mm (resampled to the 1 mm
                                                    #   model grid and back): peak RSS must stay < 8 GB
    python benchmarks/bench_inference.py --device cuda   # CUDA timings (peak = max_memory_allocated)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _net(args):
    import torch

    from napari_tubular.models import TubularUNet

    torch.manual_seed(0)
    return TubularUNet(base_channels=args.base, depth=args.depth, num_scales=args.k + 1).eval()


def worker(args) -> dict:
    """Run one engine in this process; print a JSON line with the measurements."""
    import torch

    from napari_tubular.inference import monai_sliding_window_predict, sliding_window_predict

    torch.set_num_threads(args.threads or torch.get_num_threads())
    dev = args.device
    net = _net(args).to(dev)
    rng = np.random.default_rng(0)
    img = rng.random((args.size,) * 3, dtype=np.float32)
    window = (args.patch,) * 3
    # warm-up on one window (allocator, kernels) so that both engines start equal
    with torch.no_grad():
        net(torch.zeros((1, 1) + window, device=dev))
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    t = time.perf_counter()
    c = time.process_time()
    if args.worker == "ours":
        p, s, _ = sliding_window_predict(
            img, net, window, overlap=args.overlap, batch_size=args.batch, device=dev, amp=True
        )
    else:
        p, s = monai_sliding_window_predict(
            img, net, window, overlap=args.overlap, batch_size=args.batch, device=dev, amp=True
        )
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    out = {
        "engine": args.worker,
        "time_s": elapsed,
        "cpu_s": time.process_time() - c,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
    }
    if dev.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.save:
        np.save(args.save, np.stack([p.numpy(), s.numpy()]))
    return out


def big_worker(args) -> dict:
    """Full predict() on a 512^3 int16 CT-like volume; report peak RSS."""
    import torch

    from napari_tubular.inference import predict

    torch.set_num_threads(args.threads or torch.get_num_threads())
    net = _net(args)
    meta = {
        "K": args.k,
        "spacing": [args.model_spacing] * 3,
        "patch_size": [args.patch] * 3,
        "normalization": {"kind": "window", "low": -100, "high": 600},
        "arch": net.config,
    }
    n = args.big_size
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, size=(n, n, n), dtype=np.int16)
    base = _rss_mb()
    t = time.perf_counter()
    pred = predict(
        vol,
        (net, meta),
        args.device,
        spacing=(1.0, 0.8, 0.8),
        batch_size=args.batch,
        overlap=args.overlap,
    )
    elapsed = time.perf_counter() - t
    return {
        "engine": "predict-big",
        "time_s": elapsed,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "input_mb": vol.nbytes / 2**20,
        "timings": pred.timings,
        "grid": list(pred.probability.shape),
    }


def _spawn(args, engine: str, save: str | None = None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        engine,
        "--size",
        str(args.size),
        "--patch",
        str(args.patch),
        "--overlap",
        str(args.overlap),
        "--batch",
        str(args.batch),
        "--base",
        str(args.base),
        "--depth",
        str(args.depth),
        "--k",
        str(args.k),
        "--device",
        args.device,
        "--big-size",
        str(args.big_size),
        "--threads",
        str(args.threads),
        "--model-spacing",
        str(args.model_spacing),
    ]
    if save:
        cmd += ["--save", save]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="128^3 instead of 256^3")
    ap.add_argument("--big", action="store_true", help="also the 512^3 peak-memory run")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--big-size", type=int, default=512)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--base", type=int, default=4)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--model-spacing", type=float, default=1.0,
                    help="model grid of the --big run in mm (the default model's is 0.8)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2, help="runs per engine (fastest kept)")
    ap.add_argument("--worker", choices=["ours", "monai", "big"], help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.size is None:
        args.size = 128 if args.quick else 256
    if args.worker:
        res = big_worker(args) if args.worker == "big" else worker(args)
        print(json.dumps(res))
        return 0

    print(
        f"sliding window, {args.size}^3 on {args.device}: TubularUNet(base={args.base}, "
        f"depth={args.depth}, K={args.k}), window {args.patch}^3, overlap {args.overlap}, "
        f"batch {args.batch}; each engine in a fresh process, best of {args.repeat}"
    )
    runs: dict = {"ours": [], "monai": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):  # alternate the engines; keep each one's fastest run
            for engine in ("ours", "monai"):
                runs[engine].append(_spawn(args, engine, os.path.join(tmp, f"{engine}.npy")))
        a, b = np.load(os.path.join(tmp, "ours.npy")), np.load(os.path.join(tmp, "monai.npy"))
    ours = min(runs["ours"], key=lambda r: r["time_s"])
    monai = min(runs["monai"], key=lambda r: r["time_s"])
    diff_p = float(np.abs(a[0] - b[0]).max())
    diff_s = float(np.abs(a[1] - b[1]).max())
    rise_o = ours["peak_rss_mb"] - ours["base_rss_mb"]
    rise_m = monai["peak_rss_mb"] - monai["base_rss_mb"]
    print(
        f"  time      : ours {ours['time_s']:.2f} s vs MONAI {monai['time_s']:.2f} s, "
        f"{monai['time_s'] / ours['time_s']:.2f}x"
    )
    print(
        f"  CPU time  : ours {ours['cpu_s']:.2f} s vs MONAI {monai['cpu_s']:.2f} s, "
        f"{monai['cpu_s'] / ours['cpu_s']:.2f}x (less sensitive to other load on the machine)"
    )
    print(
        f"  peak RSS  : ours {ours['peak_rss_mb']:.0f} MB vs MONAI {monai['peak_rss_mb']:.0f} MB, "
        f"{monai['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x"
    )
    print(
        f"  RSS rise during inference: ours {rise_o:.0f} MB vs MONAI {rise_m:.0f} MB"
        + (f", {rise_m / rise_o:.2f}x" if rise_o > 0 else "")
    )
    if "cuda_peak_mb" in ours:
        print(
            f"  CUDA peak : ours {ours['cuda_peak_mb']:.0f} MB vs MONAI {monai['cuda_peak_mb']:.0f} MB"
        )
    print(f"  max |ours - MONAI|: probability {diff_p:.2e}, expected scale {diff_s:.2e}")
    result = {
        "ours": ours,
        "monai": monai,
        "max_abs_diff_probability": diff_p,
        "max_abs_diff_scale": diff_s,
    }
    if args.big:
        big = _spawn(args, "big")
        ok = big["peak_rss_mb"] < 8192
        print(
            f"predict() on {args.big_size}^3 int16 ({big['input_mb']:.0f} MB) at 1.0x0.8x0.8 mm -> "
            f"model grid {'x'.join(str(round(args.big_size * f / args.model_spacing)) for f in (1.0, 0.8, 0.8))} "
            f"and back, {args.device}: {big['time_s']:.1f} s, peak RSS {big['peak_rss_mb']:.0f} MB "
            f"({'under' if ok else 'OVER'} the 8 GB limit)"
        )
        print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in big["timings"].items()))
        result["big"] = big
    print("JSON " + json.dumps(result))
    if not (diff_p <= 1e-4 and diff_s <= 1e-3):  # same network and windows: equal up to rounding
        print(f"MISMATCH: ours and MONAI differ (probability {diff_p:.3g}, scale {diff_s:.3g}); "
              "the timings above do not compare the same computation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
