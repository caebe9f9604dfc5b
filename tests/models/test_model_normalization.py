"""normalize_intensity: known values per kind, validation."""

import numpy as np
import pytest

from napari_tubular.models.normalization import normalize_intensity, validate_normalization


def test_window_maps_linearly_and_clips():
    img = np.array([-1000, -100, 250, 600, 3000], dtype=np.int16)
    out = normalize_intensity(img, {"kind": "window", "low": -100, "high": 600})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1], atol=1e-7)
    assert img[0] == -1000  # input untouched


def test_percentile_maps_percentiles_to_0_and_1(rng):
    img = rng.normal(50, 10, size=(20, 20, 20)).astype(np.float32)
    out = normalize_intensity(img, {"kind": "percentile", "lower": 1, "upper": 99})
    lo, hi = np.percentile(img, [1, 99])
    assert out.min() == 0
    assert out.max() == 1
    mid = (img > lo) & (img < hi)
    np.testing.assert_allclose(out[mid], (img[mid] - lo) / (hi - lo), atol=1e-5)
    # constant volume: no division by zero
    assert np.all(normalize_intensity(np.ones((3, 3, 3)), {"kind": "percentile"}) == 0)


def test_zscore(rng):
    img = rng.normal(5, 3, size=(10, 10, 10))
    out = normalize_intensity(img, {"kind": "zscore"})
    assert abs(out.mean()) < 1e-5
    assert abs(out.std() - 1) < 1e-4
    fixed = normalize_intensity(np.array([7.0]), {"kind": "zscore", "mean": 5, "std": 2})
    np.testing.assert_allclose(fixed, [1.0])


@pytest.mark.parametrize(
    ("norm", "match"),
    [
        ({"kind": "window", "low": 5, "high": 5}, "high > low"),
        ({"kind": "window", "low": 0}, "low"),
        ({"kind": "percentile", "lower": 60, "upper": 40}, "lower < upper"),
        ({"kind": "zscore", "mean": 1}, "both"),
        ({"kind": "softmax"}, "unknown normalization kind"),
        ({"low": 0}, "kind"),
    ],
)
def test_invalid(norm, match):
    with pytest.raises(ValueError, match=match):
        validate_normalization(norm)


def test_rejects_non_numeric():
    with pytest.raises(ValueError, match="dtype"):
        normalize_intensity(np.array(["a"]), {"kind": "none"})


# ----------------------------------------------------------------------- intensity rescale
WINDOW = {"kind": "window", "low": -200.0, "high": 600.0}


def test_rescale_needed_only_for_volumes_far_narrower_than_the_window():
    from napari_tubular.models.normalization import intensity_rescale_needed

    rng = np.random.default_rng(0)
    hu = rng.normal(40, 20, (20, 20, 20)).astype(np.float32)
    hu[5:8, 5:8, :] = 300.0  # a bright vessel
    assert not intensity_rescale_needed(hu, WINDOW)
    assert intensity_rescale_needed((hu + 1024) / 4096, WINDOW)  # [0, 1]-scaled CT
    assert intensity_rescale_needed((hu - hu.mean()) / hu.std(), WINDOW)  # z-scored
    assert not intensity_rescale_needed((hu + 1024) / 4096, {"kind": "percentile"})


def test_rescale_reasons_offsets_counts_and_8bit():
    """Raw CT stored as HU + 1024, MR-like counts and 8-bit exports are not in HU; CT in HU with
    air, lung or fat is."""
    from napari_tubular.models.normalization import intensity_rescale_reason

    rng = np.random.default_rng(2)
    hu = rng.normal(40, 20, (24, 24, 24)).astype(np.float32)
    hu[5:8, 5:8, :] = 300.0
    chest = hu.copy()
    chest[:, :, :8] = -1000.0 + rng.normal(0, 20, (24, 24, 8))  # air outside the body
    chest[:, 10:20, 10:] = -850.0  # lung: most of the non-air image, below the floor
    fat = hu - 150.0  # fatty tissue around -110 HU
    for ok in (hu, chest, fat, chest - 2000.0 * (chest < -990)):  # + padding at -3000
        assert intensity_rescale_reason(ok, WINDOW) is None
    assert "HU + 1024" in intensity_rescale_reason((hu + 1024).astype(np.int16), WINDOW)
    assert "bulk" in intensity_rescale_reason(hu * 4 + 500, WINDOW)  # MR-like counts
    u8 = np.clip(hu, 0, 255).astype(np.uint8)
    assert "8-bit" in intensity_rescale_reason(u8, WINDOW)
    assert "narrower" in intensity_rescale_reason((hu + 1024) / 4096, WINDOW)
    assert intensity_rescale_reason(hu * 4 + 500, {"kind": "percentile"}) is None


