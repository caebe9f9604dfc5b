"""union_of_balls: the lower-envelope path decides ties as the scatter does (an outside judge:
EDT radii on 0.7 mm voxels put voxels at exactly a ball's radius inside by the envelope's
float64 sums and outside by the scatter's float32 lengths, so the union depended on the path)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_tubular.geometry.spheres as spheres
from napari_tubular.geometry import union_of_balls
from napari_tubular.geometry.distance import edt_mm


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 0.7), (1.3, 0.7, 0.9)])
def test_envelope_and_scatter_agree_on_ties(spacing, monkeypatch):
    shape = (24, 26, 28)
    z, y, x = np.indices(shape)
    d2 = (((z - 12) * spacing[0]) ** 2 + ((y - 13) * spacing[1]) ** 2
          + ((x - 14) * spacing[2]) ** 2)
    blob = d2 <= (8 * min(spacing)) ** 2
    radius = edt_mm(blob, spacing)
    centers = np.argwhere(blob)
    radii = radius[blob].astype(np.float64)
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_GAIN", 0.0)
    by_envelope = union_of_balls(centers, radii, shape, spacing)
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_ENTRIES", float("inf"))
    by_scatter = union_of_balls(centers, radii, shape, spacing)
    assert np.array_equal(by_envelope, by_scatter)


def test_no_envelope_box_larger_than_the_bound(monkeypatch):
    """The envelope holds its box in float64, two or three copies at once (about 3 GB for a
    512³ volume): past FAST_MAX_FRAME_VOXELS the balls are scattered."""
    shape, spacing = (20, 20, 20), (1.0, 1.0, 1.0)
    centers = np.argwhere(np.ones(shape, bool))[::7]
    radii = np.full(len(centers), 6.0)
    calls = []
    original = spheres._union_envelope
    monkeypatch.setattr(spheres, "_union_envelope",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_ENTRIES", 0.0)
    monkeypatch.setattr(spheres, "ENVELOPE_MIN_GAIN", 0.0)
    first = union_of_balls(centers, radii, shape, spacing)
    assert calls
    calls.clear()
    monkeypatch.setattr(spheres, "FAST_MAX_FRAME_VOXELS", 1000)
    assert np.array_equal(union_of_balls(centers, radii, shape, spacing), first)
    assert not calls
