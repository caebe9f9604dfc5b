"""Shared image filters of the post-processing (napari_tubular.geometry.filters)."""

import numpy as np
import pytest


def test_masked_gaussian_mean_ignores_voxels_outside_the_mask():
    """Normalised convolution: only masked voxels count, a constant over the mask is returned
    wherever the mask is near, and the weight is the local share of masked voxels."""
    from scipy import ndimage

    from napari_tubular.geometry.filters import masked_gaussian_mean

    rng = np.random.default_rng(0)
    mask = np.zeros((20, 30, 30), bool)
    mask[:, :15] = True
    values = np.where(mask, 7.0, rng.normal(1000, 300, mask.shape)).astype(np.float32)
    mean, weight = masked_gaussian_mean(values, mask, 2.0, return_weight=True)
    near = weight > 0.05
    np.testing.assert_allclose(mean[near], 7.0, rtol=1e-4)
    np.testing.assert_allclose(weight, ndimage.gaussian_filter(mask.astype(np.float32), 2.0))
    # a linear ramp inside the mask: the mean deep inside is the ramp itself
    ramp = np.broadcast_to(np.arange(30, dtype=np.float32), mask.shape)
    out = masked_gaussian_mean(np.where(mask, ramp, np.float32(np.nan)), mask, 1.0)
    np.testing.assert_allclose(out[5:15, 4:11, 4:11], ramp[5:15, 4:11, 4:11], atol=1e-3)
    assert np.isfinite(out).all()  # NaN outside the mask does not leak in
    with pytest.raises(ValueError, match="mask shape"):
        masked_gaussian_mean(values, mask[:5], 1.0)


def test_robust_sigma_reads_the_noise_despite_outliers():
    from napari_tubular.geometry.filters import robust_sigma

    rng = np.random.default_rng(1)
    values = rng.normal(40.0, 12.0, 20000)
    values[:2000] = -1000.0  # a tenth of the samples are air beside tissue
    assert robust_sigma(values) == pytest.approx(12.0, rel=0.15)
    assert np.std(values) > 200  # the plain SD is ruined by them
    assert robust_sigma(np.zeros(0)) == 0.0


@pytest.mark.parametrize("shape", [(9, 11, 7), (1, 12, 10), (5, 2, 30)])
@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_dilate_cube_is_scipys_iterated_cube_dilation(shape, radius):
    """The error map's tolerance bands: the same voxels as scipy's iterated 3x3x3 dilation
    (background beyond the array), masks at the border and axes shorter than the radius."""
    from scipy import ndimage

    from napari_tubular.geometry.filters import dilate_cube

    rng = np.random.default_rng(radius)
    for fill in (0.0, 0.01, 0.2):
        m = rng.random(shape) < fill
        m[0, 0, -1] |= fill > 0.1  # a voxel in a corner
        want = (ndimage.binary_dilation(m, np.ones((3, 3, 3), bool), iterations=radius)
                if radius else m)
        got = dilate_cube(m, radius)
        assert got.dtype == bool
        assert got.shape == m.shape
        np.testing.assert_array_equal(got, want)
        assert got is not m
