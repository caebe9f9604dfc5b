"""The core/GUI boundary: the core never imports Qt, napari or magicgui (brief + STYLE.md)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE_MODULES = [
    "napari_tubular",
    "napari_tubular.io",
    "napari_tubular.synthetic",
    "napari_tubular.geometry",
    "napari_tubular.topology",
    "napari_tubular.losses",
    "napari_tubular.models",
    "napari_tubular.training",
    "napari_tubular.inference",
    "napari_tubular.cli",
]
GUI_MODULES = ("qtpy", "napari", "magicgui", "superqt", "PyQt6", "PyQt5", "PySide6")


def test_import_linter_contract():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("import-linter is part of the testing extra but lint-imports was not found")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Core is GUI-free KEPT" in proc.stdout


def test_core_imports_load_no_gui_modules():
    """Importing every core module at run time pulls in no GUI package (catches lazy imports too)."""
    code = (
        "import importlib, json, sys\n"
        f"mods = {CORE_MODULES!r}\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if not e.name.startswith('napari_tubular'):\n"
        "            raise\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {GUI_MODULES!r})\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_cli_help_is_fast_and_torch_free():
    """`napari-tubular --help` must not import torch or napari (start-up time)."""
    code = (
        "import sys, contextlib, io\n"
        "from napari_tubular import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'napari', 'qtpy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
