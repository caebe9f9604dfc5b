"""The shipped default model: a readable model file whose weights really segment vessels.

Threshold of the sample test: Dice >= 0.85 (and clDice >= 0.80) of ``probability > 0.5`` against
the bundled sample's exact label. 0.85 is the issue's held-out target; the sample is a synthetic
volume of the training family that the model never saw (anisotropic 1.5 x 0.8 x 0.8 mm, so the
resampling to the model grid and back is exercised too). The shipped models measured Dice 0.91-0.93,
clDice 0.88-0.90 there on CPU (README, Default model), so the margin absorbs CPU/GPU and thread-count
differences, while a broken file, wrong normalisation or a skipped resampling falls far below it
(an untrained network scores about 0.01).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_tubular.models import DEFAULT_MODEL_PATH, load_model, read_model_meta  # noqa: E402

DICE_MIN = 0.85
CLDICE_MIN = 0.80
ORGAN_FP_MAX_ML = 1.0  # enhancing organ labelled as vessel (170 HU: xfail)


@pytest.fixture(scope="module")
def sample_run():
    """``segment(refine=False, overlap=0)`` of the stored sample: one network pass (the same
    ``predict`` call as ``predict(image, "default", "cpu", overlap=0.0)``), shared by several
    tests; its arrays are read-only so that no test changes what the others read."""
    from napari_tubular.inference import segment
    from napari_tubular.io import read_volume
    from napari_tubular.sample_data import sample_path

    res = segment(read_volume(sample_path("image")), model="default", device="cpu",
                  refine=False, overlap=0.0)
    for arr in (res.labels, res.probability, res.radius_mm, res.skeleton):
        arr.flags.writeable = False
    return res


@pytest.fixture(scope="module")
def sample_prediction(sample_run):
    """``probability > 0.5`` of the stored sample (the shared network pass)."""
    return sample_run.probability > 0.5


def test_default_model_file_and_meta():
    assert DEFAULT_MODEL_PATH.is_file()
    assert DEFAULT_MODEL_PATH.stat().st_size < 10 * 2**20  # "a few MB"
    model, meta = load_model("default", device="cpu")
    assert meta["training"]["loss"] == "ddt+cldice"
    assert meta["arch"]["num_scales"] == meta["K"] + 1
    assert meta["normalization"]["kind"] == "window"
    # the readable sidecar describes the same weights
    sidecar = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    assert sidecar["arch"] == read_model_meta("default")["arch"]
    assert sidecar["spacing"] == meta["spacing"]
    out = model(torch.zeros(1, 1, 16, 16, 16))
    assert out["scale"].shape[1] == meta["K"] + 1


@pytest.mark.slow
def test_default_model_segments_bundled_sample(sample_run):
    from napari_tubular.inference import refine_maps
    from napari_tubular.io import read_volume
    from napari_tubular.sample_data import sample_path
    from napari_tubular.topology.metrics import compute_metrics

    image = read_volume(sample_path("image"))
    label = read_volume(sample_path("label")).data > 0
    # no window overlap: one network pass over the volume (CPU time), no refinement here
    res = sample_run  # segment(image, model="default", device="cpu", refine=False, overlap=0.0)
    m = compute_metrics(res.labels > 0, label, image.spacing)
    assert m["dice"] >= DICE_MIN, m
    assert m["cldice"] >= CLDICE_MIN, m
    # the geometry-aware refinement from the same maps stays a good segmentation
    refined, _ = refine_maps(res.probability, res.radius_mm, image.spacing, tp=0.7, tr=0.5)
    mr = compute_metrics(refined > 0, label, image.spacing)
    assert mr["dice"] >= DICE_MIN, mr
    assert np.isfinite(res.radius_mm).all()


@pytest.mark.slow
def test_default_model_segments_a_unitless_copy_of_the_sample_the_same(sample_run):
    """The sample scaled to [0, 1] (as many pipelines store images) is rescaled automatically
    and segmented like the Hounsfield-unit original; taken as it is, it would give nothing."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume, read_volume
    from napari_tubular.sample_data import sample_path

    image = read_volume(sample_path("image"))
    label = read_volume(sample_path("label")).data > 0
    data = image.data.astype(np.float32)
    unit = Volume((data - data.min()) / (data.max() - data.min()), image.spacing)
    hu = sample_run  # the same predict(image, "default", "cpu", overlap=0.0) pass
    auto = predict(unit, "default", "cpu", overlap=0.0)
    assert auto.intensity["rescale"] is not None
    assert hu.report["parameters"]["intensity_rescale"] is None  # the pass's intensity["rescale"]
    a, b = hu.probability > 0.5, auto.probability > 0.5
    agreement = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert agreement >= 0.97, agreement
    dice = 2 * (b & label).sum() / (b.sum() + label.sum())
    assert dice >= DICE_MIN


