"""Evaluate the default DDT model and the plain baseline on the held-out synthetic set.

    python scripts/evaluate_default.py --model ddt=napari_tubular/weights/default.pt \
        --model baseline=runs/default/baseline.pt --out runs/eval [--device cuda] [--quick]

Held-out set: 10 synthetic vessel volumes generated with seeds 200000000 + i (training uses
seeds below 1e8, validation 1e8 + ...): isotropic 0.7 to 1.2 mm, anisotropic (z 1.25 to
2.5 mm, in-plane 0.7 to 0.9 mm) and two volumes of thin vessels only (radius 0.3 to 1.5 mm, about
one voxel). Each volume is segmented at its native grid (``napari_tubular.inference.predict``
resamples to the model spacing and back) and compared with its exact label
(``napari_tubular.topology.compute_metrics``, native spacing).

Variants per model: ``prob > 0.5`` (no refinement) and the DDT geometry-aware refinement
(GAR, ``napari_tubular.inference.refine_maps``) with ``T_p, T_r`` chosen on validation volumes
(seeds 1e8 + i, disjoint from the held-out set). The DDT model's radii come from its scale head;
the baseline (``dice+ce``: no trained scale head) is refined with radii from the EDT of its own
thresholded mask (``local_radius_mm``), so "baseline + GAR" shows what the refinement alone does.

A third variant per model, "+ CC filter", removes predicted 26-connected components smaller than
20 mm^3 from ``prob > 0.5`` (an analysis of where the Betti-0 errors come from: specks, or
breaks). "+ PV trim + CC filter" and "+ GAR + PV trim + CC filter" add the partial-volume
boundary trim (``napari_tubular.geometry.partial_volume``) before the speck filter: what
``segment --no-refine`` and ``segment`` write (session 9).

Writes OUT/eval.json (per case, per variant) and OUT/eval.md (tables); prints the main table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from napari_tubular.training.config import HELD_OUT_SEED_BASE as HELD_OUT_SEED

EXTENT_MM = 88.0
QUICK_EXTENT_MM = 36.0
THIN = {"min_radius_mm": 0.3, "max_radius_mm": 1.5}

# name, spacing (z, y, x) mm, generator options
HELD_OUT = [
    ("iso_1.0", (1.0, 1.0, 1.0), {}),
    ("iso_0.8", (0.8, 0.8, 0.8), {}),
    ("iso_0.7", (0.7, 0.7, 0.7), {}),
    ("iso_1.2", (1.2, 1.2, 1.2), {}),
    ("aniso_z1.25", (1.25, 0.9, 0.9), {}),
    ("aniso_z1.5", (1.5, 0.75, 0.75), {}),
    ("aniso_z2.0", (2.0, 0.8, 0.8), {}),
    ("aniso_z2.5", (2.5, 0.7, 0.7), {}),
    ("thin_iso_0.9", (0.9, 0.9, 0.9), THIN),
    ("thin_aniso_z2.0", (2.0, 0.8, 0.8), THIN),
]
TARGETS = {"dice": 0.85, "cldice": 0.90, "b0_error": 2.0}
METRICS = ("dice", "cldice", "b0_error", "b1_error", "hd95_mm")
from napari_tubular.inference import DEFAULT_MIN_SIZE_MM3 as MIN_COMPONENT_MM3  # noqa: E402

# the tuning grid and score are the package's (napari_tubular.training.tuning), which
# `napari-tubular train` also tunes its models with
from napari_tubular.training.tuning import TP_GRID, TR_GRID  # noqa: E402,F401


def case_specs(n: int, quick: bool, seed_base: int = HELD_OUT_SEED) -> list[dict]:
    extent = QUICK_EXTENT_MM if quick else EXTENT_MM
    specs = []
    for i in range(n):
        name, sp, opts = HELD_OUT[i % len(HELD_OUT)]
        shape = tuple(max(16, int(round(extent / s))) for s in sp)
        specs.append({"name": name, "seed": seed_base + i, "spacing": sp, "shape": shape,
                      "options": dict(opts)})
    return specs


def make_case(spec: dict):
    from napari_tubular.synthetic import make_vessel_tree

    c = make_vessel_tree(shape=spec["shape"], spacing=spec["spacing"], seed=spec["seed"],
                         **spec["options"])
    return c.image, c.mask, c.centerline


# true vessel radius in voxels (radius / finest spacing) for the sensitivity-by-radius table
RADIUS_BINS_VOX = (0.0, 0.45, 0.6, 0.8, 1.1, 1.6, float("inf"))


def label_radius_mm(ref: np.ndarray, centerline: np.ndarray, spacing) -> np.ndarray:
    """True radius (mm) of each label voxel (``ref`` order of ``np.argwhere``): the radius of
    its nearest centerline point."""
    from scipy.spatial import cKDTree

    pts = np.argwhere(ref > 0) * np.asarray(spacing, dtype=float)
    _, j = cKDTree(centerline[:, :3]).query(pts)
    return centerline[j, 3]


def radius_sensitivity(pred: np.ndarray, ref: np.ndarray, centerline: np.ndarray,
                       spacing) -> dict[str, list[int]]:
    """Per bin of TRUE radius (voxels): [label voxels found by ``pred``, label voxels].

    Each label voxel takes the radius of its nearest centerline point (the generator's exact
    geometry), in units of the finest voxel size, binned by :data:`RADIUS_BINS_VOX`.
    """
    ref = ref > 0
    r_vox = label_radius_mm(ref, centerline, spacing) / float(min(spacing))
    hit = np.asarray(pred, dtype=bool)[ref]
    out = {}
    for lo, hi in zip(RADIUS_BINS_VOX[:-1], RADIUS_BINS_VOX[1:]):
        sel = (r_vox >= lo) & (r_vox < hi)
        out[_bin_name(lo, hi)] = [int(hit[sel].sum()), int(sel.sum())]
    return out


# the visibility analysis: contrast-to-noise of the label voxels by true radius (mm), and an
# "oracle" that finds exactly the label voxels of vessels at least VISIBLE_RADIUS_MM thick
CNR_BINS_MM = (0.0, 0.4, 0.55, 0.7, 0.9, 1.2, float("inf"))
VISIBLE_RADIUS_MM = 0.4


def contrast_to_noise(image: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per label voxel: (intensity - local background) / noise, with the local background a
    7^3 median and the noise the standard deviation of ``image - background`` away from the
    vessels (3 voxels clear). Texture counts as noise: it is what a detector has to beat."""
    from scipy import ndimage

    ref = ref > 0
    local = ndimage.median_filter(image.astype(np.float32), size=7)
    resid = image - local
    away = ~ndimage.binary_dilation(ref, iterations=3)
    return resid[ref] / max(float(resid[away].std()), 1e-6)


