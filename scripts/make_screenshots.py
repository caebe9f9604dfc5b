"""Make the README screenshots by driving the napari widgets on a synthetic vessel tree.

    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/make_screenshots.py [--model PATH]

Writes ``docs/screenshot_segment.png`` (3-D: CT volume, refined labels, spheres coloured by
radius, radius colour bar), ``docs/screenshot_segment_window.png`` (the whole window with the
Segment widget docked), ``docs/screenshot_review.png`` (3-D error map of the segmentation
against the reference) and ``docs/screenshot_distance.png`` (centerline branches + EDT).

The segmentation comes from the model (``default`` unless ``--model`` is given). Without a
trained model, ``--reference-as-prediction`` builds the network outputs from the reference mask
instead (smoothed mask as probability, local radius as radius map) so that the overlays can be
shown; the file names then get a ``_demo`` suffix so that they are never mistaken for results.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1500, 950)
DOCK_WIDTH = 480


def _reference_prediction(case):
    from scipy import ndimage as ndi

    from napari_tubular.geometry.distance import local_radius_mm
    from napari_tubular.inference import Prediction

    mask = case.mask.astype(bool)
    prob = ndi.gaussian_filter(mask.astype(np.float32), 0.8)
    prob = np.clip(prob / max(float(prob.max()), 1e-6), 0, 1).astype(np.float32)
    radius = ndi.grey_dilation(local_radius_mm(mask, case.spacing), size=3).astype(np.float32)
    return Prediction(
        probability=prob,
        radius_mm=radius,
        spacing=case.spacing,
        model_spacing=case.spacing,
        device_used="none",
        batch_size=0,
        timings={},
        meta={},
    )


def _view_3d(viewer, angles=(-10.0, 25.0, 80.0), zoom=0.85):
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    viewer.dims.ndisplay = 3
    viewer.reset_view()  # resets the angles too: set them afterwards
    viewer.scene.camera.angles = angles
    viewer.scene.camera.zoom *= zoom


def _shot(viewer, path: Path, canvas_only: bool = True) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(str(path), canvas_only=canvas_only, flash=False)
    shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    print(f"wrote {shown}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model file or 'default'")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--reference-as-prediction",
        action="store_true",
        help="no network: build the outputs from the reference (demo files)",
    )
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--tp", type=float, default=None,
                        help="T_p (default: the model's tuned value)")
    parser.add_argument("--tr", type=float, default=None,
                        help="T_r (default: the model's tuned value)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)

    os.environ.setdefault("NAPARI_TUBULAR_SYNC", "1")
    os.environ.setdefault("NAPARI_TUBULAR_CONFIG", str(args.out / ".screenshot_settings.json"))
    import napari

    from napari_tubular import inference
    from napari_tubular._widgets._layers import binary_label_colormap
    from napari_tubular._widgets.distance import DistanceMapWidget
    from napari_tubular._widgets.review import TopologyReviewWidget
    from napari_tubular._widgets.segment import MODEL_FILE_TEXT, SegmentWidget
    from napari_tubular.models import resolve_model_path
    from napari_tubular.synthetic import make_vessel_tree

    suffix = ""
    spacing = (1.2, 0.8, 0.8)
    case = make_vessel_tree((80, 112, 112), spacing=spacing, seed=args.seed)
    if args.reference_as_prediction:
        suffix = "_demo"
        fake = _reference_prediction(case)
        inference.predict = lambda *a, **k: fake
        SegmentWidget._load_model = lambda self, spec, device: (None, {})
    else:
        try:
            resolve_model_path(args.model)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}\n(use --model PATH or --reference-as-prediction)")
            return 2

    viewer = napari.Viewer(show=True, title="napari-tubular")
    viewer.window._qt_window.resize(*SIZE)
    origin = (5.0, -20.0, 12.0)
    image = viewer.add_image(
        case.image,
        name="CT (synthetic)",
        scale=spacing,
        translate=origin,
        colormap="gray",
        rendering="mip",
        contrast_limits=(0.0, 450.0),
        blending="additive",
        opacity=0.6,
    )
    reference = viewer.add_labels(
        case.mask.astype(np.uint8), name="reference", scale=spacing, translate=origin, visible=False
    )

    # 1. segmentation: refined labels + spheres coloured by radius (canvas, then window)
    seg = SegmentWidget(viewer)
    if args.model != "default" and not args.reference_as_prediction:
        seg.model_combo.setCurrentText(MODEL_FILE_TEXT)
        seg.model_path.setText(args.model)
    seg.device_combo.setCurrentText(args.device)
    if args.tp is None or args.tr is None:
        from napari_tubular.inference import recommended_thresholds
        from napari_tubular.models import read_model_meta

        tuned = recommended_thresholds(read_model_meta(args.model))
        args.tp = tuned[0] if args.tp is None else args.tp
        args.tr = tuned[1] if args.tr is None else args.tr
    seg.tp_slider.setValue(args.tp)
    seg.tr_slider.setValue(args.tr)
    seg.run()
    if seg.result is None:
        print("error: the segmentation did not finish (see the notification above)")
        return 1
    seg.reference_picker.set_layer(reference)
    print(seg.metrics_label.text())
    labels = viewer.layers[f"{image.name} labels"]
    spheres = viewer.layers[f"{image.name} spheres"]
    radius = viewer.layers[f"{image.name} radius (mm)"]
    viewer.layers[f"{image.name} pseudo-skeleton"].visible = False
    labels.opacity = 0.3
    # the spheres show the radius colour bar themselves (the radius layer's made a second one)
    viewer.layers.selection.active = spheres
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_segment{suffix}.png")
    seg.setMaximumWidth(DOCK_WIDTH)
    dock = viewer.window.add_dock_widget(seg, name="Segment (DDT)", area="right")
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_segment_window{suffix}.png", canvas_only=False)
    viewer.window.remove_dock_widget(dock)

    # 2. topology review of the segmentation against the reference
    spheres.visible = False
    radius.visible = False
    review = TopologyReviewWidget(viewer)
    review.pred_picker.set_layer(labels)
    review.ref_picker.set_layer(reference)
    review.run()
    print("review:", dict(review.table_rows()))
    errors = viewer.layers[f"{labels.name} topology errors"]
    errors.blending = "translucent_no_depth"  # errors drawn over the masks
    errors.opacity = 1.0
    reference.visible = True
    reference.opacity = 0.15
    reference.colormap = binary_label_colormap((0.8, 0.8, 0.8, 1.0))
    labels.opacity = 0.3
    image.visible = False
    viewer.layers.selection.active = errors
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_review{suffix}.png")
    review.setMaximumWidth(DOCK_WIDTH)
    dock = viewer.window.add_dock_widget(review, name="Topology review", area="right")
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_review_window{suffix}.png", canvas_only=False)
    viewer.window.remove_dock_widget(dock)

    # 3. distance map and centerline branches of the reference
    for layer in viewer.layers:
        layer.visible = False
    dist = DistanceMapWidget(viewer)
    dist.labels_picker.set_layer(reference)
    dist.set_selected(["edt", "graph"])
    dist.run()
    edt = viewer.layers["reference EDT (mm)"]
    edt.visible = True
    edt.rendering = "mip"
    edt.blending = "additive"
    edt.colorbar.visible = True
    branches = viewer.layers["reference branches"]
    branches.visible = True
    viewer.layers.selection.active = edt
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_distance{suffix}.png")
    dist.setMaximumWidth(DOCK_WIDTH)
    dock = viewer.window.add_dock_widget(dist, name="Distance maps", area="right")
    _view_3d(viewer)
    _shot(viewer, args.out / f"screenshot_distance_window{suffix}.png", canvas_only=False)
    viewer.close()
    settings = args.out / ".screenshot_settings.json"
    if settings.exists():
        settings.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
