"""A closed panel is freed: its cached prediction, refiner and model go with it."""

import gc
import weakref

import numpy as np
import pytest

from .conftest import SPACING, TRANSLATE

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("name", ["Segment (DDT)", "Distance maps & centerlines",
                                  "Topology review"])
def test_a_panel_that_ran_is_freed_when_closed(make_napari_viewer, vessel_case, predict_counter,
                                               name):
    """An audit: every panel that had run a job stayed alive after its dock was closed (3
    Segment runs on 64³: +350 MB), held by Qt's connections to the job's closures, by the
    slider debouncer's timer and by the review's layer-event closure."""
    viewer = make_napari_viewer()
    viewer.add_image(vessel_case.image, name="ct", scale=SPACING, translate=TRANSLATE)
    viewer.add_labels(vessel_case.mask.astype(np.uint8), name="ref", scale=SPACING,
                      translate=TRANSLATE)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-tubular", name)
    if name.startswith("Segment"):
        widget.image_picker.set_layer(viewer.layers["ct"])
        widget.run()
        assert widget.prediction is not None
        widget.tr_slider.setValue(0.3)  # the debounced refinement
    else:
        widget.run()
    assert widget._job is not None
    assert widget._job.done
    ref = weakref.ref(widget)
    viewer.window.remove_dock_widget(dock)
    del widget, dock
    for _ in range(3):
        gc.collect()
    assert ref() is None