@pytest.mark.slow
@pytest.mark.parametrize("units", ["raw CT (HU + 1024, uint16)", "MR-like counts", "8-bit"])
def test_default_model_segments_sample_in_other_units(units, sample_prediction):
    """Other units of the same image: raw CT stored without its -1024 intercept, MR-like counts
    (x4 + 500) and an 8-bit export; 'auto' rescales each and the labels match the HU run (taken
    as they are, the first two gave Dice 0.00 and 0.02 on a held-out volume, the 8-bit 0.84)."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume, read_volume
    from napari_tubular.sample_data import sample_path

    image = read_volume(sample_path("image"))
    label = read_volume(sample_path("label")).data > 0
    hu = image.data.astype(np.float32)
    lo, hi = np.percentile(hu, [0.5, 99.9])
    data = {
        "raw CT (HU + 1024, uint16)": (hu + 1024).clip(0, None).astype(np.uint16),
        "MR-like counts": hu * 4 + 500,
        "8-bit": (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8),
    }[units]
    ref = sample_prediction
    other = predict(Volume(data, image.spacing), "default", "cpu", overlap=0.0)
    assert other.intensity["rescale"] is not None
    assert any("intensities rescaled" in m for m in other.messages)
    b = other.probability > 0.5
    assert 2 * (ref & b).sum() / (ref.sum() + b.sum()) >= 0.95
    assert 2 * (b & label).sum() / (b.sum() + label.sum()) >= DICE_MIN


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["y and x flipped", "z last"])
def test_default_model_segments_the_sample_stored_in_another_axis_order(orientation,
                                                                       sample_prediction):
    """The same volume stored in another axis order (mirrored, or with the slice axis last and
    the spacing permuted with it) is segmented as well as the stored one. Measured: sample Dice
    0.904 stored, 0.906 / 0.903 in these orders; the 10 held-out volumes in five orders 0.837 to
    0.843 (docs/measurements.md, "Axis order")."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume, read_volume
    from napari_tubular.sample_data import sample_path

    image = read_volume(sample_path("image"))
    label = read_volume(sample_path("label")).data > 0
    sp = tuple(image.spacing)
    if orientation == "y and x flipped":
        def f(a):
            return np.ascontiguousarray(a[:, ::-1, ::-1])
        spacing = sp
    else:
        def f(a):
            return np.ascontiguousarray(a.transpose(1, 2, 0))
        spacing = (sp[1], sp[2], sp[0])

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    stored = sample_prediction
    other = predict(Volume(f(image.data), spacing), "default", "cpu", overlap=0.0)
    assert other.probability.shape == f(label).shape
    d_other, d_stored = dice(other.probability > 0.5, f(label)), dice(stored, label)
    assert d_other >= DICE_MIN
    assert abs(d_other - d_stored) <= 0.02, (d_other, d_stored)


@pytest.mark.slow
def test_default_model_on_a_volume_smaller_than_its_window():
    """A 60^3 volume (48 mm) with one straight tube of known radius: the sliding window pads it
    to the model's 64^3 window. Zero padding made the model label a whole face of the volume
    (Dice 0.38); mirrored padding gives the tube back, and the calibrated radius at its axis is
    within 20 % of the truth. The calibration is fitted on blurred tree volumes, where the scale
    head reads 10-20 % short; on this unblurred tube the head is nearly right, so the map
    overshoots: 2.95 mm for 2.5 mm with the stage-9 default (stage 6: 2.8-2.9 mm; the probes'
    tubes of 2.5-12 mm read -22 % to +18 %)."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume
    from napari_tubular.synthetic import make_tube

    sp = (0.8, 0.8, 0.8)
    case = make_tube((60, 60, 60), sp, radius_mm=2.5, axis=2, contrast=250.0, noise=15.0, seed=1)
    pred = predict(Volume(case.image, sp), "default", "cpu")
    p, m = pred.probability > 0.5, case.mask > 0
    assert 2 * (p & m).sum() / (p.sum() + m.sum()) >= 0.9
    assert p[:, :, 0].sum() < 0.1 * p[:, :, 0].size  # no face labelled as vessel
    idx = np.round(case.centerline[:, :3] / np.asarray(sp)).astype(int)[5:-5]
    r_axis = float(np.median(pred.radius_mm[idx[:, 0], idx[:, 1], idx[:, 2]]))
    assert abs(r_axis - 2.5) <= 0.2 * 2.5, r_axis


@pytest.mark.slow
def test_default_model_finds_a_large_vessel():
    """A straight 7 mm tube (an aorta-sized vessel, 14 voxels at 1 mm): the default model is
    trained with roots up to 12 mm and K = 16 scale classes (the session-2 model, K = 5 and
    roots up to 4.7 mm, found nothing here: Dice 0 on 5, 8 and 12 mm probes). Segmented, and
    the calibrated radius at its axis within 20 % of the truth."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume
    from napari_tubular.synthetic import make_tube

    sp = (1.0, 1.0, 1.0)
    case = make_tube((80, 80, 80), sp, radius_mm=7.0, axis=1, contrast=250.0, noise=15.0, seed=2)
    pred = predict(Volume(case.image, sp), "default", "cpu", overlap=0.0)
    p, m = pred.probability > 0.5, case.mask > 0
    assert 2 * (p & m).sum() / (p.sum() + m.sum()) >= 0.9
    idx = np.round(case.centerline[:, :3] / np.asarray(sp)).astype(int)[8:-8]
    r_axis = float(np.median(pred.radius_mm[idx[:, 0], idx[:, 1], idx[:, 2]]))
    assert abs(r_axis - 7.0) <= 0.2 * 7.0, r_axis



