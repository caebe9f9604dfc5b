"""Inference: blending exactness, MONAI equivalence, resampling geometry, radius conversion,
progress/cancel, out-of-memory batch halving, segment() outputs, bad inputs."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_tubular.geometry.distance import radius_from_scale  # noqa: E402
from napari_tubular.inference import (  # noqa: E402
    NO_REFINE_THRESHOLD,
    Cancelled,
    monai_sliding_window_predict,
    predict,
    segment,
    sliding_window_predict,
    window_starts,
)
from napari_tubular.models import ModelFormatError, TubularUNet  # noqa: E402

from ._tiny_model import save_tiny_model  # noqa: E402

K = 4
NORM_NONE = {"kind": "none"}


class EchoNet(torch.nn.Module):
    """seg probability = the input itself; scale logits put all mass on class ``k``.

    Any correct blending of identical overlapping predictions returns the input exactly.
    """

    def __init__(self, k=3, num_scales=K + 1, oom_above=None):
        super().__init__()
        self.k = k
        self.num_scales = num_scales
        self.oom_above = oom_above
        self.batches = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.batches.append(x.shape[0])
        if self.oom_above is not None and x.shape[0] > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        p = x.clamp(1e-6, 1 - 1e-6)
        seg = torch.log(p) - torch.log1p(-p)
        scale = torch.full((x.shape[0], self.num_scales) + tuple(x.shape[2:]), -30.0)
        scale[:, self.k] = 30.0
        return {"seg": seg, "scale": scale}


def _meta(patch=(16, 16, 16), spacing=(1.0, 1.0, 1.0), norm=NORM_NONE):
    return {
        "K": K,
        "spacing": list(spacing),
        "normalization": norm,
        "patch_size": list(patch),
        "arch": {},
    }


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", K=K)


@pytest.mark.parametrize("size", [16, 17, 40, 41, 64, 100])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_window_starts_match_monai(size, overlap):
    from monai.data.utils import dense_patch_slices

    from napari_tubular.inference import _pad_amounts

    window = 16
    monai_starts = sorted(
        {
            s[0].start
            for s in dense_patch_slices(
                (size,),
                (window,),
                (max(1, int(window * (1 - overlap))) if size > window else window,),
            )
        }
    )
    assert window_starts(size, window, overlap) == monai_starts
    starts = window_starts(size, window, overlap)
    assert starts[0] == 0
    assert starts[-1] + window == size
    assert _pad_amounts((10,), (16,)) == [(3, 3)]


@pytest.mark.parametrize(("shape", "batch"), [((40, 33, 20), 1), ((16, 50, 17), 3)])
def test_blending_of_identical_predictions_is_exact(rng, shape, batch):
    img = rng.random(shape, dtype=np.float32) * 0.98 + 0.01
    prob, scale, info = sliding_window_predict(
        img, EchoNet(k=3), (16, 16, 16), overlap=0.25, batch_size=batch
    )
    np.testing.assert_allclose(prob.numpy(), img, atol=2e-5)
    np.testing.assert_allclose(scale.numpy(), 3.0, atol=1e-4)
    assert info == {"device": "cpu", "batch_size": batch}


class RampNet(torch.nn.Module):
    """Ignores its input: seg logit = a ramp along ``axis`` of the window (not flip-equivariant)."""

    def __init__(self, axis):
        super().__init__()
        self.axis = axis
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = x.shape[2 + self.axis]
        shape = [1, 1, 1, 1, 1]
        shape[2 + self.axis] = n
        ramp = torch.linspace(-3.0, 3.0, n).view(shape).expand(x.shape).clone()
        scale = torch.zeros((x.shape[0], K + 1) + tuple(x.shape[2:]))
        scale[:, 1] = ramp[:, 0]  # class 1 more likely at the low end of the ramp
        return {"seg": ramp, "scale": scale}


@pytest.mark.parametrize("batch", [1, 2])
def test_mirroring_tta_flips_back_and_averages(rng, batch):
    """TTA output = mean over the 8 mirrorings, each flipped back: an equivariant net is
    unchanged (a flip not undone would move values), and a ramp along any axis averages with its
    mirror image to sigmoid(r)/2 + sigmoid(-r)/2 = 0.5."""
    img = rng.random((20, 18, 17), dtype=np.float32) * 0.98 + 0.01
    prob, scale, _ = sliding_window_predict(img, EchoNet(k=2), (16, 16, 16), batch_size=batch,
                                            tta=True)
    np.testing.assert_allclose(prob.numpy(), img, atol=2e-5)
    np.testing.assert_allclose(scale.numpy(), 2.0, atol=1e-4)
    img16 = rng.random((16, 16, 16), dtype=np.float32)
    for axis in range(3):
        plain, _, _ = sliding_window_predict(img16, RampNet(axis), (16, 16, 16))
        assert float(plain.max() - plain.min()) > 0.5  # a ramp (blended over the margin)
        averaged, s_avg, _ = sliding_window_predict(img16, RampNet(axis), (16, 16, 16), tta=True)
        np.testing.assert_allclose(averaged.numpy(), 0.5, atol=1e-6)
        # expected class: the mean of E[k](r) and E[k](-r), symmetric along the ramp's axis
        _, s_plain, _ = sliding_window_predict(img16, RampNet(axis), (16, 16, 16))
        assert float((s_plain - torch.flip(s_plain, (axis,))).abs().max()) > 0.1
        np.testing.assert_allclose(s_avg.numpy(), torch.flip(s_avg, (axis,)).numpy(), atol=1e-5)
        np.testing.assert_allclose(
            s_avg.numpy(), ((s_plain + torch.flip(s_plain, (axis,))) / 2).numpy(), atol=1e-5
        )


def test_predict_and_segment_pass_tta(tiny_model_file, rng):
    img = rng.normal(0, 1, (20, 20, 20)).astype(np.float32)
    plain = predict(img, model=tiny_model_file, device="cpu")
    tta = predict(img, model=tiny_model_file, device="cpu", tta=True)
    assert tta.probability.shape == plain.probability.shape
    assert not np.allclose(tta.probability, plain.probability)  # a random net is not symmetric
    res = segment(img, model=tiny_model_file, device="cpu", tta=True)
    assert res.report["parameters"]["tta"] is True
    assert segment(img, model=tiny_model_file, device="cpu").report["parameters"]["tta"] is False


def test_same_output_as_monai(rng):
    torch.manual_seed(0)
    net = TubularUNet(base_channels=2, depth=2, num_scales=K + 1).eval()
    img = rng.random((30, 20, 12), dtype=np.float32)  # x smaller than the window: padded
    ours_p, ours_s, _ = sliding_window_predict(img, net, (16, 16, 16), overlap=0.25, batch_size=2)
    mon_p, mon_s = monai_sliding_window_predict(img, net, (16, 16, 16), overlap=0.25, batch_size=2)
    assert float((ours_p - mon_p).abs().max()) < 1e-5
    assert float((ours_s - mon_s).abs().max()) < 1e-4
    assert 1.0 <= float(ours_s.min())
    assert float(ours_s.max()) <= K


def test_blending_weights_are_monais_gaussian():
    """The window weights against MONAI's own ``compute_importance_map`` (an independent
    implementation; ``test_same_output_as_monai`` hands MONAI our map, so it cannot see a wrong
    one): equal wherever MONAI does not clamp its map at 1e-3 (the window corners)."""
    from monai.data.utils import compute_importance_map

    from napari_tubular.inference import _SIGMA_SCALE, gaussian_importance_1d

    window = (16, 24, 20)
    theirs = compute_importance_map(window, mode="gaussian", sigma_scale=_SIGMA_SCALE).numpy()
    g = [gaussian_importance_1d(n) for n in window]
    ours = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    unclamped = theirs > 1.0001e-3
    assert unclamped.mean() > 0.3
    np.testing.assert_allclose(ours[unclamped], theirs[unclamped], atol=1e-6)
    assert ours.max() / ours.min() > 1e3  # the centre counts far more than the edges


def test_partial_volume_map_of_dark_tubes_mirrors_bright_ones():
    """Polarity 'dark' negates the image: a dark tube gets the fractions of the bright tube it
    mirrors, whatever the offset (a review: without the negation every labelled voxel kept
    fraction 1 and the trim did nothing)."""
    from scipy import ndimage

    from napari_tubular.inference import partial_volume_map

    zz, yy, xx = np.mgrid[:16, :32, :32]
    tube = np.hypot(yy - 15.3, xx - 16.2) <= 3.0
    bright = 40.0 + 300.0 * ndimage.gaussian_filter(tube.astype(float), 0.8)
    prob = ndimage.binary_dilation(tube, iterations=1).astype(np.float32)  # a voxel too wide
    f_bright = partial_volume_map(bright, prob, "bright")
    f_dark = partial_volume_map(-850.0 - (bright - 40.0), prob, "dark")
    np.testing.assert_allclose(f_dark, f_bright, atol=1e-4)
    rim = (prob > 0.5) & ~tube
    assert f_bright[rim].mean() < 0.6 * f_bright[tube].mean()


@pytest.mark.parametrize("scene", ["lung", "soft tissue"])
def test_dark_tubes_inside_a_bright_wall_are_not_trimmed(scene):
    """Airways in lung (lumen -1000 HU, a one-voxel -100 HU wall, parenchyma -850 HU): the
    network's mask lies inside the lumen and the trim only removed lumen (an audit: Dice 0.02-0.04
    below ``--partial-volume off`` on five phantoms), so the map is all 1 there, with a message.
    Air tubes in soft tissue (a thin 60 HU wall in -40 HU tissue) keep the trim (0.99 with it,
    0.90 without: there the mask is a voxel too wide)."""
    from scipy import ndimage

    from napari_tubular.geometry.partial_volume import wall_depth_ratio
    from napari_tubular.inference import partial_volume_map

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:16, :32, :32]
    d = np.hypot(yy - 15.3, xx - 16.2)
    lumen = d <= 3.0
    wall = (d > 3.0) & (d <= 4.0)
    bg, w, lu = (-850.0, -100.0, -1000.0) if scene == "lung" else (-40.0, 60.0, -900.0)
    img = np.where(lumen, lu, np.where(wall, w, bg))
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 15, img.shape)
    if scene == "lung":  # the network's mask: inside the lumen
        prob = (d <= 2.8).astype(np.float32)
    else:  # a voxel too wide
        prob = (d <= 4.0).astype(np.float32)
    messages = []
    frac = partial_volume_map(img, prob, "dark", messages)
    ratio = wall_depth_ratio(-img, prob > 0.5)
    if scene == "lung":
        assert ratio > 0.1
        assert np.all(frac == 1.0)
        assert any("inside a brighter wall" in m for m in messages)
        # a weaker wall (-600 HU) reads as the audit's airways did (0.16-0.37): not trimmed
        weak = np.where(lumen, lu, np.where(wall, -600.0, bg))
        weak = ndimage.gaussian_filter(weak, 0.6) + rng.normal(0, 15, img.shape)
        assert 0.1 < wall_depth_ratio(-weak, prob > 0.5) < 0.3
        assert np.all(partial_volume_map(weak, prob, "dark") == 1.0)
        # NaN columns (padding) away from the tube do not hide the wall (a mutation review)
        nan = img.copy()
        nan[:, :, 25:] = np.nan
        assert wall_depth_ratio(-nan, prob > 0.5) > 0.1
    else:
        assert ratio < 0.0
        assert frac[(prob > 0.5) & ~lumen].mean() < 0.5  # the too-wide rim is trimmed
        assert not messages


def test_radius_map_covers_the_pseudo_skeleton_when_tp_is_below_one_half():
    """The radius is kept where ``P >= min(0.5, tp)``: with T_p 0.3 every pseudo-skeleton
    voxel (P > 0.3) has the radius its sphere is drawn with, also where P < 0.5."""
    from napari_tubular.inference import mask_radius

    prob = np.array([0.1, 0.29, 0.3, 0.45, 0.5, 0.9], np.float32).reshape(1, 1, 6)
    radius = np.full(prob.shape, 2.5, np.float32)
    np.testing.assert_array_equal(mask_radius(radius, prob, 0.3)[0, 0], [0, 0, 2.5, 2.5, 2.5, 2.5])
    np.testing.assert_array_equal(mask_radius(radius, prob, 0.9)[0, 0], [0, 0, 0, 0, 2.5, 2.5])


def test_softmax_mode_sums_to_one(rng):
    torch.manual_seed(1)
    net = TubularUNet(base_channels=2, depth=2, num_scales=K + 1).eval()
    img = rng.random((20, 18, 16), dtype=np.float32)
    p1, s1, _ = sliding_window_predict(img, net, (16, 16, 16), scale_mode="softmax")
    p2, _, _ = sliding_window_predict(img, net, (16, 16, 16))
    assert s1.shape == (K + 1, 20, 18, 16)
    assert torch.allclose(s1.sum(0), torch.ones(()), atol=1e-5)
    assert torch.equal(p1, p2)


def test_predict_resamples_to_model_spacing_and_back(rng):
    """A smooth ramp survives the trip native -> model grid -> native; the radius is the class."""
    z, y, x = np.meshgrid(
        np.linspace(0.1, 0.9, 30),
        np.linspace(0.2, 0.8, 26),
        np.linspace(0.3, 0.7, 22),
        indexing="ij",
    )
    img = ((z + y + x) / 3).astype(np.float32)
    net = EchoNet(k=2)
    seen = []
    pred = predict(
        img,
        (net, _meta(spacing=(1.0, 1.0, 1.0))),
        "cpu",
        spacing=(1.5, 0.7, 0.9),
        progress=lambda d, t, m: seen.append((d, t, m)),
    )
    assert pred.probability.shape == img.shape
    assert pred.probability.dtype == np.float32
    assert pred.radius_mm.dtype == np.float32
    # interior (away from the clamped border) is reproduced closely by linear interpolation
    inner = (slice(2, -2),) * 3
    assert np.abs(pred.probability[inner] - img[inner]).max() < 0.01
    np.testing.assert_allclose(pred.radius_mm, radius_from_scale(2, 1.0), atol=1e-4)
    assert pred.model_spacing == pytest.approx((1.0, 1.0, 1.0), abs=0.05)
    assert pred.device_used == "cpu"
    windows = [(d, t) for d, t, m in seen if m == "sliding window"]
    assert windows[-1][0] == windows[-1][1] > 1
    assert [d for d, _ in windows] == sorted(d for d, _ in windows)
    assert set(pred.timings) >= {
        "load",
        "normalize",
        "resample",
        "network",
        "resample_back",
        "total",
    }


def test_argmax_mode_equals_expected_for_a_confident_scale_head(rng):
    img = rng.random((20, 20, 20), dtype=np.float32)
    a = predict(img, (EchoNet(k=4), _meta()), "cpu", scale_mode="argmax")
    b = predict(img, (EchoNet(k=4), _meta()), "cpu")
    np.testing.assert_allclose(a.radius_mm, b.radius_mm, atol=1e-4)
    np.testing.assert_allclose(a.radius_mm, radius_from_scale(4, 1.0), atol=1e-4)


def test_cancel_raises(rng):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        predict(
            rng.random((40, 40, 40), dtype=np.float32), (EchoNet(), _meta()), "cpu", cancel=cancel
        )


def test_out_of_memory_halves_the_batch(rng):
    img = rng.random((40, 40, 40), dtype=np.float32)
    net = EchoNet(k=1, oom_above=2)
    with pytest.warns(RuntimeWarning, match="batch size reduced to"):
        pred = predict(img, (net, _meta()), "cpu", batch_size=8)
    assert pred.batch_size == 2
    assert any("reduced" in m for m in pred.messages)
    ref = predict(img, (EchoNet(k=1), _meta()), "cpu", batch_size=1)
    np.testing.assert_allclose(pred.probability, ref.probability, atol=1e-6)
    assert net.batches[:3] == [8, 4, 2]


def test_later_passes_start_from_the_out_of_memory_fallback(rng, monkeypatch):
    """An outside judge: each network pass (the large-vessel pass, the intensity refit) started
    again from the device and batch size asked for. After a CUDA out-of-memory fallback to the
    CPU (the network moved there) the next pass sent its windows to CUDA: a device mismatch,
    not an out-of-memory error, and the input failed; on the CPU each pass halved the batch
    again, with its warnings."""
    import napari_tubular.inference as inference

    img = rng.random((40, 40, 40), dtype=np.float32)
    net = EchoNet(k=1, oom_above=2)
    with pytest.warns(RuntimeWarning, match="batch size reduced to"):
        pred = predict(img, (net, _meta()), "cpu", batch_size=8)
    assert pred.large_vessels["ran"]  # a second pass ran
    assert sum("reduced" in m for m in pred.messages) == 2  # 8 -> 4 -> 2, once
    assert net.batches[:3] == [8, 4, 2]
    assert max(net.batches[3:]) <= 2
    assert pred.batch_size == 2

    # the CUDA -> CPU fallback, without a GPU: the first pass reports that it ended on the CPU
    real = inference.sliding_window_predict
    asked = []

    def windows(image, net_, window, *, device, batch_size, **kwargs):
        asked.append((str(device), batch_size))
        prob, scale, _ = real(image, net_, window, device="cpu", batch_size=1, **kwargs)
        return prob, scale, {"device": "cpu", "batch_size": 1}

    monkeypatch.setattr(inference, "sliding_window_predict", windows)
    monkeypatch.setattr("napari_tubular.models.resolve_device", lambda device: "cuda")
    monkeypatch.setattr(inference, "_load", lambda model, device: model)
    pred = predict(img, (EchoNet(k=1), _meta()), "cuda")
    assert len(asked) >= 2
    assert asked[0] == ("cuda", 4)
    assert set(asked[1:]) == {("cpu", 1)}
    assert pred.device_used.startswith("cpu (fallback from cuda")


@pytest.mark.slow
def test_segment_outputs(tiny_model_file, monkeypatch):
    from napari_tubular import inference
    from napari_tubular.synthetic import make_vessel_tree

    # the tiny model's detections lie anywhere, as bright as the tissue around them: the
    # flat-component step (tested on its own) would leave nothing to check here
    monkeypatch.setattr(inference, "_suppress_flat_components", lambda *a, **k: 0.0)

    case = make_vessel_tree((24, 28, 26), (1.2, 0.9, 0.9), seed=3)
    res = segment(case.image, str(tiny_model_file), "cpu", tp=0.55, tr=0.5, spacing=case.spacing,
                  min_size_mm3=0, partial_volume=None)
    for arr, dtype in [
        (res.labels, np.uint8),
        (res.probability, np.float32),
        (res.radius_mm, np.float32),
        (res.skeleton, np.uint8),
    ]:
        assert arr.shape == case.image.shape
        assert arr.dtype == dtype
    assert set(np.unique(res.labels)) <= {0, 1}
    assert 0 <= res.probability.min()
    assert res.probability.max() <= 1
    assert np.all(res.radius_mm[res.probability < 0.5] == 0)
    np.testing.assert_array_equal(res.skeleton, (res.probability > 0.55).astype(np.uint8))
    r = res.report
    assert r["parameters"]["tp"] == 0.55
    assert r["parameters"]["refine"] is True
    assert r["model"]["K"] == K
    assert r["device"] == "cpu"
    assert r["volume_ml"] == pytest.approx(res.labels.sum() * 1.2 * 0.9 * 0.9 / 1000)
    from scipy import ndimage

    n_components = ndimage.label(res.labels, structure=np.ones((3, 3, 3)))[1]
    assert res.labels.any()  # else the checks below say little
    assert r["betti_numbers"][0] == n_components
    assert r["centerline_length_mm"] > 0
    assert r["pseudo_skeleton_voxels"] == int(res.skeleton.sum())

    plain = segment(case.image, str(tiny_model_file), "cpu", refine=False, spacing=case.spacing,
                    min_size_mm3=0, partial_volume=None)
    np.testing.assert_array_equal(
        plain.labels, (plain.probability > NO_REFINE_THRESHOLD).astype(np.uint8)
    )
    np.testing.assert_array_equal(plain.probability, res.probability)


def test_segment_uses_the_geometry_refinement_on_the_predicted_maps():
    """With a perfect 'network' (probability = soft tube profile, scale = class 3) the labels are
    exactly the geometry core's refinement of the predicted maps, inside the tube."""
    from scipy import ndimage

    from napari_tubular.geometry.spheres import refine
    from napari_tubular.synthetic import make_tube

    case = make_tube(shape=(20, 24, 24), spacing=(1.0, 1.0, 1.0), radius_mm=3.0)
    soft = ndimage.gaussian_filter(case.mask.astype(np.float32), 1.0)
    res = segment(soft, (EchoNet(k=3), _meta()), "cpu", tp=0.9, tr=0.5, partial_volume=None)
    np.testing.assert_allclose(
        res.radius_mm[res.probability > 0.5], radius_from_scale(3, 1.0), atol=1e-4
    )
    expected = refine(res.probability, res.radius_mm, (1.0, 1.0, 1.0), 0.9, 0.5).labels
    np.testing.assert_array_equal(res.labels, expected)
    assert res.labels.sum() > 0
    assert not np.any(res.labels & ~ndimage.binary_dilation(case.mask.astype(bool)))


