"""The README: the Segment panel's checkboxes "match segment's options", and the Topology review
has "the same tolerance as evaluate --tolerance and the self-check's break gap (default 5 mm)".
Their defaults are pinned to the command line's, so that a fresh panel does what a plain
``napari-tubular segment`` / ``evaluate`` does."""

import pytest

from napari_tubular import cli

pytestmark = pytest.mark.gui


def _defaults(command: str) -> dict:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {a.dest: a.default for a in action.choices[command]._actions}


def test_segment_panel_defaults_are_segments(make_napari_viewer):
    from napari_tubular._widgets.segment import SegmentWidget

    cli_default = _defaults("segment")
    widget = SegmentWidget(make_napari_viewer())
    assert widget.tta_check.isChecked() is cli_default["tta"]
    assert widget.refit_check.isChecked() is not cli_default["no_intensity_refit"]
    assert widget.bone_check.isChecked() is (cli_default["bone_level"] is not None)
    assert widget.dark_check.isChecked() is (cli_default["polarity"] == "dark")
    assert widget.pv_check.isChecked() is (cli_default["partial_volume"] is not None)
    assert widget.blob_check.isChecked() is bool(cli_default["blob_ratio"])
    assert widget.confidence_check.isChecked() is (cli_default["min_confidence"] is not None)
    assert widget.confidence_setting() == cli_default["min_confidence"]  # "auto"
    assert widget.intensity_combo.currentText() == cli_default["intensity"]
    assert widget.min_size_spin.value() == cli_default["min_size_mm3"]
    assert widget.overlap_spin.value() == pytest.approx(cli_default["overlap"])


def test_review_panel_defaults_are_evaluates(make_napari_viewer):
    from napari_tubular._widgets.review import TopologyReviewWidget

    cli_default = _defaults("evaluate")
    widget = TopologyReviewWidget(make_napari_viewer())
    assert widget.tolerance_spin.value() == cli_default["tolerance"]
    assert widget.gap_spin.value() == pytest.approx(cli_default["break_gap"])


def test_segment_panel_checkboxes_named_in_the_readme_exist(make_napari_viewer):
    import re
    from pathlib import Path

    from qtpy.QtWidgets import QCheckBox

    from napari_tubular._widgets.segment import SegmentWidget

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    bullet = readme.split("- **Checkboxes** of the Segment panel", 1)[1].split("\n- ", 1)[0]
    quoted = [" ".join(q.split()) for q in re.findall(r'"([^"]+)"', bullet)]
    assert len(quoted) >= 4
    widget = SegmentWidget(make_napari_viewer())
    texts = {box.text() for box in widget.findChildren(QCheckBox)}
    assert set(quoted) <= texts, set(quoted) - texts