def test_default_model_finds_an_aorta_along_the_slice_axis():
    """An 18 mm tube along z (an aneurysmal aorta in an axial CT, 1 x 0.7 x 0.7 mm): the
    first pass alone misses it (its windows see uniform brightness inside; Dice 0.03 in
    session 26, 0.67 for 15 mm), the large-vessel pass on a grid twice as coarse finds it
    whole, with the radius at its axis within 15 %, and says so in the report."""
    from napari_tubular.inference import predict
    from napari_tubular.io import Volume
    from napari_tubular.synthetic import make_tube

    sp = (1.0, 0.7, 0.7)
    case = make_tube((96, 110, 110), sp, radius_mm=18.0, axis=0, contrast=260.0, noise=15.0,
                     seed=3)
    m = case.mask > 0

    def dice(p):
        return 2 * (p & m).sum() / (p.sum() + m.sum())

    first = predict(Volume(case.image, sp), "default", "cpu", overlap=0.0, large_vessels=False)
    assert first.large_vessels is None
    assert dice(first.probability > 0.5) < 0.5
    pred = predict(Volume(case.image, sp), "default", "cpu", overlap=0.0)
    assert dice(pred.probability > 0.5) >= 0.95
    info = pred.large_vessels
    assert info["ran"]
    assert len(info["merged"]) == 1
    assert info["merged_ml"] > 50
    assert any(msg.startswith("large vessels:") for msg in pred.messages)
    idx = np.round(case.centerline[:, :3] / np.asarray(sp)).astype(int)[8:-8]
    r_axis = float(np.median(pred.radius_mm[idx[:, 0], idx[:, 1], idx[:, 2]]))
    assert abs(r_axis - 18.0) <= 0.15 * 18.0, r_axis

def _airway_phantom(seed=5, shape=(64, 64, 64), spacing=(0.8, 0.8, 0.8)):
    """Airways in a lung: a tree of the generator (its label is the lumen; radii 1 to 5 mm) at
    -1000 HU with a one-voxel wall at -500 HU (a sub-voxel wall of soft tissue, partial volume)
    in textured parenchyma at -850 HU, blurred, 20 HU noise."""
    from scipy import ndimage

    from napari_tubular.synthetic import make_vessel_tree

    lumen = make_vessel_tree(shape, spacing, seed=seed, distractors=False, bias=False,
                             min_radius_mm=1.0, max_radius_mm=5.0).mask > 0
    rng = np.random.default_rng(seed)
    lung = -850.0 + ndimage.gaussian_filter(rng.normal(0, 60, shape), 2.0)
    wall = ndimage.binary_dilation(lumen) & ~lumen
    img = np.where(lumen, -1000.0, np.where(wall, -500.0, lung))
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 20, shape)
    return img.astype(np.float32), lumen, spacing