def test_segment_removes_specks_and_uses_the_models_tuned_thresholds():
    from scipy import ndimage

    from napari_tubular.synthetic import make_tube

    case = make_tube(shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), radius_mm=3.0)
    soft = ndimage.gaussian_filter(case.mask.astype(np.float32), 0.7)
    soft[2:4, 2:4, 2:4] = 0.99  # an 8 mm^3 speck far from the tube
    meta = _meta()
    meta["metrics"] = {"refine": {"tp": 0.8, "tr": 0.3}}
    kept = segment(soft, (EchoNet(k=3), meta), "cpu", refine=False, min_size_mm3=0)
    cleaned = segment(soft, (EchoNet(k=3), meta), "cpu", refine=False, min_size_mm3=20)
    assert kept.report["betti_numbers"][0] == 2
    assert cleaned.report["betti_numbers"][0] == 1
    assert cleaned.report["parameters"]["components_removed"] == 1
    assert not cleaned.labels[2:4, 2:4, 2:4].any()
    assert not cleaned.skeleton[2:4, 2:4, 2:4].any()
    np.testing.assert_array_equal(cleaned.labels[:, 8:, 8:], kept.labels[:, 8:, 8:])
    # thresholds: the model's tuned values unless given
    assert (cleaned.report["parameters"]["tp"], cleaned.report["parameters"]["tr"]) == (0.8, 0.3)
    res = segment(soft, (EchoNet(k=3), meta), "cpu", tp=0.95)
    assert (res.report["parameters"]["tp"], res.report["parameters"]["tr"]) == (0.95, 0.3)
    res = segment(soft, (EchoNet(k=3), _meta()), "cpu")
    assert (res.report["parameters"]["tp"], res.report["parameters"]["tr"]) == (0.9, 0.5)
    with pytest.raises(ValueError, match="min_size_mm3"):
        segment(soft, (EchoNet(k=3), meta), "cpu", min_size_mm3=-1)


