"""Blob-like components (balls, thick plates) are dropped; tubes, pieces at a face and the
largest component are kept."""

import numpy as np
import pytest

from napari_tubular.geometry import BLOB_RATIO, remove_blob_components


def _scene():
    m = np.zeros((48, 48, 48), bool)
    m[2:46, 4:12, 4:12] = True  # a thick tube, the largest component
    zz, yy, xx = np.mgrid[:48, :48, :48]
    ball = (zz - 24) ** 2 + (yy - 34) ** 2 + (xx - 34) ** 2 <= 25  # radius 5 voxels
    plate = np.zeros_like(m)
    plate[36:43, 18:28, 2:12] = True  # 7 x 10 x 10 voxels: thick enough to judge
    face = np.zeros_like(m)
    face[0:9, 36:44, 2:10] = True  # a thick tube piece cut by the z = 0 face
    small = (zz - 10) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2 <= 4  # radius 2: too coarse
    thin = np.zeros_like(m)
    thin[24, 18:24, 20] = True  # a short thin tube piece
    return m | ball | plate | face | small | thin, ball, plate, face, small, thin


def test_balls_and_plates_go_tubes_stay():
    m, ball, plate, face, small, thin = _scene()
    out, removed = remove_blob_components(m, (1.0, 1.0, 1.0))
    out = out.astype(bool)
    assert not (out & ball).any()
    assert not (out & plate).any()
    assert (out & face).sum() == face.sum()  # its length runs on to the face
    assert (out & small).sum() == small.sum()  # 2 voxels thick: not judged
    assert (out & thin).sum() == thin.sum()
    assert out[2:46, 4:12, 4:12].all()
    assert sorted(round(r["volume_mm3"]) for r in removed) == sorted([ball.sum(), plate.sum()])


def test_the_largest_component_and_ratio_zero_are_kept():
    zz, yy, xx = np.mgrid[:30, :30, :30]
    ball = (zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 49
    out, removed = remove_blob_components(ball, (1.0, 1.0, 1.0))
    assert out.sum() == ball.sum()
    assert removed == []
    m, *_ = _scene()
    out, removed = remove_blob_components(m, (1.0, 1.0, 1.0), ratio=0)
    assert out.sum() == m.sum()
    with pytest.raises(ValueError, match="blob ratio"):
        remove_blob_components(m, (1.0, 1.0, 1.0), ratio=-1)


def test_sizes_are_physical():
    # the scene on a 2 mm grid: the same voxels, twice the size in mm; same verdicts
    m, ball, plate, *_ = _scene()
    out, removed = remove_blob_components(m, (2.0, 2.0, 2.0))
    assert not (out.astype(bool) & (ball | plate)).any()
    assert sorted(r["volume_mm3"] for r in removed) == pytest.approx(
        sorted([ball.sum() * 8, plate.sum() * 8]))
    assert BLOB_RATIO == 0.5


def test_a_blob_next_to_another_component_is_kept():
    """A review: a piece of a vessel between two breaks, as short as it is thick, read as a
    blob; one that lies within 5 mm of another component is kept."""
    m = np.zeros((48, 48, 48), bool)
    m[2:46, 4:12, 4:12] = True  # the vessel
    zz, yy, xx = np.mgrid[:48, :48, :48]
    near = (zz - 24) ** 2 + (yy - 8) ** 2 + (xx - 19) ** 2 <= 16  # 3 voxels beside it
    far = (zz - 24) ** 2 + (yy - 36) ** 2 + (xx - 36) ** 2 <= 16
    out, removed = remove_blob_components(m | near | far, (1.0, 1.0, 1.0))
    out = out.astype(bool)
    assert out[near].all()
    assert not out[far].any()
    assert len(removed) == 1


@pytest.mark.parametrize(("spacing", "radius", "depth"), [((2.5, 0.7, 0.7), 4.0, 2.8),
                                                          ((1.0, 1.0, 1.0), 8.0, 7.7)])
def test_a_vessel_lying_along_a_face_is_no_blob(spacing, radius, depth):
    """A review: a vessel whose wall touched a face while running along it was extended into a
    wall by the face extension, read 0-9 mm long and was removed as a 'blob' (70 mm here)."""
    from napari_tubular.topology import mask_centerline_length_mm

    shape = tuple(int(round(e / s)) for e, s in zip((100.0, 84.0, 112.0), spacing))
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    big = (z - 60.0) ** 2 + (y - 14.0) ** 2 <= 25.0  # the largest component, along x
    vessel = ((z - depth) ** 2 + (y - 56.0) ** 2 <= radius ** 2) & (x >= 14.0) & (x < 84.0)
    assert vessel[0].any()  # its wall is on the face
    assert mask_centerline_length_mm(vessel, spacing) > 70.0 - 2 * radius - 1.0  # flat ends
    out, removed = remove_blob_components(big | vessel, spacing)
    assert removed == []
    assert out.astype(bool)[vessel].all()


def test_a_mask_without_background_is_measured():
    """A review: a mask filling its volume had no background, an infinite distance and NaN."""
    import warnings

    from napari_tubular.topology import mask_centerline_length_mm

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        length = mask_centerline_length_mm(np.ones((12, 20, 20), bool), (2.5, 1.0, 1.0))
    assert np.isfinite(length)
    assert length > 0