@pytest.mark.slow
def test_default_model_finds_dark_airways_with_the_dark_polarity():
    """The model was trained on bright vessels: airways (a dark lumen in a brighter lung) are
    not found as they are (measured Dice 0.08, and 0.02 with seed 6); with ``polarity='dark'``
    (the image mirrored about its median, the median placed at the training tissue level) they
    are (Dice / clDice 0.84 / 0.96, seed 6: 0.91 / 1.00; the lumen comes out a little thin:
    the wall's blur darkens its edge voxels)."""
    from napari_tubular.inference import segment
    from napari_tubular.topology import compute_metrics

    img, lumen, sp = _airway_phantom()
    bright = segment(img, "default", "cpu", spacing=sp)
    assert compute_metrics(bright.labels, lumen, sp)["dice"] < 0.2
    dark = segment(img, "default", "cpu", spacing=sp, polarity="dark")
    m = compute_metrics(dark.labels, lumen, sp)
    assert m["dice"] >= 0.75, m
    assert m["cldice"] >= 0.9, m
    assert dark.report["parameters"]["polarity"] == "dark"
    assert any(str(x).startswith("dark tubes:") for x in dark.report["messages"])
    # a lumen inside a brighter wall: the trim is not applied, and the report says so
    assert any("inside a brighter wall" in str(x) for x in dark.report["messages"])


def _chest_phantom(seed=0, shape=(56, 80, 80), spacing=(1.0, 0.8, 0.8)):
    """A whole chest in HU: a body (40 HU, an ellipse 60 x 80 mm, wider than the 64 mm field of
    view, so that air at -1000 HU fills its four corners), two lungs (-850 HU) and a trachea
    (radius 3 mm, -1000 HU, a 0 HU wall) from the top face down to two main bronchi into the
    lungs, blurred, 15 HU noise. Returns image, lumen and body masks, spacing."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    y_mm, x_mm, z_mm = (y - shape[1] / 2) * spacing[1], (x - shape[2] / 2) * spacing[2], z
    body = (y_mm / 30.0) ** 2 + (x_mm / 40.0) ** 2 <= 1.0
    img = np.where(body, 40.0, -1000.0).astype(np.float32)
    for cx in (-14.0, 14.0):
        img[((y_mm / 18.0) ** 2 + ((x_mm - cx) / 10.0) ** 2 <= 1.0) & (z_mm > 18)] = -850.0
    lumen = (y_mm ** 2 + x_mm ** 2 <= 9.0) & (z_mm <= 26)
    for side in (-1.0, 1.0):  # from (z 26, x 0) to (z 50, x +-14 mm)
        t = np.clip(((z_mm - 26) * 24 + x_mm * side * 14) / (24 ** 2 + 14 ** 2), 0, 1)
        lumen |= ((((z_mm - 26) - 24 * t) ** 2 + (x_mm * side - 14 * t) ** 2 + y_mm ** 2
                   <= 2.2 ** 2) & (z_mm >= 24))
    img[ndimage.binary_dilation(lumen, iterations=2) & ~lumen] = 0.0
    img[lumen] = -1000.0
    img = ndimage.gaussian_filter(img, 0.7) + rng.normal(0, 15, shape)
    return img.astype(np.float32), lumen, body, spacing


@pytest.mark.slow
def test_default_model_leaves_the_air_around_a_chest_out_of_dark_tubes():
    """An outside audit: in a whole chest CT, ``polarity='dark'`` labelled the air at the
    corners of the field of view as airway (7 mL; here 4,590 voxels, Dice 0.49). The air
    outside the body (``outside_air``) is not taken: Dice 0.95, nothing outside the body."""
    from napari_tubular.inference import outside_air, segment
    from napari_tubular.topology import dice_score

    img, lumen, body, sp = _chest_phantom()
    exterior = outside_air(img)
    assert not (exterior & (lumen | body)).any()
    assert exterior.sum() >= 0.8 * (~body).sum()
    res = segment(img, "default", "cpu", spacing=sp, polarity="dark")
    labels = res.labels > 0
    assert not (labels & ~body).any()
    assert dice_score(labels, lumen) >= 0.9
    assert any("air outside the body" in str(m) for m in res.report["messages"])


@pytest.mark.slow
def test_dark_tubes_in_a_chest_stored_as_hu_plus_1024():
    """An audit: a chest CT stored as HU + 1024 (unsigned, the rescale intercept left out) was
    mirrored about its median and the air around the body taken as airway (Dice 0.41 here,
    0.95 in HU). It is taken as HU (1024 subtracted, with a message): the same labels."""
    from napari_tubular.inference import segment, stored_with_ct_offset
    from napari_tubular.topology import dice_score

    img, lumen, body, sp = _chest_phantom()
    stored = np.clip(img + 1024, 0, None).astype(np.uint16)
    assert stored_with_ct_offset(stored, stored.dtype)
    assert not stored_with_ct_offset(stored.astype(np.float32), np.dtype(np.float32))
    assert not stored_with_ct_offset((stored // 2).astype(np.uint16), np.dtype(np.uint16))
    res = segment(stored, "default", "cpu", spacing=sp, polarity="dark")
    labels = res.labels > 0
    assert dice_score(labels, lumen) >= 0.9
    assert not (labels & ~body).any()
    assert any("stored with +1024" in str(m) for m in res.report["messages"])


@pytest.mark.slow
def test_a_negated_ct_with_the_dark_polarity_is_segmented_like_the_original():
    """A CT volume negated (``-image``: vessels at -300, tissue at -40) and segmented with
    ``polarity='dark'`` gives the labels of the original (mirrored about its median, the image
    is the original shifted by a constant)."""
    from napari_tubular.inference import segment
    from napari_tubular.synthetic import make_vessel_tree
    from napari_tubular.topology import dice_score

    case = make_vessel_tree((56, 56, 56), (0.9, 0.9, 0.9), seed=11)
    original = segment(case.image, "default", "cpu", spacing=case.spacing)
    negated = segment(-case.image, "default", "cpu", spacing=case.spacing, polarity="dark")
    assert original.labels.sum() > 500
    assert dice_score(negated.labels > 0, original.labels > 0) >= 0.9
    assert dice_score(negated.labels > 0, case.mask > 0) >= 0.8


@pytest.mark.parametrize(("shape", "radius"), [((64, 64, 64), 2.0), ((56, 56, 56), 4.0)])
def test_default_model_segments_a_unit_intensity_tube(shape, radius):
    """A slightly oblique tube in [0, 1] units (background 0.2, tube 0.8, 0.7-voxel blur, noise
    0.06), not the generator's CT-like rendering: `intensity='auto'` rescales it and the second
    pass, with the intensities fitted to the vessels the first pass found, segments it (measured:
    Dice 0.94 / 0.98; the first pass alone 0.41 / 0.10)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    c = (np.array(shape[:2]) - 1) / 2
    d = np.hypot(z - c[0] - 0.15 * (x - shape[2] / 2), y - c[1])
    label = d <= radius
    img = ndimage.gaussian_filter(0.2 + 0.6 * np.clip(0.5 + radius - d, 0, 1), 0.7)
    img = (img + rng.normal(0, 0.06, shape)).astype(np.float32)
    res = segment(img, "default", "cpu", spacing=(1.0, 1.0, 1.0))
    assert res.report["parameters"]["intensity_refit"]["scale"] > 0
    assert dice_score(res.labels > 0, label) >= 0.9