@pytest.mark.parametrize(
    ("volume", "kwargs", "exc", "match"),
    [
        (np.zeros((8, 8)), {}, ValueError, "3-D"),
        (np.zeros((2, 8, 8, 8)), {}, ValueError, "3-D"),
        (np.zeros((8, 8, 8)), {"spacing": (1, 0, 1)}, ValueError, "spacing"),
        (np.zeros((8, 8, 8)), {"overlap": 1.0}, ValueError, "overlap"),
        (np.zeros((8, 8, 8)), {"device": "tpu"}, ValueError, "device"),
        # an outside judge: 1.5 windows per batch was taken as 1 in silence
        (np.zeros((8, 8, 8)), {"batch_size": 1.5}, ValueError, "batch_size must be a whole"),
        (np.zeros((8, 8, 8)), {"batch_size": 0}, ValueError, "batch_size must be a whole"),
        (np.zeros((8, 8, 8)), {"batch_size": "two"}, ValueError, "batch_size must be a whole"),
        ("scan.nii.gz", {}, ValueError, "read_volume"),
    ],
)
def test_bad_inputs(volume, kwargs, exc, match):
    kw = {"device": "cpu", **kwargs}
    with pytest.raises(exc, match=match):
        predict(volume, (EchoNet(), _meta()), **kw)


def test_a_tensor_with_grad_is_taken_as_data():
    """A torch tensor that requires grad failed with torch's "Can't call numpy()" (an audit)."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(8, 8, 8, requires_grad=True)
    pred = predict(x, (EchoNet(), _meta()), device="cpu")
    assert pred.probability.shape == (8, 8, 8)


def test_bad_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict(np.zeros((8, 8, 8)), tmp_path / "missing.pt", "cpu")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    with pytest.raises(ModelFormatError, match="not a PyTorch file at all"):
        predict(np.zeros((8, 8, 8)), bad, "cpu")
    with pytest.raises(ValueError, match="tp"):
        segment(np.zeros((8, 8, 8)), (EchoNet(), _meta()), "cpu", tp=1.5)


def test_uncalibrated_intensities_give_a_warning():
    """A window-normalised model fed a 0..1 volume as it is sees a flat image: say so."""
    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    image = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)  # 0..1, not HU
    with pytest.warns(UserWarning, match="almost no contrast"):
        pred = predict(image, (EchoNet(), meta), "cpu", intensity="model")
    assert any("Hounsfield" in m for m in pred.messages)
    assert pred.intensity == {"mode": "model", "rescale": None, "refit": None,
                                "polarity": "bright", "bone_level": 700.0}
    hu = image * 800 - 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # (uniform noise: its "vessels" would measure 490 HU over their background)
        assert not predict(hu, (EchoNet(), meta), "cpu", refit_intensity=False).messages


def test_auto_intensity_rescales_unitless_volumes_only():
    """``intensity="auto"`` maps a [0, 1] volume into the window (no flat-image warning) and
    leaves a volume in Hounsfield units untouched; the map is recorded."""
    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    rng = np.random.default_rng(1)
    unit = rng.random((16, 16, 16)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # auto is the default; the vessel-fitted second pass has a test of its own
        pred = predict(unit, (EchoNet(), meta), "cpu", refit_intensity=False)
    assert any(m.startswith("intensities rescaled") for m in pred.messages)
    assert pred.intensity["refit"] is None
    info = pred.intensity["rescale"]
    assert info["to"] == [-100.0, 550.0]
    lo, hi = np.percentile(unit, [0.5, 99.9])
    assert info["from"] == pytest.approx([lo, hi], rel=1e-6)
    # EchoNet returns its normalised input as the probability: the rescaled image spans the
    # window's 1/8..15/16 instead of a 0.00125-wide sliver
    p_lo, p_hi = np.percentile(pred.probability, [0.5, 99.9])
    assert p_lo == pytest.approx(0.125, abs=0.01)
    assert p_hi == pytest.approx(0.9375, abs=0.01)
    hu = unit * 800 - 200
    pred_hu = predict(hu, (EchoNet(), meta), "cpu", refit_intensity=False)
    assert pred_hu.intensity == {"mode": "auto", "rescale": None, "refit": None,
                                "polarity": "bright", "bone_level": 700.0}
    assert not pred_hu.messages
    forced = predict(hu, (EchoNet(), meta), "cpu", intensity="rescale")
    assert forced.intensity["rescale"] is not None
    with pytest.raises(ValueError, match="intensity must be one of"):
        predict(hu, (EchoNet(), meta), "cpu", intensity="hu")


def _bright_tube_unit_image(seed=3, shape=(24, 24, 24)):
    """[0, 1]-unit image: background 0.2, a bright 0.8 square tube along x, small noise."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 0.2, np.float32)
    tube = np.zeros(shape, bool)
    tube[9:15, 9:15, :] = True
    img[tube] = 0.8
    img += rng.normal(0, 0.01, shape).astype(np.float32)
    return img, tube


def test_refit_to_vessels_maps_background_and_vessels_to_the_training_levels():
    from napari_tubular.models.normalization import REFIT_DEFAULTS, refit_to_vessels

    img, tube = _bright_tube_unit_image()
    out, info = refit_to_vessels(img, tube)
    tissue, contrast = REFIT_DEFAULTS["tissue"], REFIT_DEFAULTS["contrast"]
    from scipy import ndimage

    shell = ndimage.binary_dilation(tube, iterations=3) & ~ndimage.binary_dilation(tube)
    assert np.median(out[shell]) == pytest.approx(tissue, abs=1.0)
    assert np.percentile(out[tube], 75) == pytest.approx(tissue + contrast, abs=1.0)
    np.testing.assert_allclose(out, img * info["scale"] + info["offset"], rtol=1e-5, atol=1e-3)
    assert info["background"] == pytest.approx(0.2, abs=0.01)
    # options override the defaults
    out2, _ = refit_to_vessels(img, tube, {"tissue": 0.0, "contrast": 100.0})
    assert np.percentile(out2[tube], 75) == pytest.approx(100.0, abs=1.0)
    # nothing to fit: too few vessel voxels, or "vessels" darker than their background
    few = np.zeros_like(tube)
    few[12, 12, :3] = True
    assert refit_to_vessels(img, few)[0] is None
    assert "vessel voxels" in refit_to_vessels(img, few)[1]["skipped"]
    dark, info = refit_to_vessels(1.0 - img, tube)
    assert dark is None
    assert "not brighter" in info["skipped"]
    with pytest.raises(ValueError, match="shape"):
        refit_to_vessels(img, tube[:-1])


def test_rescaled_images_get_a_second_pass_fitted_to_the_vessels():
    """EchoNet echoes its normalised input: the first pass (robust-range rescale) puts the tube
    near the top of the window; the second pass sees the tube's background at the training
    tissue level and the tube at tissue + contrast (normalised by the -200..600 window)."""
    from napari_tubular.models.normalization import REFIT_DEFAULTS

    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    img, tube = _bright_tube_unit_image()
    first = predict(img, (EchoNet(), meta), "cpu", refit_intensity=False)
    assert first.intensity["refit"] is None
    assert np.median(first.probability[tube]) > 0.85  # ~550 HU after the robust-range map
    pred = predict(img, (EchoNet(), meta), "cpu")
    assert any("fitted to the vessels" in m for m in pred.messages)
    info = pred.intensity["refit"]
    assert info["scale"] > 0
    assert "image" not in info
    tissue, contrast = REFIT_DEFAULTS["tissue"], REFIT_DEFAULTS["contrast"]
    assert np.percentile(pred.probability[tube], 75) == pytest.approx(
        (tissue + contrast + 200) / 800, abs=0.01)
    from scipy import ndimage

    shell = ndimage.binary_dilation(tube, iterations=3) & ~ndimage.binary_dilation(tube)
    assert np.median(pred.probability[shell]) == pytest.approx((tissue + 200) / 800, abs=0.01)
    # an image in the model's units (tube 240 HU over the tissue) gets no second pass
    hu = predict(img * 400 - 40, (EchoNet(), meta), "cpu")
    assert hu.intensity["refit"] is None
    # a first pass that finds (almost) nothing: no second pass, and the report says why
    specks = np.full((24, 24, 24), 0.2, np.float32)  # flat but for 4 bright voxels
    specks[12, 12, 10:14] = 0.8
    few = predict(specks, (EchoNet(), meta), "cpu")
    assert "vessel voxels" in few.intensity["refit"]["skipped"]
    assert any("fit to the vessels skipped" in m for m in few.messages)


def test_ct_brighter_than_the_training_vessels_gets_the_second_pass():
    """In HU ('auto', no rescale): a tube 600 HU over 40 HU tissue (above the training range)
    is refitted to tissue + contrast; one 250 HU over it is left alone, quietly."""
    from napari_tubular.models.normalization import REFIT_DEFAULTS

    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    img, tube = _bright_tube_unit_image()
    bright = 40.0 + (img - 0.2) * (600.0 / 0.6)
    pred = predict(bright, (EchoNet(), meta), "cpu")
    assert pred.intensity["rescale"] is None
    assert pred.intensity["refit"]["scale"] == pytest.approx(180.0 / 600.0, rel=0.05)
    assert any("above the training range" in m for m in pred.messages)
    tissue, contrast = REFIT_DEFAULTS["tissue"], REFIT_DEFAULTS["contrast"]
    assert np.percentile(pred.probability[tube], 75) == pytest.approx(
        (tissue + contrast + 200) / 800, abs=0.01)
    usual = predict(40.0 + (img - 0.2) * (250.0 / 0.6), (EchoNet(), meta), "cpu")
    assert usual.intensity == {"mode": "auto", "rescale": None, "refit": None,
                                "polarity": "bright", "bone_level": 700.0}
    assert not usual.messages
    # 'model' means: as they are
    kept = predict(bright, (EchoNet(), meta), "cpu", intensity="model")
    assert kept.intensity["refit"] is None
    assert np.median(kept.probability[tube]) == pytest.approx(1.0, abs=1e-3)


