"""Train the shipped default model (DDT + clDice) and the plain baseline (Dice + CE), evaluate.

GPU (one call, wall-clock bounded; both models train at the same time on the one GPU)::

    python scripts/train_default.py --device cuda --minutes 5 --out $OUT

CPU smoke run (tiny sizes)::

    python scripts/train_default.py --device cpu --minutes 2 --quick --out runs/default_quick

Stages, all inside ``--minutes`` (the whole script's budget):

1. pre-generate synthetic training cases in parallel (all cores but one; prepared at the model
   spacing, kept in ``--work``), the same cache for both models;
2. train the two models concurrently, one process each (``python -m napari_tubular.training``),
   identical except for the loss: ``ddt+cldice`` (clDice weight ramped in after 35 % of the
   run) and ``dice+ce`` (segmentation head only). Each keeps generating fresh cases in 3
   background processes, validates every ``val_every`` steps and saves ``last.pt`` / ``best.pt``
   periodically, so an interrupted run still leaves models;
3. evaluate both on the held-out synthetic set with and without the geometry-aware refinement
   (``scripts/evaluate_default.py``);
4. write to ``--out`` (at most 8 files): ``default.pt`` + ``default.json`` (the DDT model, its
   meta with the held-out metrics), ``baseline.pt``, ``eval.md``, ``eval.json``,
   ``train_logs.json``, ``curves.png``, ``train_default.log``. ``--install`` also copies
   ``default.pt``/``default.json`` into ``napari_tubular/weights/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {
    # full run (GPU): 0.8 mm grid, 64^3 patches of 8, U-Net 16 channels x 4 levels (~5.6 MB)
    "full": {
        "target_spacing": [0.8, 0.8, 0.8], "patch_size": [64, 64, 64], "batch_size": 8,
        "model": {"base_channels": 16, "depth": 4}, "K": 5, "lr": 2e-3,
        "val_every": 500, "val_cases": 2, "checkpoint_every": 200, "log_every": 25,
        "workers": 3, "num_threads": 2, "pregen": 160, "pool_size": 200,
        "eval_cases": 10, "val_tune": 3, "eval_reserve_min": 0.7,
    },
    # CPU fallback: same grid and architecture family, smaller net and patches
    "cpu": {
        "target_spacing": [0.8, 0.8, 0.8], "patch_size": [48, 48, 48], "batch_size": 2,
        "model": {"base_channels": 8, "depth": 4}, "K": 5, "lr": 2e-3,
        "val_every": 300, "val_cases": 2, "checkpoint_every": 100, "log_every": 20,
        "workers": 0, "num_threads": 1, "pregen": 24, "pool_size": 24,
        "eval_cases": 10, "val_tune": 2, "eval_reserve_min": 8.0,
    },
    # smoke test: tiny everything
    "quick": {
        "target_spacing": [1.0, 1.0, 1.0], "patch_size": [32, 32, 32], "batch_size": 2,
        "model": {"base_channels": 4, "depth": 3}, "K": 4, "lr": 3e-3,
        "val_every": 20, "val_cases": 1, "checkpoint_every": 10, "log_every": 5,
        "workers": 0, "num_threads": 1, "pregen": 4, "pool_size": 4,
        "synthetic": {"extent_mm": [32.0, 40.0], "refresh_every": 0},
        "eval_cases": 2, "val_tune": 1, "eval_reserve_min": 0.8,
    },
}
RUNS = {"ddt": "ddt+cldice", "baseline": "dice+ce"}


class Log:
    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the run
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


def run_config(name: str, s: dict, work: Path, cache: Path, minutes: float, device: str,
               seed: int, init: str | None = None, recipe: dict | None = None,
               K: int | None = None) -> dict:
    syn = {"pool_size": s["pool_size"], "cache_dir": str(cache), **s.get("synthetic", {})}
    from napari_tubular.training.data import SYNTHETIC_DEFAULTS

    start = f"fine-tuned from {Path(init).name}, " if init else ""
    opts = {**SYNTHETIC_DEFAULTS, **s.get("synthetic", {})}
    thin = opts["thin_fraction"]
    wide = ""
    if opts["sharp_fraction"]:
        wide += f", {100 * opts['sharp_fraction']:.0f} % unblurred renderings"
    if opts["large_fraction"]:
        lo, hi = opts["large_max_radius_mm"]
        wide += f", {100 * opts['large_fraction']:.0f} % of other trees with roots of {lo:g}-{hi:g} mm"
    if opts["hard_fraction"]:
        wide += f", {100 * opts['hard_fraction']:.0f} % binary phantoms"
    if opts["wide_psf_fraction"]:
        lo, hi = opts["wide_psf_sigma_vox"]
        wide += (f", {100 * opts['wide_psf_fraction']:.0f} % blurred by a wide PSF "
                 f"({lo:g}-{hi:g} voxel)")
    if opts["segment_fraction"]:
        wide += f", {100 * opts['segment_fraction']:.0f} % with free tube segments"
    if opts["body_fraction"]:
        wide += f", {100 * opts['body_fraction']:.0f} % inside a body outline (air, fat, skin)"
    if opts["generator"].get("distractor_scale", 1.0) != 1.0:
        wide += f", {opts['generator']['distractor_scale']:g}x the distractors"
    if tuple(opts["extent_mm"]) != tuple(SYNTHETIC_DEFAULTS["extent_mm"]):
        lo, hi = opts["extent_mm"]
        wide += f", fields of view {lo:g}-{hi:g} mm"
    cfg = {
        "data": ["synthetic"], "val_data": ["synthetic"], "out": str(work / name),
        "target_spacing": s["target_spacing"], "patch_size": s["patch_size"],
        "batch_size": s["batch_size"], "steps": 1_000_000, "max_minutes": minutes,
        "lr": s["lr"], "loss": RUNS[name], "cldice_weight": 0.2, "K": K or s["K"],
        "model": s["model"], "val_every": s["val_every"], "val_cases": s["val_cases"],
        "checkpoint_every": s["checkpoint_every"], "log_every": s["log_every"], "seed": seed,
        "device": device, "amp": True, "num_threads": s["num_threads"], "synthetic": syn,
        "workers": s["workers"], "overwrite": True,
        "description": (
            f"napari-tubular default ({RUNS[name]}): synthetic vessel trees generated on the fly "
            "(in-plane 0.6-1.2 mm, half the volumes with z 0.6-2.5 mm, sub-voxel thinnest "
            f"vessels, thin-only trees {100 * thin:.0f} %{wide}), "
            f"resampled to {s['target_spacing'][0]} mm; {start}scripts/train_default.py, "
            f"{minutes:.1f} min on {device}"),
    }
    if init:
        cfg["init_model"] = str(init)
    cfg.update(recipe or {})
    return cfg


def export_checkpoint(run: Path, dest: Path) -> Path:
    """Model file from whatever a run left: best.pt, else model.pt, else last.pt's weights."""
    for name in ("best.pt", "model.pt"):
        if (run / name).is_file():
            shutil.copyfile(run / name, dest)
            return dest
    import torch

    from napari_tubular.models import build_model, save_model
    from napari_tubular.training import TrainConfig
    from napari_tubular.training.loop import model_arch, resolve_normalization

    ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_dict(ck["config"])
    net = build_model(model_arch(cfg))
    net.load_state_dict(ck["model_state"])
    meta = {"K": cfg.K, "spacing": list(cfg.target_spacing),
            "normalization": resolve_normalization(cfg), "patch_size": list(cfg.patch_size),
            "training": {"description": cfg.description, "loss": cfg.loss, "steps": ck["step"],
                         "config": cfg.to_dict(), "note": "exported from last.pt"}}
    return save_model(dest, net, meta)


