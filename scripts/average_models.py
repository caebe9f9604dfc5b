"""Average the weights of models fine-tuned from the same starting point ("model soup").

    python scripts/average_models.py runs/soup.pt runs/a/model.pt runs/b/model.pt runs/c/model.pt

Uniform mean of every parameter; the architecture, K, spacing and normalisation must agree (the
first model's meta is kept, with the list of averaged files in ``training.averaged``). Runs that
start from one set of weights and differ in data and seed stay in one basin of the loss, where
the average of their weights tends to be at least as good as each (Wortsman et al., "Model
soups", ICML 2022); session 7 used it for the default model (docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_tubular.models import load_model, save_model

MUST_AGREE = ("K", "spacing", "normalization", "arch")


def average(paths: list[str], out: str) -> Path:
    import torch

    loaded = [load_model(p, device="cpu") for p in paths]
    net, meta = loaded[0]
    for path, (_, m) in zip(paths[1:], loaded[1:]):
        for key in MUST_AGREE:
            if m.get(key) != meta.get(key):
                raise ValueError(f"{path}: {key} {m.get(key)!r} differs from {paths[0]}'s "
                                 f"{meta.get(key)!r}; only models of one architecture and setup "
                                 "can be averaged")
    states = [n.state_dict() for n, _ in loaded]
    mean = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mean[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        else:
            mean[key] = value
    net.load_state_dict(mean)
    meta.pop("path", None)
    meta["training"] = {**meta.get("training", {}),
                        "averaged": [str(p) for p in paths],
                        "note": f"uniform weight average of {len(paths)} models"}
    return save_model(out, net, meta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("models", nargs="+")
    a = p.parse_args(argv)
    if len(a.models) < 2:
        p.error("give at least two model files")
    print("wrote", average(a.models, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