def test_a_window_within_8_bits_takes_8_bit_images_as_they_are():
    """An outside review: a model trained on uint8 data (window 0..255) had its uint8 input
    rescaled. A window within 0..255 is not a CT window: an image whose bulk lies in (or near)
    it is in its units, whatever its dtype; [0, 1] images and counts far above it are not."""
    from napari_tubular.models.normalization import intensity_rescale_reason, window_fits_8_bits

    eight_bit = {"kind": "window", "low": 0.0, "high": 255.0}
    assert window_fits_8_bits(eight_bit)
    assert window_fits_8_bits({"kind": "window", "low": -10.0, "high": 250.0})
    assert not window_fits_8_bits(WINDOW)
    assert not window_fits_8_bits({"kind": "window", "low": 0.0, "high": 1000.0})
    assert not window_fits_8_bits({"kind": "percentile"})
    rng = np.random.default_rng(4)
    img = rng.normal(30, 5, (24, 24, 24))
    img[5:8, 5:8, :] = 200.0
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    for ok in (u8, u8.astype(np.uint16), u8.astype(np.float32), np.clip(img + 150, 0, 255)):
        assert intensity_rescale_reason(ok, eight_bit) is None
    assert "narrower" in intensity_rescale_reason(u8 / 255.0, eight_bit)
    assert "outside the model's window" in intensity_rescale_reason(
        u8.astype(np.uint16) * 20 + 800, eight_bit)
    assert "8-bit" in intensity_rescale_reason(u8, WINDOW)  # a CT window: as before


def test_a_cta_crop_filled_with_contrast_keeps_its_units():
    """An outside audit: a cardiac CTA crop in HU, a 420 HU chamber over 55 % of it, 110 HU
    myocardium and -80 HU epicardial fat: its bulk (392) lies above the soft-tissue band, and
    "auto" rescaled it, taking the fat for air and the blood for tissue. Fat, lung or air in HU
    (at least 5 % of the voxels between -1050 and -50) now keeps the units; the same image
    stored as HU + 1024, and MR-like counts, are still rescaled."""
    from napari_tubular.models.normalization import intensity_rescale_reason

    rng = np.random.default_rng(3)
    x = np.arange(64)[None, None, :] * np.ones((32, 32, 64))
    crop = np.where(x < 35, 420.0, np.where(x < 45, 110.0, -80.0)) + rng.normal(0, 20, x.shape)
    assert intensity_rescale_reason(crop.astype(np.int16), WINDOW) is None
    assert "HU + 1024" in intensity_rescale_reason((crop + 1024).astype(np.int16), WINDOW)
    counts = np.where(x < 35, 1800.0, np.where(x < 45, 700.0, 300.0)) + rng.normal(0, 20, x.shape)
    assert "bulk" in intensity_rescale_reason(counts, WINDOW)


def test_rescale_to_window_is_the_linear_map_of_the_robust_range():
    from napari_tubular.models.normalization import rescale_to_window, robust_range

    rng = np.random.default_rng(1)
    x = rng.random((30, 30, 30)).astype(np.float32)
    out, info = rescale_to_window(x, WINDOW)
    assert out.dtype == np.float32
    assert out.shape == x.shape
    assert robust_range(out) == pytest.approx([-100.0, 550.0], abs=1e-2)
    np.testing.assert_allclose(out, x * info["scale"] + info["offset"], rtol=1e-5, atol=1e-3)
    # any linear change of the input gives the same output (what makes "auto" safe)
    out2, _ = rescale_to_window(x * 37.0 - 5.0, WINDOW)
    np.testing.assert_allclose(out2, out, atol=1e-2)
    const, info_c = rescale_to_window(np.full((4, 4, 4), 3.0), WINDOW)
    assert np.all(const == -100.0)
    assert info_c["scale"] == 0.0
    with pytest.raises(ValueError, match="window"):
        rescale_to_window(x, {"kind": "zscore"})