def test_rescale_is_skipped_for_self_normalising_models():
    meta = _meta(norm={"kind": "percentile", "lower": 1.0, "upper": 99.0})
    unit = np.random.default_rng(2).random((16, 16, 16)).astype(np.float32)
    assert predict(unit, (EchoNet(), meta), "cpu").intensity["rescale"] is None
    forced = predict(unit, (EchoNet(), meta), "cpu", intensity="rescale")
    assert forced.intensity["rescale"] is None
    assert any("rescale skipped" in m for m in forced.messages)


def test_single_slice_is_refused_as_2d():
    with pytest.raises(ValueError, match="single voxel along z"):
        predict(np.zeros((1, 32, 32), np.float32), (EchoNet(), _meta()), "cpu")
    with pytest.raises(ValueError, match="single voxel along x"):
        segment(np.zeros((16, 16, 1), np.float32), (EchoNet(), _meta()), "cpu")


def test_thin_volume_and_empty_result_are_reported():
    """Few voxels along an axis: a warning; a network that finds nothing: a clear message (not
    the refinement's 'lower T_p' advice) and empty outputs."""
    image = np.zeros((6, 32, 32), np.float32)  # EchoNet: probability = image, <= 0.01
    image[3, 16, 16] = 0.01  # not constant (a constant image is not run through the network)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = segment(image, (EchoNet(), _meta()), "cpu", tp=0.7, tr=0.5)
    texts = [str(w.message) for w in caught]
    assert any("very thin" in t and "z (6 voxels)" in t for t in texts)
    assert any("found no vessel" in t for t in texts)
    assert not any("lower T_p" in t for t in texts)
    assert res.labels.sum() == 0
    assert res.skeleton.sum() == 0
    assert any("found no vessel" in m for m in res.report["messages"])
    # the message points to the dark polarity, unless it was the one used
    assert any("found no vessel" in m and "polarity 'dark'" in m for m in texts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segment(image, (EchoNet(), _meta()), "cpu", tp=0.7, tr=0.5, polarity="dark")
    assert not any("use polarity 'dark'" in str(w.message) for w in caught)
    # an ordinary volume with a vessel gets neither message
    image = np.zeros((16, 32, 32), np.float32)
    image[:, 14:18, 14:18] = 0.95
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = segment(image, (EchoNet(), _meta()), "cpu", tp=0.7, tr=0.5)
    assert not [str(w.message) for w in caught if "no vessel" in str(w.message)
                or "very thin" in str(w.message)]
    assert res.labels.sum() > 0


def test_radius_calibration_maps_through_knots():
    from napari_tubular.inference import apply_radius_calibration

    cal = {"pred_mm": [1.0, 2.0, 4.0], "true_mm": [0.5, 2.5, 4.4]}
    r = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0], np.float32)
    out = apply_radius_calibration(r, cal)
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 1.5, 2.5, 3.45, 4.4, 8.8], rtol=1e-6)
    assert apply_radius_calibration(r, None) is r
    for bad in ({"pred_mm": [2.0, 1.0], "true_mm": [1.0, 2.0]},
                {"pred_mm": [1.0, 2.0], "true_mm": [2.0, 1.0]},
                {"pred_mm": [1.0], "true_mm": [1.0]},
                # an audit: a calibration without its knots ended in "KeyError: 'pred_mm'"
                {"knots": [0.0, 10.0], "ratios": [1.0, 1.0]},
                {"pred_mm": ["a", "b"], "true_mm": [1.0, 2.0]}, [1.0, 2.0]):
        with pytest.raises(ValueError, match="invalid radius calibration"):
            apply_radius_calibration(r, bad)


def test_predict_applies_the_models_radius_calibration():
    meta = _meta()
    image = np.full((16, 16, 16), 0.9, np.float32)
    raw = predict(image, (EchoNet(k=3), meta), "cpu").radius_mm
    meta_cal = dict(meta, radius_calibration={"pred_mm": [0.5, 10.0], "true_mm": [1.0, 20.0]})
    cal = predict(image, (EchoNet(k=3), meta_cal), "cpu").radius_mm
    np.testing.assert_allclose(cal, 2 * raw, rtol=1e-5)
    off = predict(image, (EchoNet(k=3), meta_cal), "cpu", calibrate_radius=False).radius_mm
    np.testing.assert_allclose(off, raw)


def test_probability_below_tp_but_above_half_keeps_the_lower_tp_advice():
    """Vessels found (P > 0.5) but none above T_p: the refinement's own warning still speaks,
    and the 'no vessel' message does not."""
    image = np.zeros((16, 32, 32), np.float32)
    image[:, 14:18, 14:18] = 0.6  # EchoNet: probability 0.6 on the tube
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segment(image, (EchoNet(), _meta()), "cpu", tp=0.8, tr=0.5)
    texts = [str(w.message) for w in caught]
    assert any("lower T_p" in t for t in texts)
    assert not any("found no vessel" in t for t in texts)


def test_report_centerline_length_is_the_tube_length_not_the_pseudo_skeleton_size():
    """A straight tube of radius 2 mm along x, 40 mm long (anisotropic grid): the reported
    centreline length is the length of its thin skeleton (~40 mm), even when the pseudo-skeleton
    (``P > T_p`` with a low T_p) is the whole tube (the old report summed its voxel steps: metres)."""
    from napari_tubular.inference import shape_report
    from napari_tubular.synthetic import make_tube

    sp = (1.5, 0.8, 0.8)
    case = make_tube((24, 40, 60), sp, radius_mm=2.0, axis=2, length=40.0)
    mask = case.mask > 0
    rep = shape_report(mask, mask, sp)
    assert rep["centerline_length_mm"] == pytest.approx(40.0, rel=0.15)
    assert rep["pseudo_skeleton_voxels"] == int(mask.sum())
    assert rep["betti_numbers"] == [1, 0, 0]
    empty = shape_report(np.zeros_like(mask), np.zeros_like(mask), sp)
    assert empty["centerline_length_mm"] == 0.0


def test_non_finite_voxels_of_an_array_are_filled_with_a_message():
    """An array given directly (a napari layer) with NaN/inf: filled with the minimum finite
    value and said; all non-finite is refused."""
    from napari_tubular.inference import _fill_non_finite

    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 5
    data[0, 0, 0], data[1, 2, 3] = np.nan, np.inf
    messages = []
    out = _fill_non_finite(data, messages)
    assert np.isfinite(out).all()
    assert out[0, 0, 0] == out[1, 2, 3] == 6.0
    assert messages
    assert "2 of 24 voxels are NaN or infinite" in messages[0]
    clean = np.ones((2, 2, 2), np.int16)
    assert _fill_non_finite(clean, []) is clean
    with pytest.raises(ValueError, match="all 8 voxels"):
        _fill_non_finite(np.full((2, 2, 2), np.nan, np.float32), [])


def test_coarse_spacing_is_warned_and_extreme_overlap_refused(tiny_model_file, rng):
    img = rng.normal(0, 1, (12, 12, 12)).astype(np.float32)
    coarse = predict(img, model=tiny_model_file, device="cpu", spacing=(2.0, 2.0, 2.0))
    assert any("coarser than the training data" in m for m in coarse.messages)
    fine = predict(img, model=tiny_model_file, device="cpu", spacing=(2.5, 0.8, 0.8))
    assert not any("coarser" in m for m in fine.messages)
    last = predict(img, model=tiny_model_file, device="cpu", spacing=(0.8, 0.8, 2.5))
    assert not any("coarser" in m for m in last.messages)  # slices last: the same grid
    coarse_last = predict(img, model=tiny_model_file, device="cpu", spacing=(1.6, 0.8, 3.2))
    assert any("coarser than the training data" in m for m in coarse_last.messages)
    with pytest.raises(ValueError, match="overlap"):
        predict(img, model=tiny_model_file, device="cpu", overlap=0.95)


def test_uniform_volume_faces_are_not_vessels():
    """The volume's faces get a mirrored margin: uniform faces (air around a body, a flat
    phantom background) must not come out as vessel (without the margin a 64^3 40 HU volume had
    7,302 voxels with probability > 0.5 within 2 voxels of its faces). Here the faces are flat
    and the inside has 0.5 HU of noise (so the image is not constant): without the margin 854
    face voxels came out above 0.5 (stage 10), with it none (highest 0.20); stage 13 had 6
    (highest 0.57; a session-10 candidate that was not shipped had 1,611), the shipped stage 14
    none (highest 0.14); the speck filter removes a few: ``segment`` labels nothing."""
    from napari_tubular.inference import segment

    vol = np.full((64, 64, 64), 40.0, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.5, (48, 48, 48)).astype(np.float32)
    vol[8:-8, 8:-8, 8:-8] += noise
    # one network pass: segment's probability is the unrefined output of the same
    # predict(vol, model="default", device="cpu", spacing=(0.8, 0.8, 0.8), intensity="model")
    res = segment(vol, model="default", device="cpu", spacing=(0.8, 0.8, 0.8), intensity="model")
    faces = np.ones(vol.shape, bool)
    faces[2:-2, 2:-2, 2:-2] = False
    assert int(np.count_nonzero(res.probability[faces] > 0.5)) <= 20
    assert not res.labels.any()


def test_constant_volume_is_not_segmented():
    """A constant image (every voxel 40 HU) has nothing to segment: probability 0 everywhere
    and a message, not a rescale of a zero range ("range 40..40 mapped to -100..550, scale
    0.0") and advice to lower thresholds (the network alone answered its window edges with
    probabilities up to 0.5 at the faces)."""
    from napari_tubular.inference import segment

    vol = np.full((40, 40, 40), 40.0, np.float32)
    res = segment(vol, model="default", device="cpu", spacing=(0.8, 0.8, 0.8))
    assert not res.labels.any()
    assert float(res.probability.max()) == 0.0
    msgs = " ".join(map(str, res.report.get("messages", [])))
    assert "constant" in msgs
    assert "intensity units" not in msgs  # one message, not "check the units" on top
    assert "rescaled" not in msgs
    assert "lower" not in msgs


