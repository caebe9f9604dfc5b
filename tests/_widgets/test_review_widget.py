"""TopologyReviewWidget: metrics, error-map layer colours, site navigation, keys, exports."""

import csv

import numpy as np
import pytest

from napari_tubular._widgets import _workers
from napari_tubular._widgets.review import NEXT_KEY, PREVIOUS_KEY, TopologyReviewWidget

from .conftest import SPACING, TRANSLATE

pytestmark = pytest.mark.gui


@pytest.fixture
def broken(vessel_case):
    """Reference mask and a prediction with a cut (break) and a spurious blob."""
    ref = vessel_case.mask.astype(np.uint8)
    pred = ref.copy()
    zs = np.nonzero(ref.any(axis=(1, 2)))[0]
    z_cut = int(zs[len(zs) // 2])
    pred[z_cut - 1 : z_cut + 2] = 0  # cut every vessel crossing this slab
    pred[2:5, 2:5, 2:5] = 1  # a spurious component in a corner
    assert not ref[2:5, 2:5, 2:5].any()
    return pred, ref


@pytest.fixture
def review(make_napari_viewer, broken):
    pred, ref = broken
    viewer = make_napari_viewer()
    viewer.add_labels(ref, name="reference", scale=SPACING, translate=TRANSLATE)
    viewer.add_labels(pred, name="prediction", scale=SPACING, translate=TRANSLATE)
    widget = TopologyReviewWidget(viewer)
    widget.pred_picker.set_layer(viewer.layers["prediction"])
    widget.ref_picker.set_layer(viewer.layers["reference"])
    widget.run()
    return viewer, widget


def test_error_map_layer_and_metrics(review):
    from napari_tubular.topology import ERROR_CLASSES

    viewer, widget = review
    layer = viewer.layers["prediction topology errors"]
    np.testing.assert_allclose(layer.scale, SPACING)
    np.testing.assert_allclose(layer.translate, TRANSLATE)
    present = set(np.unique(layer.data)) - {0}
    assert {1, 3} <= present  # missed centerline at the cut, the spurious blob
    for cid in present:
        np.testing.assert_allclose(layer.colormap.map(cid), ERROR_CLASSES[cid][1], atol=1e-6)
    rows = dict(widget.table_rows())
    assert float(rows["dice"]) < 1.0
    assert rows["sites: spurious component"] == "1"
    assert widget.table.rowCount() == len(widget.table_rows())
    assert widget.sites_list.count() == len(widget.report.sites) > 0
    assert widget.legend.count() == 2 * len(ERROR_CLASSES)


def test_next_previous_centre_camera_and_slice(review):
    viewer, widget = review
    n = len(widget.report.sites)
    assert widget.current == 0
    for expected in [1 % n, 2 % n]:
        widget.next_site()
        assert widget.current == expected
        world = widget.site_world(expected)
        np.testing.assert_allclose(viewer.dims.point[-3:], world, atol=1e-6)
        site = widget.report.sites[expected]
        assert viewer.layers["prediction topology errors"].data[tuple(site.anchor_vox)] == site.cls
    widget.previous_site()
    assert widget.current == 1 % n
    viewer.dims.ndisplay = 3
    widget.go_to(0)
    np.testing.assert_allclose(viewer.scene.camera.center, widget.site_world(0), atol=1e-6)
    widget.sites_list.setCurrentRow(n - 1)  # clicking a row jumps too
    assert widget.current == n - 1


def test_shortcuts_do_not_clash_and_step(review):
    from napari.utils.key_bindings import coerce_keybinding
    from napari.utils.shortcuts import default_shortcuts

    viewer, widget = review
    nxt, prev = coerce_keybinding(NEXT_KEY), coerce_keybinding(PREVIOUS_KEY)
    napari_keys = {str(coerce_keybinding(k)) for keys in default_shortcuts.values() for k in keys}
    assert str(nxt) not in napari_keys
    assert str(prev) not in napari_keys
    assert nxt in viewer.keymap
    assert prev in viewer.keymap
    current = widget.current
    viewer.keymap[nxt](viewer)
    assert widget.current == (current + 1) % len(widget.report.sites)
    viewer.keymap[prev](viewer)
    assert widget.current == current
    widget.close()
    assert nxt not in viewer.keymap


def test_csv_export_round_trip(review, tmp_path):
    viewer, widget = review
    path = widget.export_csv(tmp_path / "review.csv")
    with path.open() as fh:
        rows = list(csv.reader(fh))
    blank = rows.index([])
    metrics = dict(rows[1:blank])
    assert metrics["dice"] == dict(widget.table_rows())["dice"]
    header, sites = rows[blank + 1], rows[blank + 2 :]
    assert "cls_name" in header
    assert len(sites) == len(widget.report.sites)
    assert [s[header.index("cls_name")] for s in sites] == [s.cls_name for s in widget.report.sites]
    shot = widget.screenshot(tmp_path / "review.png")
    assert shot.stat().st_size > 0


def test_self_check_without_reference(make_napari_viewer, broken):
    pred, _ = broken
    viewer = make_napari_viewer()
    viewer.add_labels(pred, name="prediction", scale=SPACING)
    widget = TopologyReviewWidget(viewer)
    widget.run()
    assert widget.metrics == {}
    assert {s.cls for s in widget.report.sites} <= {5, 6, 7}
    rows = dict(widget.table_rows())
    assert "betti" in rows
    assert widget.status.text().startswith("self-check")


def test_shape_mismatch_is_a_notification(make_napari_viewer, monkeypatch):
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((8, 8, 8), np.uint8), name="a")
    viewer.add_labels(np.zeros((8, 8, 9), np.uint8), name="b")
    widget = TopologyReviewWidget(viewer)
    widget.pred_picker.set_layer(viewer.layers["a"])
    widget.ref_picker.set_layer(viewer.layers["b"])
    widget.run()
    assert shown
    assert "shape" in shown[-1]
    assert widget.report is None
    widget2 = TopologyReviewWidget(viewer)  # keys are owned by the first widget: no clash
    assert widget2._bound_keys == []