def test_low_noise_ct_keeps_its_units():
    """Tissue 40 +- 5 HU with a thin 300 HU vessel (0.05 % of the voxels): the robust range is
    narrow, but the image is CT in HU and must not be rescaled; the same image scaled to [0, 1]
    must be."""
    import numpy as np

    from napari_tubular.models.normalization import intensity_rescale_reason

    rng = np.random.default_rng(0)
    img = rng.normal(40, 5, (40, 60, 60)).astype(np.float32)
    img[20, 30, 10:50] = 300.0
    window = {"kind": "window", "low": -200.0, "high": 600.0}
    assert intensity_rescale_reason(img, window) is None
    unit = (img - img.min()) / (img.max() - img.min())
    assert "narrower" in intensity_rescale_reason(unit, window)


def _body_in_air(rng, shape=(40, 96, 96)):
    """CT-like section in HU: air around an elliptical body (fat shell, 40 HU tissue), a bone
    plate at 900 HU and two 300 HU tubes."""
    z, y, x = np.indices(shape)
    rho = np.hypot((y - 48) / 40.0, (x - 48) / 34.0)
    img = np.full(shape, -1000.0)
    img[rho < 1.0] = -100.0
    img[rho < 0.85] = 40.0
    img[:, 40:44, 30:60] = 900.0
    img[np.hypot(y - 60, x - 40) < 3] = 300.0
    img[np.hypot(y - 30, x - 55) < 2] = 300.0
    return (img + rng.normal(0, 10, shape)).astype(np.float32)


def test_rescale_of_a_body_in_air_puts_air_and_tissue_in_place(rng):
    """A body surrounded by air exported to [0, 1]: mapping its robust range (air .. bone)
    onto the window would put the soft tissue about 200 HU up, as bright as a vessel; the
    air-and-tissue levels bring the tissue back to 40 HU and the air to -1000."""
    from napari_tubular.models.normalization import intensity_rescale_reason, rescale_to_window

    hu = _body_in_air(rng)
    unit = (hu - hu.min()) / (hu.max() - hu.min())
    assert intensity_rescale_reason(unit, WINDOW) is not None
    out, info = rescale_to_window(unit, WINDOW)
    assert info["levels"] == "air, tissue"
    tissue = (hu > 0) & (hu < 90)
    air = hu < -900
    assert abs(np.median(out[tissue]) - 40.0) < 8.0
    assert abs(np.median(out[air]) + 1000.0) < 25.0
    np.testing.assert_allclose(out, hu, atol=40.0)  # the HU image back, up to the noise
    # a fat-rich body (fat half of it): the median of the body is fat, yet the tissue stays at
    # its place (mapped by the body's median it went to about 170 HU)
    fatty = hu.copy()
    z, y, x = np.indices(hu.shape)
    fatty[(np.hypot((y - 48) / 40.0, (x - 48) / 34.0) < 0.85) & (x < 48) & (hu < 100)] = -100.0
    unit = (fatty - fatty.min()) / (fatty.max() - fatty.min())
    out, info = rescale_to_window(unit, WINDOW)
    assert info["levels"] == "air, tissue"
    assert abs(np.median(out[(fatty > 0) & (fatty < 90)]) - 40.0) < 25.0
    # bright tubes on a flat background (a phantom in [0, 1]) and uniform noise keep the
    # robust-range map: no dark mode with a valley under a body
    flat = rng.normal(0.2, 0.05, (40, 64, 64)).astype(np.float32)
    flat[:, 30:34, 30:34] = 0.8
    for img in (flat, rng.random((30, 30, 30)).astype(np.float32)):
        assert rescale_to_window(img, WINDOW)[1]["levels"] == "robust range"