def test_oriented_image_mirrors_dark_tubes_about_the_median():
    """Polarity 'dark': ``2 * median - image`` (float32), the median kept, a dark tube made as
    much brighter; 'bright' is the image itself; NaNs do not move the median; bad names refused
    by predict and segment."""
    from napari_tubular.inference import oriented_image, segment

    img = np.full((10, 12, 14), 40.0, np.float32)
    img[4:6, 5:7, :] = -200.0  # a dark tube, 240 below the surroundings
    assert oriented_image(img, "bright") is img
    out = oriented_image(img, "dark")
    assert out.dtype == np.float32
    assert np.median(out) == 40.0
    assert np.all(out[4:6, 5:7, :] == 280.0)
    with_nan = img.copy()
    with_nan[0, 0, :3] = np.nan
    assert np.median(oriented_image(with_nan, "dark")[1:]) == 40.0
    assert oriented_image(np.arange(5, dtype=np.uint8).reshape(1, 1, 5), "dark").min() == 0.0
    for fn in (predict, segment):
        with pytest.raises(ValueError, match="polarity must be one of bright, dark"):
            fn(img, model="default", device="cpu", spacing=(1, 1, 1), polarity="negative")


def test_dark_tubes_in_a_chest_are_mirrored_about_the_lungs(rng):
    """An outside audit: a chest CT (median 24 HU, soft tissue) mirrored about its median put
    the lung at +914 and the airways at +1064 HU, above the model's window (airway Dice 0).
    In HU, with lung parenchyma in at least 5 % of the voxels under a brighter median, the
    center is the lungs' median; a crop of lung alone, soft tissue with air tubes and an image
    not in HU keep the median."""
    from napari_tubular.inference import dark_center, oriented_image, predict

    chest = rng.normal(40.0, 15.0, (24, 48, 48)).astype(np.float32)
    chest[:, 8:40, 6:22] = rng.normal(-850.0, 30.0, (24, 32, 16))  # a lung, 22 % of the volume
    chest[:, 20:23, 12:15] = -1000.0  # an airway in it
    center, what = dark_center(chest, hu=True)
    assert -880 < center < -820
    assert "lungs" in what
    out = oriented_image(chest, "dark", 40.0, center)
    assert 150 < float(np.median(out[:, 20:23, 12:15])) < 230  # the airway: bright, in window
    assert abs(float(np.median(out[:, 8:40, 6:22])) - 40.0) < 30  # the lung at tissue level
    assert dark_center(chest, hu=False)[1] == "its median"  # not in HU: the median
    lung = chest[:, 8:40, 6:22]
    assert dark_center(lung, hu=True) == (float(np.median(lung)), "its median")
    soft = rng.normal(40.0, 15.0, (24, 48, 48)).astype(np.float32)
    soft[:, 20:24, 20:24] = -900.0  # air tubes in soft tissue: 0.7 % of the voxels
    assert dark_center(soft, hu=True)[1] == "its median"
    with pytest.warns(UserWarning, match="mirrored about the lungs' median"):
        pred = predict(chest, model="default", device="cpu", spacing=(1.0, 0.8, 0.8),
                       polarity="dark")
    assert any("lungs' median" in m for m in pred.messages)


def test_outside_air_is_the_air_around_the_body_not_airways(rng):
    """``outside_air``: air below -900 HU reaching the slice edge along all three axes. A lung
    crop's airway leaving through its faces, a trachea leaving the top of a chest (enclosed by
    the neck in the slices across it) and lung noise below -900 HU are not outside air; the
    air at the corners of a chest wider than the field of view is."""
    from napari_tubular.inference import outside_air

    crop = rng.normal(-850.0, 20.0, (32, 40, 40)).astype(np.float32)  # lung to every face
    crop[:, 18:22, 18:22] = 0.0  # an airway wall
    crop[:, 19:21, 19:21] = -1000.0  # its lumen, through two faces
    crop[16, 2:38, 19:21] = 0.0
    ex = outside_air(crop)
    assert not ex[:, 19:21, 19:21].any()
    assert ex.sum() < 0.01 * ex.size  # isolated noise voxels at the faces at most
    z, y, x = np.mgrid[:32, :40, :40]
    body = ((y - 20) / 18.0) ** 2 + ((x - 20) / 26.0) ** 2 <= 1.0  # wider than the image
    chest = np.where(body, 40.0, -1000.0).astype(np.float32)
    trachea = ((y - 20) ** 2 + (x - 20) ** 2 <= 4) & (z < 20)
    chest[trachea] = -1000.0  # from the top face
    ex = outside_air(chest)
    assert not (ex & (body | trachea)).any()
    assert ex[~body].all()
    slab = outside_air(chest[10:12])  # two slices: the slices across them decide
    assert not (slab & (body | trachea)[10:12]).any()
    assert slab[~body[10:12]].all()
    assert not outside_air(np.full((8, 8, 8), 40.0, np.float32)).any()