def visibility(image, ref, centerline, spacing) -> dict:
    """CNR per radius bin (voxel counts, median CNR) and the visible-vessel oracle's mask."""
    r = label_radius_mm(ref, centerline, spacing)
    cnr = contrast_to_noise(image, ref)
    bins = {}
    for lo, hi in zip(CNR_BINS_MM[:-1], CNR_BINS_MM[1:]):
        sel = (r >= lo) & (r < hi)
        bins[_bin_name(lo, hi)] = {"voxels": int(sel.sum()),
                                   "cnr": [float(v) for v in cnr[sel]]}
    oracle = np.zeros(ref.shape, np.uint8)
    oracle[ref > 0] = r >= VISIBLE_RADIUS_MM  # boolean indexing visits voxels in argwhere order
    return {"bins": bins, "oracle": oracle}


def _bin_name(lo: float, hi: float) -> str:
    return f">= {lo:g}" if hi == float("inf") else f"{lo:g}-{hi:g}"


def generate(specs: list[dict], processes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if processes <= 1:
        return [make_case(s) for s in specs]
    with mp.get_context("spawn").Pool(min(processes, len(specs))) as pool:
        return pool.map(make_case, specs)


def _metrics_job(args):
    pred, ref, spacing = args
    from napari_tubular.topology.metrics import compute_metrics

    m = compute_metrics(pred, ref, spacing)
    return {k: (None if m.get(k) is None else float(m[k])) for k in METRICS}


def metrics_many(jobs: list, processes: int) -> list[dict]:
    if processes <= 1:
        return [_metrics_job(j) for j in jobs]
    with mp.get_context("spawn").Pool(min(processes, len(jobs))) as pool:
        return pool.map(_metrics_job, jobs)


def predictions(model, images, specs, device: str, tta: bool = False):
    """(probability, radius_mm) per case on the native grid (``tta``: mirroring TTA)."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume

    out = []
    for img, spec in zip(images, specs):
        t = time.perf_counter()
        pr = predict(Volume(img, spec["spacing"]), model=model, device=device, tta=tta)
        out.append((pr.probability, pr.radius_mm, time.perf_counter() - t))
    return out


def drop_small_components(mask: np.ndarray, spacing, prob: np.ndarray,
                          min_mm3: float = MIN_COMPONENT_MM3):
    """Remove 26-connected components smaller than ``min_mm3``, those without a voxel of
    probability >= the default confidence (session 18) and blob-like ones (session 14), as
    ``segment`` does."""
    from napari_tubular.geometry import BLOB_RATIO, remove_specks_and_blobs
    from napari_tubular.inference import DEFAULT_MIN_CONFIDENCE

    return remove_specks_and_blobs(mask, spacing, min_mm3, BLOB_RATIO, prob,
                                   DEFAULT_MIN_CONFIDENCE)[0]


def refine_labels(prob, radius, spacing, tp, tr, device, edt_radius: bool):
    from napari_tubular.geometry.distance import local_radius_mm
    from napari_tubular.inference import refine_maps

    if edt_radius:
        radius = local_radius_mm(prob > 0.5, spacing)
    with warnings.catch_warnings():
        # an empty pseudo-skeleton (T_p above every probability) is a legitimate grid point
        warnings.simplefilter("ignore")
        labels, _ = refine_maps(prob, radius, spacing, tp, tr, device=device)
    return labels


def tune_refinement(model, kind: str, device: str, quick: bool, n_val: int, processes: int,
                    tta: bool = False):
    """Choose (T_p, T_r) on validation volumes (seeds disjoint from the held-out set) with
    :func:`napari_tubular.training.tuning.tune_thresholds` (the network's outputs once, the
    refinement over the grid; metrics in ``processes`` processes)."""
    from napari_tubular.geometry.distance import local_radius_mm
    from napari_tubular.training.loop import VAL_SEED_BASE
    from napari_tubular.training.tuning import tune_thresholds

    specs = case_specs(n_val, quick, seed_base=VAL_SEED_BASE + 500)
    data = generate(specs, processes)
    preds = predictions(model, [d[0] for d in data], specs, device, tta)
    maps = []
    for (prob, rad, _), (_, ref, _), spec in zip(preds, data, specs):
        if kind == "baseline":  # no trained scale head: radii from its own mask's EDT
            rad = local_radius_mm(prob > 0.5, spec["spacing"])
        maps.append((prob, rad, ref, spec["spacing"]))
    res = tune_thresholds(maps, device=device,
                          metrics=lambda jobs: metrics_many(jobs, processes))
    return {"tp": res["tp"], "tr": res["tr"], "scores": res["scores"]}


def evaluate(models: dict[str, str], out: Path, device: str = "auto", quick: bool = False,
             n_cases: int = 10, n_val: int = 3, processes: int | None = None,
             tune: bool = True, log=print, tta: bool = False) -> dict:
    """Evaluate models (name -> model file; a name starting with 'baseline' gets EDT radii)."""
    from napari_tubular.geometry.partial_volume import (
        partial_volume_fraction,
        trim_partial_volume,
    )
    from napari_tubular.models import load_model, resolve_device

    device = resolve_device(device)
    processes = processes or max(1, min(12, (os.cpu_count() or 2) - 1))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    specs = case_specs(n_cases, quick)
    data = generate(specs, processes)
    log(f"[eval] {len(specs)} held-out volumes generated in {time.perf_counter() - t0:.1f} s")
    results: dict = {"cases": specs, "variants": {}, "refinement": {}, "device": device,
                     "models": {}, "tta": bool(tta)}
    results["visibility"] = visibility_summary(data, specs, processes)
    for name, path in models.items():
        kind = "baseline" if name.startswith("baseline") else "ddt"
        net, meta = load_model(path, device=device)
        results["models"][name] = {"path": str(path), "loss": meta["training"].get("loss"),
                                   "steps": meta["training"].get("steps"),
                                   "spacing": meta["spacing"], "arch": meta["arch"]}
        if tune:
            params = tune_refinement((net, meta), kind, device, quick, n_val, processes, tta)
        else:  # the thresholds tuned for the model and stored in its file
            from napari_tubular.inference import recommended_thresholds

            tp, tr = recommended_thresholds(meta)
            params = {"tp": tp, "tr": tr}
        results["refinement"][name] = params
        log(f"[eval] {name}: refinement T_p={params['tp']} T_r={params['tr']}")
        preds = predictions((net, meta), [d[0] for d in data], specs, device, tta)
        jobs, tags = [], []
        by_radius: dict[str, list[int]] = {}
        for (prob, rad, _), (img, ref, cl), spec in zip(preds, data, specs):
            sp = spec["spacing"]
            for k, (found, total) in radius_sensitivity(prob > 0.5, ref, cl, sp).items():
                acc = by_radius.setdefault(k, [0, 0])
                acc[0] += found
                acc[1] += total
            jobs.append(((prob > 0.5).astype(np.uint8), ref, sp))
            tags.append(name)
            jobs.append((drop_small_components(prob > 0.5, sp, prob), ref, sp))
            tags.append(f"{name} + CC filter")
            lab = refine_labels(prob, rad, sp, params["tp"], params["tr"], device,
                                kind == "baseline")
            jobs.append((lab, ref, sp))
            tags.append(f"{name} + GAR" + (" (EDT radii)" if kind == "baseline" else ""))
            jobs.append((drop_small_components(lab, sp, prob), ref, sp))
            tags.append(f"{name} + GAR + CC filter" + (" (EDT radii)" if kind == "baseline" else ""))
            # what `segment` writes (and `--no-refine`): the partial-volume boundary trim, then
            # the speck filter
            frac = partial_volume_fraction(img, prob > 0.5)
            jobs.append((drop_small_components(trim_partial_volume(prob > 0.5, frac), sp, prob), ref, sp))
            tags.append(f"{name} + PV trim + CC filter")
            jobs.append((drop_small_components(trim_partial_volume(lab, frac), sp, prob), ref, sp))
            tags.append(f"{name} + GAR + PV trim + CC filter"
                        + (" (EDT radii)" if kind == "baseline" else ""))
        res = metrics_many(jobs, processes)
        for tag, m in zip(tags, res):
            results["variants"].setdefault(tag, []).append(m)
        results["models"][name]["predict_s"] = [round(p[2], 2) for p in preds]
        results["models"][name]["sensitivity_by_radius_vox"] = {
            k: {"found": f, "voxels": n, "sensitivity": (f / n if n else None)}
            for k, (f, n) in by_radius.items()}
        log(f"[eval] {name}: done ({time.perf_counter() - t0:.1f} s)")
    results["summary"] = {tag: summarize(rows) for tag, rows in results["variants"].items()}
    results["groups"] = {
        tag: {g: summarize([r for r, s in zip(rows, specs) if s["name"].startswith(g)])
              for g in ("iso", "aniso", "thin")}
        for tag, rows in results["variants"].items()
    }
    results["targets"] = TARGETS
    results["time_s"] = round(time.perf_counter() - t0, 1)
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    (out / "eval.md").write_text(markdown(results))
    return results


def visibility_summary(data, specs, processes) -> dict:
    """Median CNR by true radius per group, and the visible-vessel oracle's metrics per case."""
    vis = [visibility(img, ref, cl, spec["spacing"]) for (img, ref, cl), spec in zip(data, specs)]
    oracle = metrics_many([(v["oracle"], ref, spec["spacing"])
                           for v, (_, ref, _), spec in zip(vis, data, specs)], processes)
    groups = {}
    for g in ("iso", "aniso", "thin"):
        rows = {}
        for lo, hi in zip(CNR_BINS_MM[:-1], CNR_BINS_MM[1:]):
            k = _bin_name(lo, hi)
            vals = [c for v, spec in zip(vis, specs) if spec["name"].startswith(g)
                    for c in v["bins"][k]["cnr"]]
            rows[k] = {"voxels": len(vals), "median_cnr": float(np.median(vals)) if vals else None}
        groups[g] = rows
    return {"visible_radius_mm": VISIBLE_RADIUS_MM, "cnr_by_radius_mm": groups,
            "oracle": oracle,
            "oracle_groups": {g: summarize([r for r, s in zip(oracle, specs)
                                            if s["name"].startswith(g)])
                              for g in ("iso", "aniso", "thin")},
            "oracle_summary": summarize(oracle)}


def summarize(rows: list[dict]) -> dict:
    s = {}
    for k in METRICS:
        v = np.array([np.nan if r.get(k) is None else r[k] for r in rows], dtype=float)
        s[k] = float(np.nanmean(v)) if np.isfinite(v).any() else None
    s["n"] = len(rows)
    s["meets_targets"] = bool(
        s["dice"] is not None and s["dice"] >= TARGETS["dice"] and s["cldice"] >= TARGETS["cldice"]
        and s["b0_error"] <= TARGETS["b0_error"])
    return s


def _fmt(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}f}"


