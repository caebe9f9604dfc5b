"""One-shot GPU check (a few minutes on a rented CUDA GPU): run it, read the summary, keep the JSON.

    python benchmarks/gpu_check.py                       # CUDA, 256^3
    python benchmarks/gpu_check.py --device cpu --quick  # smoke test without a GPU (64^3)
    python benchmarks/gpu_check.py --only amp,tube       # a short check of the shipped model

Sections (each in its own try block: a failure is recorded with its message, the rest runs):

1. environment (torch, CUDA device, memory);
2. model: the installed default model, or a random TubularUNet (base 16, depth 4, K 5, window 96)
   when there is none (timings are then meaningful, agreement numbers only roughly);
3. predict() fp32 vs fp16 autocast on a synthetic vessel volume: time, max |P32 - P16|, Dice of
   ``P > 0.5`` and of the refined labels between the two;
4. sliding window ours vs MONAI on the same input/network/weights: time, peak CUDA memory, max diff;
5. scale: expected class E[k|k>0] vs argmax of the blended softmax (radius agreement on P > 0.5);
6. Refiner (geometry core) on CUDA vs numpy: time and label agreement;
7. out-of-memory fallback: a network that raises CUDA OOM runs to the end on the CPU;
8. losses (napari_tubular.losses) forward + backward under CUDA autocast: finite values;
9. large vessel: a straight 7 mm tube (80^3 at 1 mm, 250 HU over tissue, 15 HU noise),
   Dice of ``P > 0.5`` (the K = 16 default: 0.975 on the CPU).

``--only`` runs a subset of 3-9 (names: amp, sliding, scale, refiner, oom, losses, tube);
environment, model and volume always run.

Writes ``$OUT/gpu_check.json`` (or ``./gpu_check.json`` when OUT is unset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

RESULTS: dict = {"sections": {}}
CHECKS = ("amp", "sliding", "scale", "refiner", "oom", "losses", "tube")


def section(name):
    def deco(fn):
        def run(*a, **kw):
            t = time.perf_counter()
            print(f"--- {name}", flush=True)
            try:
                out = fn(*a, **kw)
                entry = {"ok": True, **(out or {})}
            except Exception as exc:  # noqa: BLE001 - a check script records every failure and goes on
                entry = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=6),
                }
                out = None
                print(f"    FAILED: {entry['error']}", flush=True)
            entry["seconds"] = round(time.perf_counter() - t, 3)
            RESULTS["sections"][name] = entry
            for k, v in entry.items():
                if (
                    k not in ("ok", "traceback")
                    and not k.startswith("_")
                    and not isinstance(v, (dict, list))
                ):
                    print(f"    {k}: {v}", flush=True)
            return out

        return run

    return deco


def _sync(dev):
    import torch

    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


def _dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


@section("environment")
def check_env(dev):
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": dev,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_memory_gb=round(p.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    from napari_tubular import __version__

    info["napari_tubular"] = __version__
    return info


@section("model")
def get_model(dev, quick):
    import torch

    from napari_tubular.models import DEFAULT_MODEL_PATH, TubularUNet, load_model

    if DEFAULT_MODEL_PATH.is_file():
        net, meta = load_model("default", device=dev)
        kind = "default"
    else:
        torch.manual_seed(0)
        cfg = (
            dict(base_channels=8, depth=3, num_scales=6)
            if quick
            else dict(base_channels=16, depth=4, num_scales=6)
        )
        net = TubularUNet(**cfg).eval().to(dev)
        patch = 48 if quick else 96
        meta = {
            "K": 5,
            "spacing": [1.0, 1.0, 1.0],
            "patch_size": [patch] * 3,
            "arch": net.config,
            "normalization": {"kind": "window", "low": -100, "high": 600},
            "path": "<random>",
        }
        kind = "random"
    params = sum(p.numel() for p in net.parameters())
    return {
        "kind": kind,
        "parameters": params,
        "patch_size": meta["patch_size"],
        "K": meta["K"],
        "spacing": meta["spacing"],
        "_net": net,
        "_meta": meta,
    }


@section("volume")
def make_volume(size):
    try:
        from napari_tubular.synthetic import make_vessel_tree

        case = make_vessel_tree((size,) * 3, (1.0, 1.0, 1.0), seed=0)
        img, kind = case.image, "synthetic vessel tree"
    except ImportError as exc:
        rng = np.random.default_rng(0)
        img, kind = (rng.normal(40, 30, (size,) * 3)).astype(np.float32), f"noise ({exc})"
    return {"shape": list(img.shape), "kind": kind, "_img": img}


@section("predict fp32 vs fp16")
def check_amp(img, net, meta, dev):
    from napari_tubular.inference import predict, refine_maps

    model = (net, meta)
    predict(img[:64, :64, :64], model, dev, amp=True)  # warm-up (cudnn autotune, allocator)
    out = {}
    preds = {}
    for amp in (False, True):
        _sync(dev)
        t = time.perf_counter()
        p = predict(img, model, dev, amp=amp, batch_size=4)
        _sync(dev)
        preds[amp] = p
        out[f"time_s_{'fp16' if amp else 'fp32'}"] = round(time.perf_counter() - t, 3)
        out[f"network_s_{'fp16' if amp else 'fp32'}"] = round(p.timings["network"], 3)
    p32, p16 = preds[False].probability, preds[True].probability
    out["speedup_fp16"] = round(out["time_s_fp32"] / out["time_s_fp16"], 2)
    out["max_abs_diff_probability"] = float(np.abs(p32 - p16).max())
    out["dice_prob_gt_0.5"] = _dice(p32 > 0.5, p16 > 0.5)
    out["max_abs_diff_radius_mm_on_fg"] = float(
        np.abs(preds[False].radius_mm - preds[True].radius_mm)[p32 > 0.5].max(initial=0.0)
    )
    out["foreground_fraction"] = float((p32 > 0.5).mean())
    try:
        l32, _ = refine_maps(p32, preds[False].radius_mm, preds[False].spacing, 0.9, 0.5, dev)
        l16, _ = refine_maps(p16, preds[True].radius_mm, preds[True].spacing, 0.9, 0.5, dev)
        out["dice_refined_labels"] = _dice(l32, l16)
    except ImportError as exc:
        out["dice_refined_labels"] = f"refiner unavailable: {exc}"
    out["device_used"] = preds[True].device_used
    out["_pred"] = preds[True]
    return out


@section("sliding window ours vs MONAI")
def check_sliding(img, net, meta, dev):
    import torch

    from napari_tubular.inference import monai_sliding_window_predict, sliding_window_predict
    from napari_tubular.models import normalize_intensity

    x = normalize_intensity(img, meta["normalization"])
    window = tuple(meta["patch_size"])
    out = {}
    res = {}
    for name, fn in (("ours", sliding_window_predict), ("monai", monai_sliding_window_predict)):
        kw = dict(overlap=0.25, batch_size=4, device=dev, amp=True)
        fn(x[:64, :64, :64], net, window, **kw)  # warm-up
        if str(dev).startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        best = None
        for _ in range(2):
            _sync(dev)
            t = time.perf_counter()
            r = fn(x, net, window, **kw)
            _sync(dev)
            el = time.perf_counter() - t
            best = el if best is None else min(best, el)
        res[name] = r
        out[f"time_s_{name}"] = round(best, 3)
        if str(dev).startswith("cuda"):
            out[f"cuda_peak_mb_{name}"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["monai_over_ours_time"] = round(out["time_s_monai"] / out["time_s_ours"], 2)
    # ours may leave its outputs on the GPU, MONAI's wrapper returns them on the CPU
    ours = [torch.as_tensor(t).float().cpu() for t in res["ours"][:2]]
    theirs = [torch.as_tensor(t).float().cpu() for t in res["monai"][:2]]
    out["max_abs_diff_probability"] = float((ours[0] - theirs[0]).abs().max())
    out["max_abs_diff_scale"] = float((ours[1] - theirs[1]).abs().max())
    return out


@section("scale: expected vs argmax")
def check_scale(img, net, meta, dev):
    from napari_tubular.inference import predict

    a = predict(img, (net, meta), dev, scale_mode="expected")
    b = predict(img, (net, meta), dev, scale_mode="argmax")
    fg = a.probability > 0.5
    d = np.abs(a.radius_mm - b.radius_mm)[fg]
    sp = min(meta["spacing"])
    return {
        "foreground_voxels": int(fg.sum()),
        "median_abs_diff_mm": float(np.median(d)) if d.size else None,
        "p95_abs_diff_mm": float(np.percentile(d, 95)) if d.size else None,
        "frac_within_half_class": float((d <= 0.5 * sp).mean()) if d.size else None,
        "time_s_expected": round(a.timings["network"], 3),
        "time_s_argmax": round(b.timings["network"], 3),
    }


@section("refiner cuda vs cpu")
def check_refiner(pred, dev):
    from napari_tubular.geometry.refiner import Refiner

    out = {}
    labels = {}
    for d in ("cpu", "cuda") if str(dev).startswith("cuda") else ("cpu",):
        r = Refiner(pred.probability, pred.radius_mm, pred.spacing, device=d)
        r.update(tp=0.95, tr=0.5)  # warm-up
        t = time.perf_counter()
        res = r.update(tp=0.9, tr=0.5)
        out[f"time_s_{d}_tp_change"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        r.update(tr=0.6)
        out[f"time_s_{d}_tr_change"] = round(time.perf_counter() - t, 4)
        labels[d] = np.array(res.labels)
        out[f"seeds_{d}"] = int(res.n_seeds)
    if "cuda" in labels:
        out["labels_differ_voxels"] = int((labels["cpu"] != labels["cuda"]).sum())
        out["dice_cpu_cuda"] = _dice(labels["cpu"], labels["cuda"])
    return out


@section("out-of-memory fallback")
def check_oom(dev):
    import torch

    from napari_tubular.inference import predict

    if not str(dev).startswith("cuda"):
        return {"skipped": "needs CUDA"}

    class OOMOnCuda(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            if x.is_cuda:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. (simulated)")
            return {"seg": x, "scale": torch.zeros((x.shape[0], 3) + tuple(x.shape[2:]))}

    meta = {
        "K": 2,
        "spacing": [1, 1, 1],
        "patch_size": [16, 16, 16],
        "normalization": {"kind": "none"},
    }
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        # a noisy volume: a constant one is answered without running the network (session
        # 35's device run: "the image is constant", the fallback never reached, "ok")
        vol = np.random.default_rng(0).normal(0.0, 1.0, (20, 20, 20)).astype(np.float32)
        p = predict(vol, (OOMOnCuda(), meta), dev, batch_size=4)
    out = {
        "device_used": p.device_used,
        "messages": " | ".join(p.messages),
        "warnings": len(w),
        "finished_on_cpu": p.device_used.startswith("cpu"),
    }
    if not out["finished_on_cpu"] or "continuing on the CPU" not in out["messages"]:
        raise AssertionError(f"the CUDA out-of-memory fallback did not run: {out}")
    return out


@section("large vessel")
def check_tube(net, meta, dev):
    from napari_tubular.inference import predict
    from napari_tubular.synthetic import make_tube

    sp = (1.0, 1.0, 1.0)
    tube = make_tube((80, 80, 80), sp, radius_mm=7.0, axis=1, contrast=250.0, noise=15.0, seed=2)
    _sync(dev)
    t = time.perf_counter()
    p = predict(tube.image, (net, meta), dev, spacing=sp)
    _sync(dev)
    return {"dice_tube_7mm": _dice(p.probability > 0.5, tube.mask > 0),
            "time_s": round(time.perf_counter() - t, 3), "device_used": p.device_used}


@section("losses under autocast")
def check_losses(dev, net_k=5):
    import torch

    from napari_tubular import losses as L
    from napari_tubular.models import TubularUNet

    torch.manual_seed(0)
    net = TubularUNet(base_channels=4, depth=3, num_scales=net_k + 1, deep_supervision=True).to(dev)
    x = torch.randn(2, 1, 32, 32, 32, device=dev)
    target = (torch.rand(2, 1, 32, 32, 32, device=dev) > 0.8).float()
    scale_t = (target[:, 0] * torch.randint(1, net_k + 1, (2, 32, 32, 32), device=dev)).long()
    phi = torch.randn(2, 1, 32, 32, 32, device=dev)
    cases = {
        "DDTLoss": lambda o: L.DDTLoss(net_k)(o["seg"], o["scale"], target, scale_t),
        "SoftDiceLoss": lambda o: L.SoftDiceLoss()(o["seg"], target),
        "SoftclDiceLoss": lambda o: L.SoftclDiceLoss(iters=5)(o["seg"], target),
        "DiceclDiceLoss": lambda o: L.DiceclDiceLoss(iters=5)(o["seg"], target),
        "BoundaryLoss": lambda o: L.BoundaryLoss()(o["seg"], phi),
        "DeepSupervisionLoss": lambda o: L.DeepSupervisionLoss()(o["ds"], target),
    }
    out = {}
    use_amp = str(dev).startswith("cuda")
    for name, fn in cases.items():
        try:
            net.zero_grad()
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                o = net(x)
                loss = fn(o)
            loss.backward()
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
            out[name] = (
                f"loss {float(loss.detach()):.4f} ({loss.dtype}), finite={bool(torch.isfinite(loss))}, grads_finite={bool(grads_ok)}"
            )
        except Exception as exc:  # noqa: BLE001 - record and continue with the next loss
            out[name] = f"FAILED {type(exc).__name__}: {exc}"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="64^3 volume and a smaller random model")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--only", default=None, metavar="NAMES",
                    help=f"comma-separated subset of {', '.join(CHECKS)} (default: all)")
    args = ap.parse_args(argv)
    only = set(CHECKS) if args.only is None else set(args.only.split(","))
    if only - set(CHECKS):
        ap.error(f"--only: unknown check(s) {sorted(only - set(CHECKS))}; choose from {CHECKS}")
    size = args.size or (64 if args.quick else 256)
    t0 = time.perf_counter()
    dev = args.device
    env = check_env(dev)
    if env and dev.startswith("cuda") and not env.get("cuda_available"):
        print("CUDA not available: falling back to --device cpu", flush=True)
        dev = "cpu"
    m = get_model(dev, args.quick)
    v = make_volume(size)
    pred = None
    if m and v:
        net, meta, img = m.pop("_net"), m.pop("_meta"), v.pop("_img")
        RESULTS["sections"]["model"].pop("_net", None)
        RESULTS["sections"]["model"].pop("_meta", None)
        RESULTS["sections"]["volume"].pop("_img", None)
        a = check_amp(img, net, meta, dev) if "amp" in only else None
        if a:
            pred = a.pop("_pred")
            RESULTS["sections"]["predict fp32 vs fp16"].pop("_pred", None)
        if "sliding" in only:
            check_sliding(img, net, meta, dev)
        if "scale" in only:
            check_scale(img, net, meta, dev)
        if pred is not None and "refiner" in only:
            check_refiner(pred, dev)
        if "tube" in only:
            check_tube(net, meta, dev)
    if "oom" in only:
        check_oom(dev)
    if "losses" in only:
        check_losses(dev)
    RESULTS["total_seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS["failed"] = [k for k, v in RESULTS["sections"].items() if not v.get("ok")]
    out_dir = Path(os.environ.get("OUT", "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
    print("=== summary")
    for name, entry in RESULTS["sections"].items():
        print(
            f"  {'ok    ' if entry.get('ok') else 'FAILED'} {name} ({entry['seconds']} s)"
            + ("" if entry.get("ok") else f": {entry['error']}")
        )
        for k, val in entry.items():
            if isinstance(val, dict):
                for kk, vv in val.items():
                    print(f"      {k}.{kk}: {vv}")
    print(f"total {RESULTS['total_seconds']} s; JSON written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
