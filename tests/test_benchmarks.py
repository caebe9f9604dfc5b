"""The benchmark scripts: a printed comparison only counts when both sides computed the same thing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_edt_prints_ours_vs_scipy_with_the_ratio(capsys):
    mod = _load("bench_edt")
    mod.main(["--size", "24"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("EDT 24^3"))
    assert " ours " in line
    assert " vs scipy " in line
    assert "x)" in line
    assert "max |ours^2 - scipy^2|" in out


def test_bench_edt_fails_when_ours_differs_from_scipy(monkeypatch):
    mod = _load("bench_edt")
    real = mod.edt_mm
    monkeypatch.setattr(mod, "edt_mm", lambda m, s: real(m, s) + np.float32(0.5))
    with pytest.raises(SystemExit, match="EDT mismatch"):
        mod.main(["--size", "24"])


def test_bench_inference_fails_when_the_engines_differ(monkeypatch, tmp_path):
    mod = _load("bench_inference")

    def fake_spawn(args, engine, save=None):
        if save:
            v = np.zeros((2, 4, 4, 4), np.float32)
            if engine == "monai":
                v[0, 0, 0, 0] = 0.25  # a different probability somewhere
            np.save(save, v)
        return {"time_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 100.0, "base_rss_mb": 50.0}

    monkeypatch.setattr(mod, "_spawn", fake_spawn)
    assert mod.main(["--size", "4", "--repeat", "1"]) == 1
    monkeypatch.setattr(mod, "_spawn", lambda a, e, save=None: fake_spawn(a, "ours", save))
    assert mod.main(["--size", "4", "--repeat", "1"]) == 0