def markdown(results: dict) -> str:
    lines = [
        "# Held-out synthetic evaluation",
        "",
        f"{len(results['cases'])} volumes (seeds {results['cases'][0]['seed']}...), native grids; "
        f"targets: Dice >= {TARGETS['dice']}, clDice >= {TARGETS['cldice']}, "
        f"Betti-0 error <= {TARGETS['b0_error']:g} per volume. Device: {results['device']}"
        + ("; mirroring test-time augmentation (8 flips)." if results.get("tta") else "."),
        "",
        "| variant | Dice | clDice | b0 error | b1 error | HD95 (mm) | targets met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tag, s in results["summary"].items():
        lines.append(f"| {tag} | {_fmt(s['dice'])} | {_fmt(s['cldice'])} | "
                     f"{_fmt(s['b0_error'], 1)} | {_fmt(s['b1_error'], 1)} | "
                     f"{_fmt(s['hd95_mm'], 2)} | {'yes' if s['meets_targets'] else 'no'} |")
    lines += ["", "Refinement thresholds (chosen on validation volumes): " + ", ".join(
        f"{k}: T_p={v['tp']}, T_r={v['tr']}" for k, v in results["refinement"].items()), ""]
    lines += ["## By group (Dice / clDice / b0 error)", "",
              "| variant | isotropic | anisotropic | thin vessels |", "| --- | --- | --- | --- |"]
    for tag, g in results["groups"].items():
        cells = [f"{_fmt(g[k]['dice'])} / {_fmt(g[k]['cldice'])} / {_fmt(g[k]['b0_error'], 1)}"
                 for k in ("iso", "aniso", "thin")]
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    lines += ["", "## Per volume (Dice / clDice / b0 error)", "",
              "| case | spacing (mm) | " + " | ".join(results["variants"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in results["variants"]) + " |"]
    for i, spec in enumerate(results["cases"]):
        cells = [f"{_fmt(rows[i]['dice'])} / {_fmt(rows[i]['cldice'])} / "
                 f"{_fmt(rows[i]['b0_error'], 0)}" for rows in results["variants"].values()]
        sp = "x".join(f"{s:g}" for s in spec["spacing"])
        lines.append(f"| {spec['name']} | {sp} | " + " | ".join(cells) + " |")
    lines += ["", "## Sensitivity by true vessel radius (probability > 0.5, all volumes)", "",
              "Label voxels found, binned by the radius of the nearest true centerline point in "
              "voxels (radius / finest spacing).", "",
              "| model | " + " | ".join(f"r {_bin_name(lo, hi)} vox" for lo, hi in
                                     zip(RADIUS_BINS_VOX[:-1], RADIUS_BINS_VOX[1:])) + " |",
              "| --- | " + " | ".join("---" for _ in RADIUS_BINS_VOX[1:]) + " |"]
    for name, m in results["models"].items():
        cells = []
        for lo, hi in zip(RADIUS_BINS_VOX[:-1], RADIUS_BINS_VOX[1:]):
            e = m.get("sensitivity_by_radius_vox", {}).get(_bin_name(lo, hi))
            cells.append("n/a" if not e or not e["voxels"] else
                         f"{e['sensitivity']:.2f} ({e['voxels']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    vis = results.get("visibility")
    if vis:
        lines += ["", "## What can be seen: contrast-to-noise by true radius", "",
                  "Median per-voxel CNR of the label voxels ((intensity - 7^3 median) / noise, "
                  "texture included), binned by the true radius in mm; voxel counts in brackets.",
                  "", "| group | " + " | ".join(f"r {_bin_name(lo, hi)} mm" for lo, hi in
                                              zip(CNR_BINS_MM[:-1], CNR_BINS_MM[1:])) + " |",
                  "| --- | " + " | ".join("---" for _ in CNR_BINS_MM[1:]) + " |"]
        for g, rows in vis["cnr_by_radius_mm"].items():
            lines.append(f"| {g} | " + " | ".join(
                "n/a" if e["median_cnr"] is None else f"{e['median_cnr']:.2f} ({e['voxels']})"
                for e in rows.values()) + " |")
        o, og = vis["oracle_summary"], vis["oracle_groups"]
        lines += ["", f"An oracle that labels exactly the label voxels of vessels with radius >= "
                  f"{vis['visible_radius_mm']:g} mm (and nothing else) scores Dice "
                  f"{_fmt(o['dice'])} / clDice {_fmt(o['cldice'])} overall; by group (Dice / "
                  "clDice / b0 error): " + ", ".join(
                      f"{g} {_fmt(v['dice'])} / {_fmt(v['cldice'])} / {_fmt(v['b0_error'], 1)}"
                      for g, v in og.items()) + "."]
    lines += ["", "## Models", ""]
    for name, m in results["models"].items():
        lines.append(f"- {name}: `{m['path']}`, loss {m['loss']}, {m['steps']} steps, spacing "
                     f"{m['spacing']} mm, predict {np.mean(m['predict_s']):.2f} s per volume")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", metavar="NAME=PATH",
                   help="model to evaluate (repeatable); a NAME starting with 'baseline' is "
                        "refined with EDT radii. Default: ddt=<package default model>")
    p.add_argument("--out", default="runs/eval", help="output folder (eval.json, eval.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--cases", type=int, default=10, help="held-out volumes (default 10)")
    p.add_argument("--val-cases", type=int, default=3, help="validation volumes for T_p/T_r")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_EXTENT_MM:g} mm volumes")
    p.add_argument("--no-tune", action="store_true",
                   help="use the T_p/T_r stored in the model file instead of tuning them")
    p.add_argument("--processes", type=int, default=None, help="worker processes")
    p.add_argument("--tta", action="store_true",
                   help="mirroring test-time augmentation for every model (8x network time)")
    a = p.parse_args(argv)
    models = {}
    for item in a.model or ["ddt=default"]:
        if "=" not in item:
            p.error(f"--model expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        models[name] = path
    res = evaluate(models, Path(a.out), a.device, a.quick, a.cases, a.val_cases, a.processes,
                   tune=not a.no_tune, tta=a.tta)
    print(markdown(res).split("## By group")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