@pytest.mark.parametrize("units", ["hu", "unit"])
def test_default_model_on_a_body_in_air(units):
    """A CT-like section of a body (air around it, a 6 mm fat shell, 40 HU soft tissue) with two
    300 HU tubes, in HU and exported to [0, 1]. The stage-9 model labelled 120-180 mL of the soft
    tissue under the fat as vessel on such phantoms (here: Dice 0.05, 66 mL beyond 2 mm of the
    tubes; the training data had no body outline); the stage-10 model was trained with body
    outlines, and the [0, 1] copy is mapped by its air and tissue levels (measured: Dice 0.89 / 0.88, no false positive beyond 2 mm)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(3)
    shape, sp = (48, 88, 88), (1.0, 1.0, 1.0)
    z, y, x = np.indices(shape).astype(float)
    rho = np.hypot((y - 44) / 46.0, (x - 50) / 38.0)  # the outline leaves the field of view
    img = np.full(shape, -1000.0)
    img[rho < 1.0] = -100.0
    img[rho < 1.0 - 6.0 / 38.0] = 40.0
    d1 = np.hypot(y - 40, x - 45 - 0.1 * z)
    d2 = np.hypot(z - 24, y - 55 - 0.05 * x)
    label = (d1 <= 3.0) | ((d2 <= 2.0) & (x > 20) & (x < 70))
    occ = np.maximum(np.clip(0.5 + 3.0 - d1, 0, 1),
                     np.clip(0.5 + 2.0 - d2, 0, 1) * ((x > 20) & (x < 70)))
    img = img * (1 - occ) + 300.0 * occ
    img = ndimage.gaussian_filter(img, 0.7) + rng.normal(0, 12, shape)
    if units == "unit":
        img = (img - img.min()) / (img.max() - img.min())
    res = segment(img.astype(np.float32), "default", "cpu", spacing=sp)
    pred = res.labels > 0
    far = ndimage.distance_transform_edt(~label) > 2.0
    assert (pred & far).sum() * 1e-3 < 0.5  # mL beyond 2 mm of the tubes (soft tissue, skin)
    assert dice_score(pred, label) >= 0.8


def test_default_model_ignores_padding_outside_a_circular_field_of_view():
    """Vessel-free soft tissue (40 HU, 15 HU noise) cut by a circular reconstruction field of
    view, -1024 outside (int16), as CT stores it: the model used to label a band inside the rim
    as vessel (8.8 mL here; an outside audit: 21.9 mL on a 100 x 260 x 260 volume). The padding
    is found and filled for the network, the probability is 0 on it: nothing is labelled, and
    the report says so."""
    from napari_tubular.inference import segment

    n, radius = 176, 84  # 9 windows a slab at the model's spacing (the audit's 260: 25)
    img = 40 + np.random.default_rng(0).normal(0, 15, (32, n, n))
    yy, xx = np.ogrid[:n, :n]
    out = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 > radius**2
    img[:, out] = -1024
    with pytest.warns(UserWarning, match="padding outside the scanner's field of view"):
        res = segment(img.astype(np.int16), "default", "cpu", spacing=(0.7, 0.7, 0.7))
    assert not res.labels.any()
    assert not res.probability[:, out].any()
    assert any("padding" in m for m in res.report["messages"])


def test_default_model_does_not_take_solid_bone_for_vessels():
    """A 2 mm, 300 HU tube with two calcified plaques (1000 HU) next to two solid rib-like
    rings at 900 HU: the window clips bone and contrast alike and the network labelled the
    rings (Dice 0.10, 9.4 mL for 0.6 mL of vessel). Found voxels where a fifth or more of the
    found voxels around them are above the bone level are not taken as vessels; the small
    plaques do not make the tube bone (measured: Dice 0.92)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(0)
    shape, sp = (48, 96, 96), (1.0, 0.7, 0.7)
    zz, yy, xx = (np.indices(shape).astype(float) * np.asarray(sp)[:, None, None, None])
    d = np.hypot(yy - 33, xx - 30 - 0.1 * zz)
    img = 40.0 + 260.0 * np.clip(0.5 + (2.0 - d) / 0.7, 0, 1)
    for zc in (12.0, 34.0):
        ring = np.hypot(zz - zc, np.hypot(yy - 38, xx - 40) - 22.0)
        img = np.maximum(img, 40.0 + 860.0 * np.clip(0.5 + (3.0 - ring) / 0.7, 0, 1))
    for zc in (10.0, 25.0):
        plaque = np.hypot(np.hypot(zz - zc, yy - 33), xx - 31 - 0.1 * zc)
        img = np.where(plaque <= 1.0, 1000.0, img)
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.float32), "default", "cpu", spacing=sp)
    assert dice_score(res.labels > 0, d <= 2.0) >= 0.85
    assert any("is bone" in m for m in res.report["messages"])
    assert res.report["parameters"]["bone_level"] == 700.0
    # switched off (CT angiography brighter than bone): the rings are labelled again
    off = segment(img.astype(np.float32), "default", "cpu", spacing=sp, bone_level=None)
    assert dice_score(off.labels > 0, d <= 2.0) < 0.5