def test_a_model_with_a_small_window_says_segmenting_is_slow(tiny_model_file):
    """The window is the model's training patch (16³ here): a volume that needs more than 64 of
    them gets a message naming the count; a volume of a few windows does not."""
    from napari_tubular.inference import predict

    big = np.random.default_rng(0).normal(40, 10, (64, 64, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"window \(its training patch, 16x16x16 voxels\) is "
                      r"small: 125 windows"):
        pred = predict(big, model=tiny_model_file, device="cpu")
    assert any("125 windows" in m for m in pred.messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(big[:20, :20, :20], model=tiny_model_file, device="cpu")
    # a large overlap multiplies the windows: said with the factor (an audit: 0.9 ran 19x
    # longer without a word)
    with pytest.warns(UserWarning, match=r"overlap 0.8: \d+ windows, \d+x the \d+ of the "):
        predict(big[:40, :40, :40], model=tiny_model_file, device="cpu", overlap=0.8)


def test_a_binary_image_is_segmented_as_0_and_1(tiny_model_file):
    """A napari layer can hold a bool image; it was refused ("must hold real numbers")."""
    from napari_tubular.inference import predict

    mask = np.zeros((20, 20, 20), bool)
    mask[:, 8:12, 8:12] = True
    a = predict(mask, model=tiny_model_file, device="cpu")
    b = predict(mask.astype(np.uint8), model=tiny_model_file, device="cpu")
    np.testing.assert_array_equal(a.probability, b.probability)


def test_unsigned_counts_that_fit_8_bits_are_not_hounsfield_units():
    """Low-count microscopy stored as uint16 (0..60) was read in HU with the bone level on (an
    audit: Dice 0.24, 0.68 rescaled); such an image is rescaled like uint8."""
    from napari_tubular.models.normalization import intensity_rescale_reason

    window = {"kind": "window", "low": -200.0, "high": 600.0}
    counts = np.random.default_rng(0).poisson(5, (16, 16, 16)).astype(np.uint16)
    counts[4:8, 4:8, :] = 60
    assert "unsigned integers no larger than 255" in intensity_rescale_reason(counts, window)
    ct = (np.random.default_rng(0).normal(40, 10, (16, 16, 16)) + 1024).astype(np.uint16)
    assert intensity_rescale_reason(ct, window) is not None  # HU + 1024: rescaled as before
    hu = np.random.default_rng(0).normal(40, 10, (16, 16, 16)).astype(np.int16)
    assert intensity_rescale_reason(hu, window) is None


def test_a_negative_bone_level_is_refused():
    with pytest.raises(ValueError, match="bone_level must be >= 0"):
        predict(np.arange(512.0).reshape(8, 8, 8), (EchoNet(), _meta()), device="cpu",
                bone_level=-2000)


WINDOW = {"kind": "window", "low": -200.0, "high": 600.0}


def _neck(rng, air: bool = False):
    """Tissue at 40 HU with one 350 HU artery along z and a 1000 HU bone block beside it (no
    air unless asked): an audit's carotid next to a vertebra, in HU."""
    hu = rng.normal(40.0, 10.0, (24, 32, 32))
    zz, yy, xx = np.mgrid[:24, :32, :32]
    artery = (yy - 10) ** 2 + (xx - 10) ** 2 <= 9
    hu[artery] = rng.normal(350.0, 10.0, int(artery.sum()))
    hu[4:20, 14:30, 14:30] = rng.normal(1000.0, 10.0, (16, 16, 16))
    if air:
        hu[:, :, :3] = -1000.0 + rng.normal(0.0, 5.0, (24, 32, 3))
    return hu, artery


def test_uint16_mr_with_tissue_near_1000_keeps_its_vessels(rng):
    """A review: reading unsigned 0..4095 images whose bulk minus 1024 is tissue as raw CT
    (HU + 1024) made a uint16 MR angiogram (tissue 1000 counts, vessels 2500) 1476 HU vessels,
    which the bone step removed (Dice 0.84 -> 0.01). Such an image is rescaled, bone step off."""
    img = rng.normal(1000.0, 20.0, (24, 32, 32))
    zz, yy, xx = np.mgrid[:24, :32, :32]
    vessel = (yy - 16) ** 2 + (xx - 16) ** 2 <= 9
    img[vessel] = 2500.0
    pred = predict(img.astype(np.uint16), (EchoNet(), _meta(norm=WINDOW)), device="cpu")
    assert pred.intensity["rescale"] is not None
    assert pred.intensity["rescale"]["levels"] != "HU + 1024"
    assert (pred.probability[vessel] > 0.5).mean() > 0.95
    res = segment(img.astype(np.uint16), (EchoNet(), _meta(norm=WINDOW)), "cpu", refine=False,
                  partial_volume=None)
    assert res.report["parameters"]["bone_level"] is None
    assert res.labels[vessel].mean() > 0.95


def test_bone_level_off_keeps_bone_out_of_the_intensity_fit(rng):
    """An audit: with the bone step off, the CTA refit took the vertebra (737 HU) for the
    vessels and the second pass dimmed the real 350 HU artery (recall 0.99 -> 0.50)."""
    hu, artery = _neck(rng)
    pred = predict(hu, (EchoNet(), _meta(norm=WINDOW)), device="cpu", bone_level=None)
    assert pred.intensity["refit"] is None  # 350 HU over 40: within the training contrast
    assert (pred.probability[artery] > 0.5).mean() > 0.95
    assert (pred.probability[6:18, 16:28, 16:28] > 0.5).all()  # 'off' keeps the bone


def test_bone_step_spares_bias_lifted_vessels_of_an_image_without_negative_values(rng):
    """An outside audit: an MR angiogram (uint16 0-849, background 190, vessels 570 with a
    bias field, a twentieth above 700) is taken in HU; the bone step removed 0.31 mL of its
    vessels (Dice 0.97 -> 0.88). In an image without a value below 0 the level is at least
    twice the median of what was found; a 1200 HU block beside 300 HU vessels is still bone."""
    from napari_tubular.inference import _suppress_bone

    zz, yy, xx = np.mgrid[:24, :48, :64]
    vessel = np.zeros(zz.shape, bool)
    for cy, cx in ((12, 12), (12, 36), (36, 12), (24, 24), (38, 38)):
        vessel |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
    bias = np.where((yy > 32) & (xx > 32) & (xx < 44), 1.35, 1.0)  # one corner of the field lifted
    img = np.where(vessel, 560.0 * bias, 190.0) + rng.normal(0.0, 10.0, vessel.shape)
    img = np.clip(img, 0, None)
    # one vessel in five lifted above 700 "HU": under the majority that keeps everything
    assert 0.1 < (img[vessel] > 700).mean() < 0.25
    prob = vessel.astype(np.float32)
    messages: list = []
    with pytest.warns(UserWarning, match="bone level raised"):
        removed = _suppress_bone(prob, img, 700.0, (1.0, 1.0, 1.0), messages)
    assert removed == 0.0
    assert (prob[vessel] == 1.0).all()
    # bone beside ordinary contrast in an image without negatives: still removed
    img2 = np.where(vessel, 300.0, 40.0) + rng.normal(0.0, 5.0, vessel.shape)
    block = np.zeros_like(vessel)
    block[8:16, 20:28, 52:60] = True
    img2[block] = 1200.0
    img2 = np.clip(img2, 0, None)
    prob2 = (vessel | block).astype(np.float32)
    with pytest.warns(UserWarning, match="is bone"):
        removed = _suppress_bone(prob2, img2, 700.0, (1.0, 1.0, 1.0), [])
    assert removed > 0
    assert not (prob2[block] > 0.5).any()
    assert (prob2[vessel] == 1.0).all()
    # a review: the majority rule is decided at the level asked for, before it is raised (an
    # artery at 2200, a fifth of what was found, beside 900 "HU" vessels was removed)
    img3 = np.where(vessel, 900.0, 100.0)
    img3[block] = 2200.0
    prob3 = (vessel | block).astype(np.float32)
    with pytest.warns(UserWarning, match="taken as vessels"):
        assert _suppress_bone(prob3, img3, 700.0, (1.0, 1.0, 1.0), []) == 0.0
    assert (prob3 == (vessel | block)).all()


def test_second_pass_fits_the_vessels_the_bone_step_keeps_in_an_image_without_negatives(rng):
    """An outside audit: a uint16 MR angiogram (tissue 120, vessels 500-1100, no value below 0)
    is read in HU; the bone step rightly kept its bright vessels (a third of what was found
    above 700), but the second pass's fit left every found voxel above 700 out, measured too
    little contrast and did not run (Dice 0.58; 0.68 with the fit). The fit now follows the
    bone step's decision; in CT (values below 0) bone-bright voxels stay out of it."""
    from napari_tubular.inference import _refit_pass

    zz, yy, xx = np.mgrid[:24, :40, :40]
    vessel = np.zeros(zz.shape, bool)
    levels = (520.0, 900.0, 1100.0, 600.0)
    img = rng.normal(120.0, 10.0, zz.shape)
    for (cy, cx), v in zip(((10, 10), (10, 30), (30, 10), (30, 30)), levels):
        tube = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
        vessel |= tube
        img[tube] = v + rng.normal(0.0, 10.0, int(tube.sum()))
    img = np.clip(img, 0, None)
    prob = vessel.astype(np.float32)
    meta = _meta(norm=WINDOW)
    info = _refit_pass(img, prob, (1.0, 1.0, 1.0), meta, [], only_above_training=True,
                       bone_level=700.0)
    assert info["go"]
    assert info["vessel"] - info["background"] > 600  # the bright vessels counted
    # CT: the same picture with air (values below 0) -> the 900-1100 tubes are bone, left out
    ct = img.copy()
    ct[:, :, :2] = -1000.0
    info = _refit_pass(ct, prob, (1.0, 1.0, 1.0), meta, [], only_above_training=True,
                       bone_level=700.0)
    assert info["vessel"] < 700


def test_bone_step_lowers_its_level_in_ct_without_contrast_agent(rng):
    """An outside audit's non-contrast chest: thin ribs, whose blurred cortex peaks under 700
    HU, were labelled vessel (the bone step never fired; Dice 0.73, 0.83 with --bone-level
    400). In CT whose found voxels have a median under 150 HU (no contrast agent) the level is
    350; small calcifications inside such vessels stay; contrast-enhanced CT keeps 700."""
    from napari_tubular.inference import _suppress_bone

    zz, yy, xx = np.mgrid[:24, :48, :48]
    img = rng.normal(-850.0, 20.0, zz.shape)  # lung
    vessel = np.zeros(zz.shape, bool)
    for cy, cx in ((10, 10), (10, 30), (30, 10)):
        vessel |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
    img[vessel] = rng.normal(40.0, 15.0, int(vessel.sum()))
    plaque = vessel & (zz == 12) & (yy <= 8) & (xx < 20)  # a 1-2 mm calcification
    img[plaque] = 450.0
    rib = ((yy - 34) ** 2 + (xx - 34) ** 2 <= 16) & ((yy - 34) ** 2 + (xx - 34) ** 2 >= 4)
    img[rib] = 600.0  # a thin cortex, under 700
    found = vessel | rib
    prob = found.astype(np.float32)
    decided: dict = {}
    with pytest.warns(UserWarning, match="bone level lowered from 700 to 350"):
        removed = _suppress_bone(prob, img, 700.0, (1.0, 1.0, 1.0), [], decided)
    assert removed > 0
    assert decided == {"bone_level": 350.0}  # what the report records (it said 700)
    assert not (prob[rib] > 0.5).any()
    assert (prob[vessel] == 1.0).all()  # the plaques' vessels kept
    # with contrast agent (vessels at 300 HU) the level stays 700: the 600 HU ring is kept
    img2 = img.copy()
    img2[vessel & ~plaque] = 300.0
    prob2 = found.astype(np.float32)
    assert _suppress_bone(prob2, img2, 700.0, (1.0, 1.0, 1.0), []) == 0.0
    assert (prob2 == found).all()
    # a level asked for below 350 is kept as it is
    prob3 = found.astype(np.float32)
    _suppress_bone(prob3, img, 300.0, (1.0, 1.0, 1.0), [])
    assert not (prob3[rib] > 0.5).any()


def test_bone_step_keeps_blurred_contrast_vessels_in_ct(rng):
    """An outside audit: contrast-filled vessels (348 HU on 21 HU tissue), blurred, whose found
    voxels reach far into the blurred edges (plain median 149 HU, under the non-contrast rule's
    150), were taken as CT without contrast agent and removed as bone (Dice 0.68, 0.81 with
    --bone-level off). The rule reads the vessels' peak level (the median of the 3x3x3 maximum
    of the lightly smoothed image over the found voxels): the level stays 700."""
    from scipy import ndimage

    from napari_tubular.inference import _found_peak_median, _suppress_bone, bone_decision

    zz, yy, xx = np.mgrid[:32, :64, :64]
    vessel = np.zeros(zz.shape, bool)
    for cy, cx, r in ((16, 16, 5), (16, 44, 3), (44, 30, 2)):
        vessel |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = np.where(vessel, 348.0, 21.0)
    img[:, 60:, :] = -1000.0  # air at one side: CT in HU
    img = ndimage.gaussian_filter(img, 1.5) + rng.normal(0, 15, zz.shape)
    found = ndimage.binary_dilation(vessel, iterations=2)  # the network's wide, blurred edge
    assert float(np.median(img[found])) < 150  # precondition: the plain median misreads it
    assert _found_peak_median(img, found) > 200
    assert bone_decision(img, found, 700.0) == (700.0, "")
    prob = found.astype(np.float32)
    decided: dict = {}
    assert _suppress_bone(prob, img, 700.0, (1.0, 1.0, 1.0), [], decided) == 0.0
    assert decided == {"bone_level": 700.0}
    assert (prob == found).all()


def test_air_edge_step_removes_tissue_beside_air_and_keeps_vessels(rng):
    """What the network found along a body's edge against air (tissue at the tissue level) is
    removed with the low-contrast region it belongs to; a contrast-filled vessel touching the
    edge and a 40 HU vessel in air-dark lung parenchyma (no tissue around it to compare with)
    are kept."""
    from scipy import ndimage

    from napari_tubular.inference import _suppress_air_edges

    zz, yy, xx = np.mgrid[:24, :96, :96].astype(float)
    r = np.hypot(yy - 48, xx - 48)
    body = r <= 30
    lung = np.hypot(yy - 48, xx - 40) <= 12  # a lung inside the body
    img = np.where(body, 40.0, -1000.0)
    img[lung] = -850.0
    rim = body & (r > 26) & (xx < 48)  # half the outline, 4 voxels deep
    vessel = np.hypot(yy - 48, xx - 75.0) <= 2.0  # a voxel of tissue from the air
    lung_vessel = np.hypot(yy - 48, xx - 40) <= 2.0
    img[vessel] = 340.0
    img[lung_vessel] = 40.0
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 10, img.shape)
    prob = (rim | vessel | lung_vessel).astype(np.float32)
    messages: list = []
    with pytest.warns(UserWarning, match="body's edge"):
        ml = _suppress_air_edges(prob, img, (1.0, 1.0, 1.0), messages)
    assert ml == pytest.approx(rim.sum() / 1000.0, rel=0.05)
    assert (prob[rim] == 0).mean() > 0.95
    assert (prob[vessel] == 1).all()
    assert (prob[lung_vessel] == 1).all()
    # no air: nothing to do
    prob2 = rim.astype(np.float32)
    assert _suppress_air_edges(prob2, np.where(body, 40.0, -100.0), (1.0, 1.0, 1.0), []) == 0.0
    assert (prob2 == rim).all()


@pytest.mark.parametrize("noise", [5.0, 15.0, 30.0])
def test_flat_components_are_not_vessels(rng, noise):
    """A found component no brighter than the tissue around it (the network answered the last
    slices of a body in air with one: 0.02-0.22 mL at 3-18 HU above the tissue) is removed;
    vessels 50 and 300 HU above the tissue, found with the same probability, are kept, and so
    is a found blob of 40 HU contrast in noise of 30 HU (a faint vessel is not flat)."""
    from scipy import ndimage

    from napari_tubular.inference import _suppress_flat_components

    zz, yy, xx = np.mgrid[:40, :64, :64].astype(float)
    img = np.full(zz.shape, 40.0)
    bright = np.hypot(yy - 16, xx - 16) <= 2.5
    faint = np.hypot(yy - 48, xx - 16) <= 2.5
    dim = np.hypot(zz - 20, yy - 16) <= 2.5
    dim &= xx > 30
    img[bright] = 340.0
    img[faint] = 90.0
    img[dim] = 80.0
    flat = (np.abs(zz - 33) <= 3) & (np.abs(yy - 48) <= 4) & (np.abs(xx - 48) <= 6)
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, noise, img.shape)
    prob = np.where(bright | faint | dim | flat, 0.95, 0.01).astype(np.float32)
    messages: list = []
    with pytest.warns(UserWarning, match="no brighter than the tissue around it"):
        ml = _suppress_flat_components(prob, img, (1.0, 1.0, 1.0), messages)
    assert ml == pytest.approx(flat.sum() / 1000.0)
    assert (prob[flat] == 0).all()
    assert (prob[bright | faint | dim] == np.float32(0.95)).all()
    assert "1 component(s)" in messages[0]
    # nothing flat: nothing done, nothing said
    prob2 = np.where(bright | faint, 0.95, 0.0).astype(np.float32)
    assert _suppress_flat_components(prob2, img, (1.0, 1.0, 1.0), []) == 0.0
    assert (prob2[bright | faint] == np.float32(0.95)).all()


