"""The large-vessel merge (geometry.large_vessels): which coarse-pass components count, and
what the merge changes."""

from __future__ import annotations

import edt
import numpy as np
import pytest

from napari_tubular.geometry.large_vessels import (
    LARGE_VESSEL_MIN_RADIUS_MM,
    large_vessel_regions,
    merge_large_vessels,
)

SP = (2.0, 1.6, 1.6)  # a coarse pass's grid (anisotropic on purpose)


def _grid(shape, sp=SP):
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij")


def _maps(mask, sp=SP):
    """A network-like answer: P = 1 on the mask, radius = its distance map (mm)."""
    prob = mask.astype(np.float32)
    radius = edt.edt(mask, anisotropy=sp).astype(np.float32)
    return prob, radius


def _tube(shape, radius_mm, sp=SP, axis=0):
    z, y, x = _grid(shape, sp)
    c = [n * s / 2 for n, s in zip(shape, sp)]
    coords = [z - c[0], y - c[1], x - c[2]]
    del coords[axis]
    return coords[0] ** 2 + coords[1] ** 2 <= radius_mm ** 2


def test_a_thick_tube_through_the_volume_is_merged():
    shape = (50, 40, 40)  # 100 x 64 x 64 mm
    mask = _tube(shape, 16.0)
    prob, radius = _maps(mask)
    stats = {}
    region = large_vessel_regions(prob, radius, SP, stats=stats)
    assert region is not None
    assert len(stats["merged"]) == 1
    assert not (region & ~mask).any()  # never outside what the pass found
    assert region.sum() >= 0.85 * mask.sum()  # the thick part is nearly all of it
    assert abs(stats["merged"][0]["radius_mm"] - 16.0) <= 1.7


def test_an_organ_like_ellipsoid_is_not_merged():
    """A kidney/spleen-sized ellipsoid (semi-axes 40, 28, 22 mm) the coarse pass labels whole: a
    candidate (its inner radius is over 11 mm) but no tube."""
    shape = (50, 50, 50)
    z, y, x = _grid(shape)
    mask = ((z - 50) / 40.0) ** 2 + ((y - 40) / 28.0) ** 2 + ((x - 40) / 22.0) ** 2 <= 1
    prob, radius = _maps(mask)
    stats = {}
    assert large_vessel_regions(prob, radius, SP, stats=stats) is None
    assert len(stats["candidates"]) == 1
    assert stats["merged"] == []


def test_a_round_blob_and_a_thin_tube_are_not_candidates_or_merged():
    shape = (50, 40, 40)
    thin = _tube(shape, LARGE_VESSEL_MIN_RADIUS_MM - 3.0)
    prob, radius = _maps(thin)
    stats = {}
    assert large_vessel_regions(prob, radius, SP, stats=stats) is None
    assert stats["candidates"] == []  # under the radius: not even looked at
    z, y, x = _grid(shape)
    ball = (z - 50) ** 2 + (y - 32) ** 2 + (x - 32) ** 2 <= 24.0 ** 2  # a bladder
    prob, radius = _maps(ball)
    assert large_vessel_regions(prob, radius, SP) is None


def test_thin_branches_of_a_large_vessel_stay_out_of_the_region():
    shape = (50, 40, 40)
    trunk = _tube(shape, 14.0)
    z, y, x = _grid(shape)
    branch = ((z - 50) ** 2 + (x - 32) ** 2 <= 2.0 ** 2) & (y > 40)  # 2 mm, leaving sideways
    prob, radius = _maps(trunk | branch)
    region = large_vessel_regions(prob, radius, SP)
    assert region is not None
    away = branch & (y > 32.0 + 14.0 + 6.0)  # the branch beyond its junction
    assert away.sum() >= 20
    assert not (region & away).any()


def test_merge_fills_a_hollow_shell_and_caps_the_radius():
    """The first pass answered a thick tube with its shell; the coarse pass with the whole tube
    and radii too large. The hole is filled, voxels the first pass already had keep their
    values, and no radius exceeds the distance to the edge of the merged mask + half a voxel."""
    sp = (1.0, 0.8, 0.8)
    shape = (40, 60, 60)
    tube = _tube(shape, 18.0, sp)
    dist = edt.edt(tube, anisotropy=sp)
    shell = tube & (dist <= 4.0)
    prob = np.where(shell, 0.9, 0.05).astype(np.float32)
    radius = np.where(shell, 2.0, 0.0).astype(np.float32)
    before_p, before_r = prob.copy(), radius.copy()
    coarse_p = tube.astype(np.float32)
    coarse_r = np.where(tube, 25.0, 0.0).astype(np.float32)  # too large everywhere
    n = merge_large_vessels(prob, radius, coarse_p, coarse_r, tube, sp)
    hole = tube & ~shell
    assert n == int(hole.sum())
    assert (prob[hole] > 0.5).all()
    np.testing.assert_array_equal(prob[~hole], before_p[~hole])
    np.testing.assert_array_equal(radius[~hole], before_r[~hole])
    assert (radius[hole] <= dist[hole] + 0.5 * min(sp) + 1e-4).all()
    assert radius[hole].max() >= 16.0  # the axis reads about the tube's radius


def test_merge_rejects_maps_of_different_shapes():
    a = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="one shape"):
        merge_large_vessels(a, a.copy(), a.copy(), a.copy(), np.zeros((8, 8, 9), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="differ"):
        large_vessel_regions(a, np.zeros((8, 8, 9), np.float32), (1, 1, 1))
