"""Install a trained model as the package default, with its held-out evaluation in the meta.

Usage::

    python scripts/promote_model.py runs/finetune/best.pt runs/eval_final/eval.json \
        --name ddt_finetuned --command "napari-tubular train runs/finetune.json"

The evaluation JSON is what ``scripts/evaluate_default.py`` writes; ``--name`` is the model's
name in it. The tuned refinement thresholds (``metrics.refine``) become the defaults of
``napari-tubular segment`` and of the viewer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_tubular.models import DEFAULT_MODEL_PATH, load_model, save_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("eval_json")
    p.add_argument("--name", required=True, help="the model's name in the evaluation")
    p.add_argument("--command", default=None, help="training command to record")
    p.add_argument("--dest", default=str(DEFAULT_MODEL_PATH))
    a = p.parse_args(argv)
    results = json.loads(Path(a.eval_json).read_text(encoding="utf-8"))
    if a.name not in results["refinement"]:
        p.error(f"{a.name!r} is not in {a.eval_json} (models: {sorted(results['refinement'])})")
    net, meta = load_model(a.model, device="cpu")
    meta.pop("path", None)
    summary = results["summary"]
    validation = meta.get("metrics") or {}
    while "held_out" in validation:  # a model promoted before: keep its training validation only
        validation = validation.get("validation") or {}
    meta["metrics"] = {
        "validation": validation,
        "held_out": {k: v for k, v in summary.items() if k.startswith(a.name)},
        "held_out_groups": {k: v for k, v in results["groups"].items() if k.startswith(a.name)},
        "refine": results["refinement"][a.name],
        "compared": {k: v for k, v in summary.items() if not k.startswith(a.name)},
    }
    if a.command:
        meta["training"]["command"] = a.command
    dest = save_model(Path(a.dest), net, meta, json_sidecar=True)
    dest.chmod(0o644)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