def test_air_edge_step_leaves_a_low_contrast_vessel_that_passes_gas(rng):
    """A review: a vessel 50 HU above its tissue (non-contrast, or early portal phase) with one
    end beside bowel gas lost its whole length (the low-contrast region connected to the seed
    went); now only what lies within AIR_EDGE_REACH_MM of the air may go."""
    from scipy import ndimage

    from napari_tubular.inference import AIR_EDGE_REACH_MM, _suppress_air_edges

    zz, yy, xx = np.mgrid[:16, :48, :96].astype(float)
    img = np.zeros(zz.shape)
    vessel = np.hypot(zz - 8, yy - 24) <= 2.5
    img[vessel] = 55.0
    gas = np.hypot(np.hypot(zz - 8, yy - 24), xx - 6) <= 4.0  # a gas pocket at the x = 0 end
    img[gas] = -1000.0
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 8, img.shape)
    prob = (vessel & ~gas).astype(np.float32)
    with pytest.warns(UserWarning, match="body's edge"):
        _suppress_air_edges(prob, img, (1.0, 1.0, 1.0), [])
    far = vessel & (xx > 10 + AIR_EDGE_REACH_MM + 1)
    assert (prob[far] == 1).all()
    assert (prob[vessel & ~gas] == 1).mean() > 0.75


def test_8_bit_exports_with_a_black_border_are_rescaled(rng):
    """An audit: an 8-bit windowed export whose clipped air touches the border was taken for
    padding, filled in a float32 copy, and then never seen as 8-bit (read as HU, bone level
    on)."""
    img = rng.normal(90.0, 5.0, (24, 32, 32))
    img[:, 12:16, 12:16] = 200.0
    img[:, :, :6] = 0.0  # clipped air at the edge: "padding"
    img = np.clip(img, 0, 255).astype(np.uint8)
    pred = predict(img, (EchoNet(), _meta(norm=WINDOW)), device="cpu")
    assert any("padding" in m for m in pred.messages)
    assert pred.intensity["rescale"] is not None
    assert any("8-bit" in m for m in pred.messages)


def test_a_model_trained_on_8_bit_data_takes_8_bit_input_as_it_is(rng):
    """An outside review: a model trained on uint8 data with the window 0..255 had its uint8
    input "rescaled" (its robust range stretched into the window), as if it were a CT model
    given an 8-bit export. The input is in the window's units: taken as it is. An image
    scaled to [0, 1], or counts whose bulk lies far above the window, are still rescaled."""
    eight_bit = {"kind": "window", "low": 0.0, "high": 255.0}
    img = rng.normal(30.0, 5.0, (24, 32, 32))
    img[:, 12:16, 12:16] = 200.0
    img = np.clip(img, 0, 255).astype(np.uint8)
    model = (EchoNet(), _meta(norm=eight_bit))
    pred = predict(img, model, device="cpu", large_vessels=False)
    assert pred.intensity["rescale"] is None
    assert not any("rescaled" in m for m in pred.messages), pred.messages
    # EchoNet answers its normalised input: the window's map of the raw values
    np.testing.assert_allclose(pred.probability, np.clip(img / 255.0, 1e-6, 1 - 1e-6),
                               atol=1e-4)
    # stored as uint16, or as floats in the same units: the same
    for same in (img.astype(np.uint16), img.astype(np.float32)):
        assert predict(same, model, device="cpu", large_vessels=False).intensity[
            "rescale"] is None
    # the cases the rescale is for
    unit = predict(img / 255.0, model, device="cpu", large_vessels=False)
    assert unit.intensity["rescale"] is not None
    assert any("narrower" in m for m in unit.messages)
    counts = (img.astype(np.float32) * 20 + 800).astype(np.uint16)  # bulk ~1400
    far = predict(counts, model, device="cpu", large_vessels=False)
    assert far.intensity["rescale"] is not None
    assert any("outside the model's window 0..255" in m for m in far.messages)
    # a CT model given the same 8-bit image still rescales it
    ct = predict(img, (EchoNet(), _meta(norm=WINDOW)), device="cpu", large_vessels=False)
    assert ct.intensity["rescale"] is not None
    assert any("8-bit" in m for m in ct.messages)


def test_segment_drops_blob_like_components(rng):
    """A ball beside a tube (a bright distractor, an enhancing organ) is not a tube: dropped
    with a message and recorded in the report; blob_ratio None keeps it."""
    img = rng.normal(40.0, 5.0, (48, 48, 48))
    img[2:46, 4:12, 4:12] = 400.0
    zz, yy, xx = np.mgrid[:48, :48, :48]
    ball = (zz - 24) ** 2 + (yy - 34) ** 2 + (xx - 34) ** 2 <= 36
    img[ball] = 400.0
    model = (EchoNet(), _meta(norm=WINDOW))
    res = segment(img, model, "cpu", refine=False, partial_volume=None)
    assert not res.labels[ball].any()
    assert res.labels[10:40, 6:10, 6:10].all()
    assert res.report["parameters"]["blob_ratio"] == 0.5
    assert len(res.report["parameters"]["blobs_removed"]) == 1
    assert any("blob-like" in m for m in res.report["messages"])
    kept = segment(img, model, "cpu", refine=False, partial_volume=None, blob_ratio=None)
    assert kept.labels[ball].all()
    assert kept.report["parameters"]["blob_ratio"] is None


def test_dark_tube_rescale_messages_name_the_mirrored_image(rng):
    """An audit: in dark mode the rescale's reason ("unsigned integers no larger than 255") was
    computed on the mirrored image but read as the input's (maximum 817), and an MR image was
    said to be "placed at 40, the training tissue level"."""
    img = np.where(rng.random((16, 24, 24)) < 0.5, 20, 600).astype(np.uint16)
    img[:, 10:13, 10:13] = 80  # a dark tube
    img[0, 0, 0] = 817
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = predict(img, (EchoNet(), _meta(norm=WINDOW)), "cpu", polarity="dark")
    rescaled = [m for m in pred.messages if m.startswith("intensities rescaled")]
    assert rescaled
    assert all("in the image mirrored for dark tubes" in m for m in rescaled)
    assert not any("training tissue level" in m for m in pred.messages)  # not CT in HU


def test_the_confidence_filter_default_follows_the_models_tuning():
    """The default level is the model's own: off without tuned thresholds, 0.99 for a model
    tuned before the filter was tuned (the shipped one), and what tuning stored otherwise,
    including off (a note says why)."""
    from napari_tubular.inference import (
        DEFAULT_MIN_CONFIDENCE,
        MODEL_MIN_CONFIDENCE,
        effective_min_confidence,
        tuned_min_confidence,
    )

    untuned = {"metrics": {}}
    legacy = {"metrics": {"refine": {"tp": 0.6, "tr": 0.6}}}
    off = {"metrics": {"refine": {"tp": 0.7, "tr": 0.5, "min_confidence": None}}}
    on = {"metrics": {"refine": {"tp": 0.7, "tr": 0.5, "min_confidence": 0.99}}}
    assert tuned_min_confidence(untuned) is None
    assert tuned_min_confidence(legacy) == DEFAULT_MIN_CONFIDENCE
    assert tuned_min_confidence(off) is None
    assert tuned_min_confidence(on) == 0.99
    by_train = {"metrics": {"refine": {"tp": 0.7, "tr": 0.5, "source": "train validation"}}}
    assert tuned_min_confidence(by_train) is None  # an older train did not measure the level
    by_train_since = {"metrics": {"refine": {"tp": 0.7, "tr": 0.5, "source": "train validation",
                                             "min_confidence": 0.9}}}
    assert tuned_min_confidence(by_train_since) == 0.9  # the level train chose
    assert effective_min_confidence(MODEL_MIN_CONFIDENCE, by_train_since) == 0.9
    notes = []
    assert effective_min_confidence(MODEL_MIN_CONFIDENCE, by_train, notes) is None
    assert notes[0].startswith("the model's thresholds were tuned by an earlier train")
    notes = []
    assert effective_min_confidence(MODEL_MIN_CONFIDENCE, off, notes) is None
    assert len(notes) == 1
    assert "tuning on its validation volumes" in notes[0]
    notes = []
    assert effective_min_confidence(MODEL_MIN_CONFIDENCE, untuned, notes) is None
    assert notes[0].startswith("the model holds no tuned thresholds")
    assert effective_min_confidence(MODEL_MIN_CONFIDENCE, legacy) == DEFAULT_MIN_CONFIDENCE
    assert effective_min_confidence(0.9, off) == 0.9  # a level given explicitly applies
    assert effective_min_confidence(None, legacy) is None
    # the default's own number given explicitly applies too (an audit: --min-confidence 0.99,
    # as the note for a model of one's own advised, was taken for the default: off)
    notes = []
    assert effective_min_confidence(DEFAULT_MIN_CONFIDENCE, untuned, notes) == 0.99
    assert effective_min_confidence(DEFAULT_MIN_CONFIDENCE, off, notes) == 0.99
    assert notes == []
    with pytest.raises(ValueError, match="the model's own"):
        effective_min_confidence("high", legacy)


def test_the_large_vessel_pass_says_the_spacing_it_resamples_to(rng):
    """An outside judge: its progress line said "resampling (64, 64, 64) -> (32, 32, 32) (model
    spacing (0.8, 0.8, 0.8) mm)" of a resampling to 1.6 mm."""
    img = rng.random((40, 40, 40), dtype=np.float32)
    said = []
    pred = predict(img, (EchoNet(k=1), _meta()), "cpu",
                   progress=lambda done, total, message: said.append(message))
    assert pred.large_vessels["ran"]
    coarse = [m for m in said if m.startswith("resampling") and "large-vessel" in m]
    assert coarse
    assert "(spacing (2.0, 2.0, 2.0) mm)" in coarse[0]
    assert "model spacing (1.0" not in coarse[0]


@pytest.mark.parametrize("factor", [1e300, 1e40, -1e300, 1e-300])
def test_intensities_beyond_float32_are_refused_up_front(tiny_model_file, rng, factor):
    """An outside judge: a float64 CT multiplied by 1e300 ended in "prob holds only NaN" (then
    "scale classes hold NaN or inf"); by 1e40 it was segmented from overflowed values with
    numpy's "overflow encountered in cast", by 1e-300 (all below float32's smallest number) it
    failed as 1e300 did. Refused before the network, naming the range and float32; values that
    float32 holds (a float32 image times 1e30) are still segmented."""
    img = rng.normal(40.0, 20.0, (12, 12, 12))
    with pytest.raises(ValueError, match="float32") as info:
        predict(img * factor, model=tiny_model_file, device="cpu")
    assert "scale the image" in str(info.value)
    ok = predict((img * 1e30).astype(np.float32), model=tiny_model_file, device="cpu")
    assert np.isfinite(ok.probability).all()


