"""Session 22's synthetic options: ``make_vessel_tree(organ_level=..., distractors_touch=...,
noise_grain_vox=...)`` and the training options that draw them (``touch_fraction``,
``bright_organ_fraction``, ``grainy_fraction``, ``low_contrast_fraction``)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_tubular.synthetic import make_vessel_tree
from napari_tubular.training import TrainConfig
from napari_tubular.training.data import synthetic_case_params

ISO = (1.0, 1.0, 1.0)
NEW_GENERATOR_KEYS = ("distractors_touch", "organ_level", "noise_grain_vox")
NEW_FLAGS = ("touch", "bright_organs", "grainy", "low_contrast")
ZERO_FRACTIONS = {"touch_fraction": 0.0, "bright_organ_fraction": 0.0, "grainy_fraction": 0.0,
                  "low_contrast_fraction": 0.0}
SMALL = {"extent_mm": (30.0, 36.0), "inplane_spacing": (0.9, 1.1)}


def _lag1(a: np.ndarray) -> float:
    """Correlation of neighbouring voxels along x."""
    return float(np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1])


# ---------------------------------------------------------------- defaults unchanged


@pytest.mark.parametrize("seed", [0, 7])
def test_explicit_defaults_give_the_default_volume(seed):
    kw = {"shape": (40, 48, 44), "spacing": (1.5, 0.8, 0.8), "seed": seed, "organs": 1}
    base = make_vessel_tree(**kw)
    same = make_vessel_tree(organ_level=(0.25, 0.7), distractors_touch=False,
                            noise_grain_vox=0.0, **kw)
    assert np.array_equal(base.image, same.image)
    assert np.array_equal(base.mask, same.mask)
    assert np.array_equal(base.centerline, same.centerline)
    assert base.params["organ_level"] == (0.25, 0.7)
    assert base.params["distractors_touch"] is False
    assert base.params["noise_grain_vox"] == 0.0


def test_case_params_defaults_have_none_of_the_new_options():
    for seed in range(6):
        default = synthetic_case_params(seed, {})
        assert not set(NEW_GENERATOR_KEYS) & set(default["generator"])
        assert "contrast" not in default["generator"]
        assert "noise" not in default["generator"]
        assert all(default[flag] is False for flag in NEW_FLAGS)
        # explicit zero fractions draw the same case (the new draws come after the others)
        assert synthetic_case_params(seed, dict(ZERO_FRACTIONS)) == default
        with_organs = {"organ_fraction": 1.0, "body_fraction": 0.5, "coarse_fraction": 0.5}
        assert (synthetic_case_params(seed, {**with_organs, **ZERO_FRACTIONS})
                == synthetic_case_params(seed, with_organs))


# ---------------------------------------------------------------- noise_grain_vox


@pytest.mark.parametrize("blur", [False, True])
def test_noise_grain_correlates_the_noise_and_keeps_its_level(blur):
    """The noise alone is the image with noise 20 minus the image with noise 0 (the noise is
    the last random draw, after the blur: everything else is the same)."""
    kw = {"shape": (40, 48, 48), "spacing": ISO, "seed": 3, "distractors": False,
          "bias": False, "blur": blur}
    lag, std = {}, {}
    for grain in (0.0, 2.0):
        quiet = make_vessel_tree(noise=0.0, noise_grain_vox=grain, **kw)
        noisy = make_vessel_tree(noise=20.0, noise_grain_vox=grain, **kw)
        assert np.array_equal(noisy.mask, quiet.mask)
        assert noisy.params["noise_grain_vox"] == grain
        nz = noisy.image.astype(np.float64) - quiet.image
        lag[grain], std[grain] = _lag1(nz), float(nz.std())
        # and in the tissue far from the vessels, the image's fine-scale residual
        far = ~ndimage.binary_dilation(noisy.mask > 0, iterations=4)
        assert far.mean() > 0.3
        assert abs(float(nz[far].std()) - 20.0) < 0.25 * 20.0
    for grain in (0.0, 2.0):
        assert std[grain] == pytest.approx(20.0, rel=0.1 if grain else 0.05)
    # a Gaussian of sigma s correlates neighbours by exp(-1 / (4 s^2)): 0.94 for s = 2
    assert lag[2.0] > 0.85
    assert lag[2.0] > lag[0.0] + 0.25
    if not blur:
        assert abs(lag[0.0]) < 0.05  # white noise

    # the vessel mask does not depend on the grain, noise or not
    a = make_vessel_tree(noise=20.0, **kw)
    b = make_vessel_tree(noise=20.0, noise_grain_vox=2.0, **kw)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.centerline, b.centerline)
    assert not np.array_equal(a.image, b.image)


def test_noise_grain_increases_correlation_monotonically():
    kw = {"shape": (40, 40, 48), "spacing": ISO, "seed": 11, "distractors": False,
          "bias": False, "blur": False}
    quiet = make_vessel_tree(noise=0.0, **kw).image.astype(np.float64)
    lags = []
    for grain in (0.5, 1.0, 2.0, 3.0):
        nz = make_vessel_tree(noise=20.0, noise_grain_vox=grain, **kw).image - quiet
        assert float(nz.std()) == pytest.approx(20.0, rel=0.15)
        lags.append(_lag1(nz))
        if grain >= 1.0:  # a sampled Gaussian of sigma s: exp(-1 / (4 s^2)) for s >= 1
            assert lags[-1] == pytest.approx(math.exp(-1.0 / (4.0 * grain ** 2)), abs=0.08)
    assert lags == sorted(lags)
    assert lags[0] > 0.1  # even half a voxel of grain correlates the noise


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), 10.5])
def test_noise_grain_bad_values_raise(bad):
    with pytest.raises(ValueError, match="noise_grain_vox"):
        make_vessel_tree((24, 24, 24), ISO, seed=0, noise_grain_vox=bad)


# ---------------------------------------------------------------- organ_level


def test_organ_level_sets_the_organ_intensity():
    kw = {"shape": (48, 56, 56), "spacing": ISO, "seed": 5, "organs": 2}
    default = make_vessel_tree(**kw)
    bright = make_vessel_tree(organ_level=(0.95, 1.0), **kw)
    assert bright.params["organ_level"] == (0.95, 1.0)
    assert len(bright.params["organs"]) >= 1
    assert len(bright.params["organs"]) == len(default.params["organs"])
    for case, (lo, hi) in ((default, (0.25, 0.7)), (bright, (0.95, 1.0))):
        tissue, contrast = case.params["tissue_hu"], case.params["contrast_hu"]
        for organ in case.params["organs"]:
            frac = (organ["hu"] - tissue) / contrast
            assert lo - 1e-9 <= frac <= hi + 1e-9
    # the organs have their own random stream: the same organs, only brighter, and the
    # rest of the volume (label, vessels, noise) is untouched
    assert np.array_equal(bright.mask, default.mask)
    for a, b in zip(bright.params["organs"], default.params["organs"]):
        assert a["centre_mm"] == b["centre_mm"]
        assert a["semi_axes_mm"] == b["semi_axes_mm"]
        assert a["hu"] > b["hu"]
    diff = bright.image.astype(np.float64) - default.image
    assert diff.min() > -0.05
    changed = diff > 1.0
    assert changed.sum() > 1000
    assert (bright.mask[changed] > 0).mean() < 0.1


@pytest.mark.parametrize("bad", [(0.7, 0.2), (float("nan"), 0.5), (-0.1, 0.5), (0.5, 1.6),
                                 (0.5,), (0.1, 0.2, 0.3), (0.2, float("inf"))])
def test_organ_level_bad_values_raise(bad):
    with pytest.raises(ValueError, match="organ_level"):
        make_vessel_tree((24, 24, 24), ISO, seed=0, organs=1, organ_level=bad)


# ---------------------------------------------------------------- distractors_touch


def _distractor_voxels(case) -> np.ndarray:
    """Bone plates, the brighter blobs and air pockets: brighter than any vessel of contrast
    100 HU (at most about tissue + 125 HU without noise or blur) or darker than any fat."""
    tissue, contrast = case.params["tissue_hu"], case.params["contrast_hu"]
    return (case.image > tissue + contrast + 80.0) | (case.image < -400.0)


def test_distractors_touch_lets_them_reach_the_vessels():
    kw = {"shape": (44, 48, 48), "spacing": ISO, "distractor_scale": 4, "bias": False,
          "blur": False, "noise": 0.0, "contrast": 100.0}
    touching = []
    for seed in range(4):
        plain = make_vessel_tree(seed=seed, distractors=False, **kw)
        # the threshold is above everything but the distractors
        assert not _distractor_voxels(plain).any()
        near = ndimage.binary_dilation(plain.mask > 0)  # the mask and its 6-neighbours
        counts = {}
        for touch in (False, True):
            case = make_vessel_tree(seed=seed, distractors=True, distractors_touch=touch, **kw)
            assert case.params["distractors_touch"] is touch
            assert np.array_equal(case.mask, plain.mask)
            assert np.array_equal(case.centerline, plain.centerline)
            det = _distractor_voxels(case)
            assert det.sum() > 100  # distractors were placed
            counts[touch] = int((det & near).sum())
        assert counts[False] == 0  # they keep clear of the vessels by default
        touching.append(counts[True])
    assert sum(t > 0 for t in touching) >= 2
    assert max(touching) > 20


def test_distractors_touch_still_keeps_the_vessels_composited_on_top():
    """A vessel through a bone plate keeps the vessel's intensity in its core (the vessels are
    composited after the distractors)."""
    kw = {"shape": (44, 48, 48), "spacing": ISO, "distractor_scale": 4, "bias": False,
          "blur": False, "noise": 0.0, "contrast": 100.0, "hard_edges": True}
    for seed in range(3):
        case = make_vessel_tree(seed=seed, distractors=True, distractors_touch=True, **kw)
        inside = case.image[case.mask > 0]
        tissue = case.params["tissue_hu"]
        assert inside.min() > tissue + 100.0 * 0.5
        assert inside.max() < tissue + 100.0 + 60.0


# ---------------------------------------------------------------- training options


def test_case_params_all_new_fractions_on():
    opts = {**SMALL, "organ_fraction": 1.0, "touch_fraction": 1.0, "bright_organ_fraction": 1.0,
            "bright_organ_level": (0.8, 0.9), "grainy_fraction": 1.0,
            "noise_grain_vox": (0.8, 2.0), "low_contrast_fraction": 1.0,
            "low_contrast_hu": (70.0, 160.0), "low_contrast_min_cnr": 5.0}
    organ_only = {**SMALL, "organ_fraction": 1.0}
    grains = []
    for seed in range(8):
        p = synthetic_case_params(seed, opts)
        assert all(p[flag] is True for flag in NEW_FLAGS)
        gen = p["generator"]
        assert gen["distractors_touch"] is True
        assert gen["organ_level"] == (0.8, 0.9)
        assert 0.8 <= gen["noise_grain_vox"] <= 2.0
        grains.append(gen["noise_grain_vox"])
        assert 70.0 <= gen["contrast"] <= 160.0
        assert 0.25 * gen["contrast"] / 5.0 - 0.01 <= gen["noise"] <= gen["contrast"] / 5.0 + 0.01
        # the earlier draws are those of the same seed without the new options
        ref = synthetic_case_params(seed, organ_only)
        assert (p["shape"], p["spacing"]) == (ref["shape"], ref["spacing"])
        assert {k: v for k, v in gen.items() if k in ref["generator"]} == ref["generator"]
        assert set(gen) - set(ref["generator"]) == {*NEW_GENERATOR_KEYS, "contrast", "noise"}
    assert len(set(grains)) > 1

    # without organs, no organ_level; the user's generator values win
    p = synthetic_case_params(3, {**opts, "organ_fraction": 0.0,
                                  "generator": {"noise_grain_vox": 0.5, "contrast": 120.0}})
    assert "organ_level" not in p["generator"]
    assert p["bright_organs"] is False
    assert p["generator"]["noise_grain_vox"] == 0.5
    assert p["generator"]["contrast"] == 120.0
    assert p["generator"]["noise"] <= 120.0 / 5.0 + 0.01

    # the drawn options render: a small case carries them into its params
    p = synthetic_case_params(1, opts)
    case = make_vessel_tree(p["shape"], p["spacing"], seed=p["seed"], **p["generator"])
    assert case.params["distractors_touch"] is True
    assert case.params["noise_grain_vox"] == pytest.approx(p["generator"]["noise_grain_vox"])
    assert case.params["contrast_hu"] == p["generator"]["contrast"]
    assert case.params["noise_hu"] == p["generator"]["noise"]
    tissue = case.params["tissue_hu"]
    for organ in case.params["organs"]:
        assert 0.8 - 1e-9 <= (organ["hu"] - tissue) / case.params["contrast_hu"] <= 0.9 + 1e-9


def test_case_params_fractions_are_fractions_of_cases():
    opts = {"touch_fraction": 0.5, "grainy_fraction": 0.5, "low_contrast_fraction": 0.5}
    flags = [synthetic_case_params(seed, opts) for seed in range(40)]
    for flag, key in (("touch", "distractors_touch"), ("grainy", "noise_grain_vox"),
                      ("low_contrast", "contrast")):
        on = [p for p in flags if p[flag]]
        assert 8 <= len(on) <= 32
        assert all((key in p["generator"]) == p[flag] for p in flags)


def test_train_config_checks_the_new_options():
    good = {"touch_fraction": 0.3, "bright_organ_fraction": 0.5, "bright_organ_level": [0.7, 1.0],
            "grainy_fraction": 0.2, "noise_grain_vox": [0.8, 2.0], "low_contrast_fraction": 0.1,
            "low_contrast_hu": [70, 160], "low_contrast_min_cnr": 4}
    assert TrainConfig(synthetic=good).synthetic == good
    # the generator's own limits (an organ up to 1.5 times the vessel contrast, grain <= 10
    # voxels; 0 is allowed) are the config's: a bad range is refused before any case is made
    TrainConfig(synthetic={"bright_organ_level": [0.0, 1.5], "noise_grain_vox": [0.0, 10.0]})
    for key, value in (("low_contrast_hu", [160, 70]), ("low_contrast_hu", [0, 70]),
                       ("low_contrast_min_cnr", 0), ("low_contrast_min_cnr", -1.0),
                       ("low_contrast_min_cnr", "x"), ("grainy_fraction", 2),
                       ("touch_fraction", -0.1), ("bright_organ_fraction", float("nan")),
                       ("low_contrast_fraction", 1.5), ("noise_grain_vox", [2.0, 1.0]),
                       ("bright_organ_level", [0.9]), ("bright_organ_level", [0.7, 2.0]),
                       ("noise_grain_vox", [12.0, 20.0]), ("noise_grain_vox", [-1.0, 1.0])):
        with pytest.raises(ValueError, match=rf"synthetic\.{key}: must be"):
            TrainConfig(synthetic={key: value})
    # a number given as text is taken as that number, as everywhere in a config (YAML reads
    # 1e-3 as a text; session 34)
    assert TrainConfig(synthetic={"low_contrast_min_cnr": "5"}).synthetic[
        "low_contrast_min_cnr"] == 5
    # the generator's own options are checked there too
    with pytest.raises(ValueError, match="generator"):
        TrainConfig(synthetic={"generator": {"distractors_touch": True, "noise_grain_vox": "x"}})
    TrainConfig(synthetic={"generator": {"distractors_touch": True, "noise_grain_vox": 1.0,
                                         "organ_level": [0.5, 1.0]}})
