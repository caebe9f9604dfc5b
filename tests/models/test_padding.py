"""Padding outside a scanner's field of view (napari_tubular.models.padding)."""

from __future__ import annotations

import numpy as np

from napari_tubular.models.padding import fill_padding, padding_mask


def _circle_fov(value=-1024, shape=(12, 64, 64), radius=28, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    img = 40 + rng.normal(0, 15, shape)
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    out = (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 > radius**2
    img[:, out] = value
    return img.astype(dtype), np.broadcast_to(out, shape)


def test_circular_field_of_view_is_padding():
    for value in (-1024, -2048, -3024, 0):
        img, out = _circle_fov(value)
        if value == 0:  # an export in [0, 1]-like units: the padding is the minimum 0
            img = (img.astype(np.float32) + 200.0) / 400.0
            img[out] = 0.0
        found = padding_mask(img)
        assert found is not None, value
        mask, v = found
        assert v == float(img[out][0])
        assert np.array_equal(mask, out)


def test_padding_that_is_not_the_minimum_is_found():
    """Unclipped air noise reaches below the -1024 padding: the padding is the most frequent
    value, not the minimum."""
    img, out = _circle_fov(-1024, dtype=np.float32)
    img[:, 30:34, 30:34] = -1100.0 + np.arange(16, dtype=np.float32).reshape(4, 4)
    found = padding_mask(img)
    assert found is not None
    assert np.array_equal(found[0], out)


def test_no_padding_in_noisy_air_scattered_zeros_or_a_noise_free_phantom():
    rng = np.random.default_rng(1)
    shape = (12, 64, 64)
    # noisy air around a body: the model was trained with it; no exact plateau
    yy, xx = np.ogrid[:64, :64]
    body = (yy - 32) ** 2 + (xx - 32) ** 2 < 26**2
    img = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, shape)
    assert padding_mask(img.astype(np.float32)) is None
    # an integer image whose noise clips at 0: zeros are scattered, not a solid region
    img = np.clip(rng.normal(5, 5, shape), 0, None).astype(np.uint8)
    assert (img == 0).mean() > 0.1
    assert padding_mask(img) is None
    # a noise-free phantom: background 0 holds most of the voxels, bright tube
    img = np.zeros(shape, np.float32)
    img[:, 28:36, 28:36] = 1.0
    assert padding_mask(img) is None
    # a constant value inside the body (clipped lungs) that does not reach the border
    img, out = _circle_fov(-1024)
    img[4:8, 28:36, 20:28] = -1024
    mask, _ = padding_mask(img)
    assert np.array_equal(mask, out)
    assert not mask[4:8, 28:36, 20:28].any()


def test_fill_padding_draws_from_the_band_inside():
    img, out = _circle_fov(-3024)
    filled = fill_padding(img, out)
    assert filled.dtype == np.float32
    assert np.array_equal(filled[~out], img[~out])
    inside = img[~out].astype(float)
    assert abs(float(filled[out].mean()) - 40.0) < 3.0
    # the image's own noise level (15 HU), not more
    assert abs(float(filled[out].std()) - inside.std()) < 0.25 * inside.std()


def test_fill_continues_tissue_and_air_where_the_field_of_view_cuts_the_body():
    """An outside audit: where the circle cuts through the body, the band inside it holds air
    and tissue, and values drawn from it at random made 1000 HU salt-and-pepper noise that the
    network took for vessels (Dice 0.97 -> 0.48). The fill continues each side: tissue beyond
    the tissue, air beyond the air, with the band's noise."""
    rng = np.random.default_rng(0)
    shape = (6, 64, 64)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    body = np.broadcast_to(xx < 40, shape)  # tissue on the left, air on the right
    img = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, shape)
    out = np.broadcast_to((yy - 32) ** 2 + (xx - 32) ** 2 > 26**2, shape)
    img[out] = -1024
    filled = fill_padding(img.astype(np.int16), out)
    tissue_side = out & body & np.broadcast_to(xx < 30, shape)
    air_side = out & ~body & np.broadcast_to(xx > 50, shape)
    assert abs(float(filled[tissue_side].mean()) - 40.0) < 5.0
    assert abs(float(filled[air_side].mean()) + 1000.0) < 5.0
    assert float(filled[tissue_side].std()) < 25.0  # noise like the band's, not 1000 HU
    assert float(filled[air_side].std()) < 25.0
    assert np.array_equal(filled[~out], img.astype(np.int16)[~out])


def test_fill_follows_a_field_of_view_along_another_axis():
    """A review: a field-of-view cylinder along y (a CT stored coronally) left slices along z
    that are all padding, filled with air and tissue drawn at random; the fill works slice by
    slice along the axis with the fewest such slices."""
    rng = np.random.default_rng(0)
    shape = (64, 8, 64)
    zz, xx = np.mgrid[: shape[0], : shape[2]]
    body = np.broadcast_to((xx < 40)[:, None, :], shape)
    img = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, shape)
    out = np.broadcast_to(((zz - 32) ** 2 + (xx - 32) ** 2 > 26**2)[:, None, :], shape)
    img[out] = -1024
    filled = fill_padding(img.astype(np.int16), out)
    tissue_side = out & body & np.broadcast_to((xx < 30)[:, None, :], shape)
    assert abs(float(filled[tissue_side].mean()) - 40.0) < 5.0
    assert float(filled[tissue_side].std()) < 25.0
    assert fill_padding(img, np.ones(shape, bool)).shape == shape  # all padding: no crash