def test_micrometre_voxels_are_said_with_the_spacing_to_give(tiny_model_file):
    """An outside judge: a NIfTI in micrometres (xyzt_units), read right as 0.002 x 0.0003 x
    0.0003 mm, was only asked "micrometres stored as mm?"; the message now says what the
    voxels are and the --spacing that segments such a stack."""
    from napari_tubular.inference import _check_model_grid

    with pytest.raises(ValueError, match=r"2 0\.3 0\.3 micrometres.*--spacing 2 0\.3 0\.3"):
        _check_model_grid((40, 128, 128), (0.002, 0.0003, 0.0003), (0.8, 0.8, 0.8))
    with pytest.raises(ValueError, match=r"give the spacing 1 0\.5 0\.5 \(") as info:
        _check_model_grid((40, 64, 64), (0.001, 0.0005, 0.0005), (0.8, 0.8, 0.8),
                          task="train on")
    before = str(info.value).split("If the spacing, read in millimetres, is wrong")[0]
    assert "--spacing" not in before
    # a volume thin in voxels but not in micrometres keeps its own message, without this
    with pytest.raises(ValueError, match="too thin") as info:
        _check_model_grid((2, 64, 64), (0.001, 0.0003, 0.0003), (0.8, 0.8, 0.8))
    assert "micrometres (z y x" not in str(info.value)


def test_micrometre_message_does_not_ask_whether_the_spacing_is_millimetres():
    """An outside judge: for a header in micrometres, the message said "The voxels are 2 0.3
    0.3 micrometres" and then still asked "Is the spacing in millimetres (micrometres stored
    as mm?)?", and gave the micrometre advice twice. It now says what the voxels are, the
    --spacing to give, and how to fix a wrong spacing, once each; a spacing too coarse (or a
    small volume at a clinical spacing) keeps the question."""
    from napari_tubular.inference import _check_model_grid

    with pytest.raises(ValueError) as info:
        _check_model_grid((40, 128, 128), (0.002, 0.0003, 0.0003), (0.8, 0.8, 0.8))
    text = str(info.value)
    assert "Is the spacing in millimetres" not in text
    assert text.count("micrometres written as mm") == 1
    assert ("If the spacing, read in millimetres, is wrong instead, give the right one: "
            "--spacing Z Y X") in text
    for shape, spacing in (((20, 20, 20), (0.06, 0.06, 0.06)), ((40, 40, 40), (800, 800, 1000))):
        with pytest.raises(ValueError, match=r"Is the spacing in millimetres") as info:
            _check_model_grid(shape, spacing, (0.8, 0.8, 0.8))
        assert "The voxels are" not in str(info.value)


def test_far_finer_spacing_than_the_model_is_warned(tiny_model_file):
    """An outside judge: a neuron stack at 1 x 0.1 x 0.1 mm (processes 1-3 voxels wide) came
    back empty with advice about specks and dark polarity and nothing about its voxels being 8
    times finer than the model's grid, where such processes vanish."""
    from napari_tubular.io import Volume

    vol = np.random.default_rng(0).normal(40.0, 10.0, (20, 120, 120)).astype(np.float32)
    fine = segment(Volume(vol, spacing=(1.0, 0.15, 0.15)), model=tiny_model_file,
                   device="cpu", min_size_mm3=0)
    said = [m for m in fine.report["messages"] if "finer than the model" in m]
    assert len(said) == 1
    assert "microscopy" in said[0]
    assert "--spacing" in said[0]
    usual = segment(Volume(vol[:, :40, :40], spacing=(1.0, 0.5, 0.5)), model=tiny_model_file,
                    device="cpu", min_size_mm3=0)
    assert not any("finer than the model" in m for m in usual.report["messages"])


def _counts_image(fibre=400.0, seed=5, shape=(24, 24, 24)):
    """uint16 microscopy-like counts: Poisson background near 100, a bright fibre along x."""
    rng = np.random.default_rng(seed)
    lam = np.full(shape, 100.0)
    fib = np.zeros(shape, bool)
    fib[10:13, 10:13, :] = True
    lam[fib] = fibre
    return rng.poisson(lam).astype(np.uint16), fib


def test_dark_polarity_advice_leaves_the_padding_out():
    """An outside judge: a stack of bright fibres whose field of view is padded with zeros
    (a solid dark region at the volume's edge) kept the advice to try polarity 'dark': the
    padding counted as something darker than the image's bulk. It is left out now; dark
    tubes inside a padded image still keep the advice."""
    from napari_tubular.inference import _only_bright_outliers
    from napari_tubular.models.padding import padding_mask

    bright, _ = _counts_image(fibre=400.0)
    dark, _ = _counts_image(fibre=10.0)
    for image, expected in ((bright, True), (dark, False)):
        padded = np.pad(image, ((0, 0), (0, 0), (6, 6)))  # zeros outside the field of view
        assert padding_mask(padded) is not None
        assert _only_bright_outliers(padded) is expected


def test_unsigned_counts_taken_in_hu_are_said_so():
    """An outside judge: a uint16 stack, background near 100 counts with a fibre of 400, was
    segmented as CT in HU without a word (its bulk lies in the soft-tissue band); the note says
    what was assumed. The same values as float (a CT crop in HU) or as CT with air, and the
    other intensity modes, keep quiet."""
    from napari_tubular.inference import UNITS_NOTE

    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    counts, _ = _counts_image()
    pred = predict(counts, (EchoNet(), meta), "cpu")
    assert pred.intensity["rescale"] is None  # the decision is unchanged: in HU
    said = [m for m in pred.messages if m.startswith(UNITS_NOTE)]
    assert len(said) == 1, pred.messages
    assert "uint16" in said[0]
    assert "intensity 'rescale'" in said[0]
    for other in (predict(counts.astype(np.float32), (EchoNet(), meta), "cpu"),
                  predict(counts, (EchoNet(), meta), "cpu", intensity="model"),
                  predict(counts.astype(np.int16) - np.int16(1000) * (counts < 80), (EchoNet(),
                          meta), "cpu")):
        assert not any(m.startswith(UNITS_NOTE) for m in other.messages), other.messages
    rescaled = predict(counts, (EchoNet(), meta), "cpu", intensity="rescale")
    assert not any(m.startswith(UNITS_NOTE) for m in rescaled.messages)
    # a model trained on 8-bit data has no HU to assume
    eight = _meta(norm={"kind": "window", "low": 0.0, "high": 255.0})
    assert not any(m.startswith(UNITS_NOTE)
                   for m in predict(counts, (EchoNet(), eight), "cpu").messages)


def test_empty_labels_advise_dark_polarity_only_where_tubes_may_be_dark():
    """An outside judge: the empty-labels message said "for tubes darker than their
    surroundings ... use polarity 'dark'" for bright neurons on a dark background. The advice
    stays where something darker than the image's bulk stands out (or nothing does)."""
    from napari_tubular.inference import _only_bright_outliers

    meta = _meta(norm={"kind": "window", "low": -200.0, "high": 600.0})
    bright, _ = _counts_image(fibre=400.0)
    dark, _ = _counts_image(fibre=10.0)
    noise, _ = _counts_image(fibre=100.0)
    assert _only_bright_outliers(bright)
    assert not _only_bright_outliers(dark)
    assert not _only_bright_outliers(noise)
    one_hot = noise.copy()
    one_hot[3, 3, 3] = 5000  # a hot pixel is no structure
    assert not _only_bright_outliers(one_hot)
    air = bright.astype(np.float32)
    air[:, :, :2] = -1000.0  # bright fibre in CT with air beside it: airways possible
    assert not _only_bright_outliers(air)
    assert _only_bright_outliers(np.where(bright > 300, 1.0, 0.0).astype(np.float32))  # no noise

    class Nothing(EchoNet):  # finds nothing
        def forward(self, x):
            out = super().forward(x)
            return {"seg": out["seg"] * 0 - 20.0, "scale": out["scale"]}

    for image, advised in ((bright, False), (dark, True), (noise, True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = segment(image, (Nothing(), meta), "cpu", tp=0.7, tr=0.5,
                          large_vessels=False)
        empty = [m for m in res.report["messages"] if "found no vessel" in m]
        assert len(empty) == 1, res.report["messages"]
        assert ("polarity 'dark'" in empty[0]) == advised, empty[0]


def test_removal_notes_say_how_to_keep_the_components():
    """The command line's words by default (``segment``, ``refine``); the viewer's panel gives
    its own (its boxes, not the options)."""
    from napari_tubular.inference import removal_notes

    unsure, blobs = {"removed": 2, "removed_mm3": 500.0}, [{"volume_mm3": 2000.0}]
    notes = removal_notes(unsure, blobs, 0.99, 1.5)
    assert notes[0].startswith("2 component(s), 0.50 mL in all, dropped from the labels")
    assert notes[0].endswith("; min confidence 'off' keeps them")
    assert notes[1].startswith("1 blob-like component(s), 2.00 mL in all")
    assert notes[1].endswith("; blob ratio 'off' keeps them")
    assert [n.rsplit("; ", 1)[1] for n in removal_notes(
        unsure, blobs, 0.99, 1.5, keep_unsure="A", keep_blobs="B")] == ["A", "B"]
    assert removal_notes({"removed": 1, "removed_mm3": 99.0}, [], 0.99, None) == []  # < 0.1 mL


def test_refine_unless_no_vessel_skips_what_segment_skips():
    """The viewer's Segment panel refines through this: no refinement (and no "lower T_p"
    warning) where ``found_no_vessel``, as ``segment`` decides it; the refiner's own result
    otherwise."""
    from napari_tubular.geometry.refiner import Refiner
    from napari_tubular.inference import refine_unless_no_vessel

    prob = np.zeros((8, 10, 10), np.float32)
    prob[3:5, 2:8, 4:6] = 0.4  # the network's highest probability: 0.4
    radius = np.full(prob.shape, 1.0, np.float32)
    refiner = Refiner(prob, radius, (1.0, 1.0, 1.0), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = refine_unless_no_vessel(refiner, 0.6, 0.5)
    assert empty.info["no_vessel"]
    assert not empty.labels.any()
    assert not empty.skeleton.any()
    assert empty.n_seeds == 0
    assert empty.labels.shape == prob.shape
    assert refiner.n_reconstructions == 0  # the refiner left as it was
    assert refiner.result is None
    found = refine_unless_no_vessel(refiner, 0.3, 0.1)  # T_p under 0.4: refined
    assert refiner.n_reconstructions == 1
    assert found is refiner.result
    assert found.labels.any()