def test_default_model_segments_an_mr_angiogram_whose_background_looks_like_hu():
    """An MR-angiography-like uint16 volume (background 120, vessels 1500, a bias field): its
    bulk lies in the soft-tissue range, so it is taken in HU, and the bone step removed every
    vessel (an outside audit: empty labels, Dice 0). An image without a value below 0 whose
    found voxels are largely above the bone level keeps them (measured: Dice 0.84)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(0)
    shape, sp = (64, 64, 64), (0.5, 0.5, 0.5)
    zz, yy, xx = (np.indices(shape).astype(float) * np.asarray(sp)[:, None, None, None])
    vessel = (np.hypot(yy - 16, xx - 14 - 0.1 * zz) <= 2.0)
    vessel |= np.hypot(zz - 18, yy - 10 - 0.3 * xx) <= 1.5
    img = 120.0 + 1380.0 * ndimage.gaussian_filter(vessel.astype(float), 0.7)
    img = img * (1 + 0.2 * xx / xx.max()) + rng.normal(0, 20, shape)
    img = np.clip(img, 0, None).astype(np.uint16)
    res = segment(img, "default", "cpu", spacing=sp)
    assert dice_score(res.labels > 0, vessel) >= 0.75
    assert any("not CT in HU" in m for m in res.report["messages"])


@pytest.mark.parametrize("vessels", ["in-plane", "crossing"])
def test_default_model_on_a_slab_thinner_than_its_window(vessels):
    """A slab of 12 slices at 0.6 mm (9 voxels at the model's 0.8 mm). Vessels lying in it
    (1.5-2.5 mm radius): the padding up to the 64-voxel window mirrored the slab about seven
    times, a stack of vessel copies (an outside audit: Dice 0.74; here 0.894 / clDice 0.931 /
    6 components for 1). Background padding alone fixed them (0.986 / 1.0 / 1) but cut the
    vessels crossing the slab to stubs the network doubts (0.648 / 0.892; mirrored: 0.953 /
    1.0); the larger probability of the two paddings keeps both (0.985 / 1.0 and 0.952 / 1.0)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import compute_metrics

    rng = np.random.default_rng(1)
    shape, sp = (12, 160, 160), (0.6, 0.6, 0.6)
    zz, yy, xx = np.indices(shape).astype(np.float32) * 0.6
    vessel = np.zeros(shape, bool)
    if vessels == "in-plane":
        for k, (r, ang) in enumerate(((2.5, 0.3), (2.0, 1.2), (1.5, 2.0), (2.2, 2.7))):
            across = (yy - 48.0) * np.cos(ang) - (xx - 48.0) * np.sin(ang) - (k - 1.5) * 18.0
            vessel |= np.hypot(across, zz - 3.3) <= r
    else:  # nine vessels through the slab, tilted 0-40 degrees from its normal
        for k in range(9):
            tilt = np.deg2rad(5 * k)
            off = np.hypot((yy - 15 - 30 * (k // 3)) - np.tan(tilt) * (zz - 3.3),
                           xx - 15 - 30 * (k % 3))
            vessel |= off * np.cos(tilt) <= 1.2 + 0.2 * k
    img = ndimage.gaussian_filter(np.where(vessel, 300.0, 40.0), 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.int16), "default", "cpu", spacing=sp)
    m = compute_metrics(res.labels > 0, vessel, sp)
    assert m["dice"] > 0.93
    assert m["cldice"] > 0.98
    assert m["betti_pred"][0] == m["betti_ref"][0]


def test_default_model_does_not_take_the_body_edge_for_vessels():
    """A body of 40 HU tissue straight against air (no fat under the skin, as phantoms and
    limbs have it): the window clips the air and the tissue beside it read as a tube (an outside
    audit: 20 false components up to 247 mm; here 4.4 mL on the stage-14 model). Soft tissue
    near air without contrast over the tissue around it is not vessel; a 300 HU vessel 2.5 mm
    under the edge is kept (measured: 0.02 mL of edge left, the vessel's Dice 0.97). With 64
    slices (one window deep) the network also found a component 6-7 mm under the skin in the
    last slices, no brighter than the tissue (0.22 mL): flat components are not vessels."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(0)
    shape, sp = (64, 192, 192), (0.8, 0.7, 0.7)
    zz, yy, xx = np.indices(shape).astype(np.float32) * np.asarray(sp, np.float32)[:, None, None, None]
    c = 96 * 0.7
    body = np.hypot(yy - c, xx - c) <= 45.0
    img = ndimage.gaussian_filter(np.where(body, 40.0, -1000.0), 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.int16), "default", "cpu", spacing=sp)
    assert res.labels.sum() * np.prod(sp) / 1000 < 0.1
    assert any("body's edge" in m for m in res.report["messages"])
    vessel = np.hypot(yy - c, xx - (c - 42.5)) <= 2.0
    img = np.where(body, 40.0, -1000.0)
    img = ndimage.gaussian_filter(np.where(vessel, 340.0, img), 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.int16), "default", "cpu", spacing=sp)
    assert dice_score(res.labels > 0, vessel) > 0.9


def test_default_model_with_a_field_of_view_that_cuts_the_body():
    """A body wider than the scanner's field of view (padding at -1024 cutting through fat
    and tissue): the fill mixed air and tissue at random and the network labelled tubes deep in
    the tissue (an outside audit: Dice 0.97 -> 0.48; here 0.10 with 24.5 mL of false vessels).
    The fill now continues each side (measured: Dice 0.95, 0.13 mL)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(0)
    # 64 slices at 0.8 mm: one window deep (a thinner slab is run twice, with two paddings)
    shape, sp = (64, 192, 192), (0.8, 0.7, 0.7)
    zz, yy, xx = np.indices(shape).astype(np.float32) * np.asarray(sp, np.float32)[:, None, None, None]
    c = 96 * 0.7
    img = np.where(np.hypot((yy - c) / 45.0, (xx - c) / 60.0) <= 1, -100.0, -1000.0)
    img = np.where(np.hypot((yy - c) / 35.0, (xx - c) / 50.0) <= 1, 40.0, img)
    vessel = np.hypot(yy - c, xx - c - 10) <= 3.0
    img = ndimage.gaussian_filter(np.where(vessel, 330.0, img), 0.7) + rng.normal(0, 15, shape)
    img[np.hypot(yy - c, xx - c) > 50.0] = -1024
    res = segment(img.astype(np.int16), "default", "cpu", spacing=sp)
    labels = res.labels > 0
    assert dice_score(labels, vessel) > 0.9
    assert (labels & ~ndimage.binary_dilation(vessel, iterations=3)).sum() * np.prod(sp) < 500


def test_default_model_finds_airways_in_soft_tissue_with_dark_polarity():
    """Air (-900 HU) tubes in soft tissue (-40 HU): mirrored for polarity 'dark' they land
    near +900 HU, and the bone step removed them all (an audit: Dice 0, the advice pointed to
    --bone-level). The bone step is for bright tubes; measured here: Dice 0.99 (0.0 before)."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(1)
    shape, sp = (48, 64, 64), (0.7, 0.7, 0.7)
    zz, yy, xx = (np.indices(shape).astype(float) * np.asarray(sp)[:, None, None, None])
    lumen = np.hypot(yy - 22, xx - 20 - 0.2 * zz) <= 2.5
    lumen |= np.hypot(zz - 16, yy - 14 - 0.3 * xx) <= 1.8
    wall = ndimage.binary_dilation(lumen, iterations=1) & ~lumen
    img = np.full(shape, -40.0)
    img[wall] = 60.0
    img[lumen] = -900.0
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.int16), "default", "cpu", spacing=sp, polarity="dark")
    assert dice_score(res.labels > 0, lumen) >= 0.8
    assert not any("is bone" in m for m in res.report["messages"])
    assert res.report["parameters"]["bone_level"] is None


@pytest.mark.parametrize("organ_hu", [
    120.0,
    pytest.param(170.0, marks=pytest.mark.xfail(
        strict=True, reason="known limitation of the shipped (stage-14) model: a bright "
        "enhancing organ is labelled as vessel (README, Limitations)")),
])
def test_default_model_does_not_label_an_enhancing_organ(organ_hu):
    """A kidney-like organ (an ellipsoid of 24 x 14 x 12 mm semi-axes, about 17 mL, a bright
    cortex over a darker medulla) beside a 2.5 mm, 300 HU tube in 40 HU tissue, as a contrast
    CT shows kidneys and spleen. An outside audit found such an organ labelled whole; stage 10
    labelled 7.5 and 16.8 of 16.8 mL at 120 and 170 HU; stage 13 (session 11, trained with
    enhancing organs on CPU, averaged with stage 10) 0.3 and 16.0 mL; the shipped stage 14
    (session 12, organs and coarse grids, not averaged) 0.0 and 6.2 mL: the 170 HU case is a
    strict xfail (a model that fixes it makes the test fail, so that the mark is removed). A CPU fine-tuning without the averaging (session 10,
    not shipped: it lost a 12 mm tube) took the organ phantoms' false positives to 1.9 mL."""
    from scipy import ndimage

    from napari_tubular.inference import segment
    from napari_tubular.topology import dice_score

    rng = np.random.default_rng(int(organ_hu))
    shape, sp = (56, 80, 80), (1.0, 0.8, 0.8)
    zz, yy, xx = (np.indices(shape).astype(float) * np.asarray(sp)[:, None, None, None])
    d = np.hypot(zz - 20, yy - 12 - 0.1 * xx)
    tube = d <= 2.5
    rho = np.sqrt(((zz - 30) / 12.0) ** 2 + ((yy - 38) / 14.0) ** 2 + ((xx - 36) / 24.0) ** 2)
    organ = rho <= 1.0
    depth = ndimage.distance_transform_edt(organ, sampling=sp)
    level = np.where(depth > 4.0, organ_hu - 50.0, organ_hu)
    img = np.where(organ, level, 40.0)
    occ = np.clip(0.5 + (2.5 - d) / 0.8, 0, 1)
    img = img * (1 - occ) + 300.0 * occ
    img = ndimage.gaussian_filter(img, 0.6) + rng.normal(0, 15, shape)
    res = segment(img.astype(np.float32), "default", "cpu", spacing=sp)
    pred = res.labels > 0
    organ_fp_ml = (pred & organ & ~tube).sum() * np.prod(sp) * 1e-3
    assert organ_fp_ml < ORGAN_FP_MAX_ML
    assert dice_score(pred, tube) >= 0.8