def combined_curves(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    for name, run in runs.items():
        f = run / "log.json"
        if not f.is_file():
            continue
        rows = json.loads(f.read_text())["rows"]
        tr = [r for r in rows if r.get("loss") is not None]
        va = [r for r in rows if r.get("val_dice") is not None]
        ax1.plot([r["step"] for r in tr], [r["loss"] for r in tr], label=f"{name} ({RUNS[name]})")
        ax2.plot([r["step"] for r in va], [r["val_dice"] for r in va], "o-", label=f"{name} Dice")
        ax2.plot([r["step"] for r in va], [r["val_cldice"] for r in va], "s--",
                 label=f"{name} clDice")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_title("training loss")
    ax1.legend(fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.set_title("validation (model grid, threshold 0.5)")
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda (default when available) or cpu")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="wall-clock budget of the whole script (generation, training, evaluation)")
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/default",
                   help="folder for the deliverables (default $OUT, else runs/default)")
    p.add_argument("--work", default=None, help="scratch folder (cache, run folders)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--settings", choices=sorted(SETTINGS), default=None,
                   help="size preset (default: full on CUDA, cpu on CPU, quick with --quick)")
    p.add_argument("--only", choices=sorted(RUNS), default=None, help="train one model only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", action="append", default=[], metavar="NAME=PATH",
                   help="start run NAME (ddt, baseline) from this model file (fine-tuning)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (preset's default)")
    p.add_argument("--cldice-weight", type=float, default=None,
                   help="clDice weight of the ddt run (default 0.2)")
    p.add_argument("--cldice-warmup", type=float, default=None,
                   help="fraction of the run before clDice ramps in (default 0.35)")
    p.add_argument("--thin-fraction", type=float, default=None,
                   help="fraction of synthetic trees made of thin vessels only (default 0.25)")
    p.add_argument("--K", type=int, default=None,
                   help="scale classes of the ddt run (default: the preset's); a different K "
                        "than its --init model re-initialises the scale head")
    p.add_argument("--synthetic", default=None, metavar="JSON",
                   help='synthetic-data options merged into the preset, e.g. '
                        '\'{"sharp_fraction": 0.2, "large_fraction": 0.25}\'')
    p.add_argument("--val-cases", type=int, default=None,
                   help="validation volumes of each run (preset's default)")
    p.add_argument("--val-every", type=int, default=None,
                   help="steps between validations (preset's default)")
    p.add_argument("--val-tubes", action="store_true",
                   help="validate on straight-tube phantoms too; their Dice enters the score "
                        "that picks best.pt (TrainConfig.val_tubes)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per step (preset's)")
    p.add_argument("--workers", type=int, default=None,
                   help="background generation processes of each run (preset's)")
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="keep the weights of every N-th step as step_N.pt in the run folder "
                        "(TrainConfig.snapshot_every)")
    p.add_argument("--processes", type=int, default=None, help="generation/metric processes")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--install", action="store_true",
                   help="copy default.pt/default.json into napari_tubular/weights/")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    import torch

    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else a.device
    if device == "auto":
        device = "cpu"
    preset = a.settings or ("quick" if a.quick else "full" if device.startswith("cuda") else "cpu")
    s = copy.deepcopy(SETTINGS[preset])
    if a.thin_fraction is not None:
        s.setdefault("synthetic", {})["thin_fraction"] = a.thin_fraction
    if a.synthetic:
        try:
            extra = json.loads(a.synthetic)
        except json.JSONDecodeError as exc:
            p.error(f"--synthetic is not valid JSON: {exc}")
        from napari_tubular.training.data import SYNTHETIC_DEFAULTS

        unknown = sorted(set(extra) - set(SYNTHETIC_DEFAULTS)) if isinstance(extra, dict) else []
        if not isinstance(extra, dict) or unknown:
            p.error(f"--synthetic expects an object of {sorted(SYNTHETIC_DEFAULTS)}; "
                    f"unknown: {unknown or extra!r}")
        s.setdefault("synthetic", {}).update(extra)
    ks = {name: s["K"] for name in RUNS}
    if a.K is not None:
        if a.K < 1:
            p.error(f"--K must be >= 1, got {a.K}")
        ks["ddt"] = a.K
    inits = {}
    for item in a.init:
        name, sep, path = item.partition("=")
        if not sep or name not in RUNS:
            p.error(f"--init expects NAME=PATH with NAME in {sorted(RUNS)}, got {item!r}")
        if path != "default" and not Path(path).is_file():
            p.error(f"--init {name}: no such model file {path!r}")
        inits[name] = path
    from napari_tubular.models import read_model_meta

    for name, path in inits.items():
        if name != "ddt" or a.K is None:  # the baseline (and ddt without --K) keeps its model's K
            ks[name] = int(read_model_meta(path)["K"])
    # command-line option -> TrainConfig key (given options override the preset)
    recipe_keys = {"lr": "lr", "cldice_weight": "cldice_weight",
                   "cldice_warmup": "cldice_warmup_fraction", "val_cases": "val_cases",
                   "val_every": "val_every", "batch_size": "batch_size", "workers": "workers",
                   "snapshot_every": "snapshot_every"}
    recipe = {key: getattr(a, opt) for opt, key in recipe_keys.items()
              if getattr(a, opt) is not None}
    if a.val_tubes:
        recipe["val_tubes"] = True
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or tempfile.mkdtemp(prefix="napari_tubular_default_"))
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train_default.log")
    procs = a.processes or max(1, (os.cpu_count() or 2) - 1)
    log(f"preset {preset}, device {device}, budget {a.minutes} min, out {out}, work {work}, "
        f"init {inits or 'none'}, K {ks}, recipe {recipe or 'preset'}, synthetic {s.get('synthetic', {})}, "
        f"{procs} processes, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""))

    # 1. cache of prepared synthetic cases
    from napari_tubular.training import pregenerate_synthetic
    from napari_tubular.training.loop import DEFAULT_NORMALIZATION, TRAIN_SEED_BASE

    cache = work / "cache"
    seeds = [TRAIN_SEED_BASE * (a.seed + 1) + 50_000 + i for i in range(s["pregen"])]
    # one cache for both runs, with the larger K (the loss clips the classes at each run's K)
    pregenerate_synthetic(cache, seeds, s["target_spacing"], max(ks.values()), DEFAULT_NORMALIZATION,
                          options=s.get("synthetic"), min_shape=s["patch_size"], processes=procs)
    log(f"generated {len(seeds)} training cases in {time.perf_counter() - t0:.1f} s")

    # 2. both trainings at once
    names = [a.only] if a.only else list(RUNS)
    startup = 0.25 if preset != "quick" else 0.15  # process start + validation cases
    minutes = a.minutes - (time.perf_counter() - t0) / 60 - (0 if a.no_eval else
                                                              s["eval_reserve_min"]) - startup
    minutes = max(0.2, minutes)
    log(f"training {', '.join(names)} for {minutes:.2f} min each, concurrently")
    children = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(s["num_threads"]), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in names:
        cfg_path = work / f"{name}.json"
        cfg_path.write_text(json.dumps(run_config(name, s, work, cache, minutes, device, a.seed,
                                                  inits.get(name), recipe, ks[name]), indent=1))
        logf = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed below
        children[name] = (subprocess.Popen(
            [sys.executable, "-m", "napari_tubular.training", str(cfg_path)],
            stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)), logf)
    deadline = time.perf_counter() + 60 * (minutes + 1.5 + startup)
    for name, (proc, logf) in children.items():
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            rc = proc.wait()
            log(f"{name}: over time, stopped (keeps its last checkpoint)")
        logf.close()
        tail = (work / f"{name}.log").read_text().strip().splitlines()[-3:]
        log(f"{name}: exit code {rc}; " + " | ".join(tail))
    runs = {n: work / n for n in names}

    # 3. model files
    files = {}
    for name in names:
        try:
            files[name] = export_checkpoint(runs[name], work / f"{name}.pt")
        except (FileNotFoundError, KeyError, RuntimeError) as exc:
            log(f"{name}: no model could be exported ({exc})")
    logs = {}
    for name in names:
        f = runs[name] / "log.json"
        if f.is_file():
            logs[name] = json.loads(f.read_text())
    (out / "train_logs.json").write_text(json.dumps(logs, indent=1))
    combined_curves(runs, out / "curves.png")
    if "baseline" in files:
        shutil.copyfile(files["baseline"], out / "baseline.pt")

    # 4. the default model (written now, so that a failed evaluation still leaves it)
    def write_default(results=None) -> None:
        from napari_tubular.models import load_model, save_model

        net, meta = load_model(files["ddt"], device="cpu")
        meta.pop("path", None)
        if results is not None:
            meta["metrics"] = {
                "validation": meta.get("metrics", {}),
                "held_out": {k: v for k, v in results["summary"].items() if k.startswith("ddt")},
                "refine": results["refinement"].get("ddt", {}),
                "baseline_held_out": {k: v for k, v in results["summary"].items()
                                      if k.startswith("baseline")},
            }
        meta["training"]["command"] = "python scripts/train_default.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        save_model(out / "default.pt", net, meta, json_sidecar=True)

    if "ddt" in files:
        write_default()

    # 5. held-out evaluation, then the default model's meta gets the held-out metrics
    if not a.no_eval and files:
        from evaluate_default import evaluate, markdown

        try:
            results = evaluate({n: str(f) for n, f in files.items()}, out, device=device,
                               quick=preset == "quick", n_cases=s["eval_cases"],
                               n_val=s["val_tune"], processes=procs, log=log)
        except Exception:  # noqa: BLE001 - top-level guard: keep the trained models, log why
            import traceback

            log("evaluation failed:\n" + traceback.format_exc())
        else:
            log("\n" + markdown(results).split("## By group")[0])
            if "ddt" in files:
                write_default(results)
    if "ddt" in files and a.install:
        wdir = REPO / "napari_tubular" / "weights"
        wdir.mkdir(exist_ok=True)
        shutil.copyfile(out / "default.pt", wdir / "default.pt")
        shutil.copyfile(out / "default.json", wdir / "default.json")
        log(f"installed {wdir / 'default.pt'}")
    log(f"done in {(time.perf_counter() - t0) / 60:.2f} min; files: "
        + ", ".join(sorted(f.name for f in out.iterdir())))
    return 0 if "ddt" in files or a.only == "baseline" else 1


if __name__ == "__main__":
    sys.exit(main())
