"""Fixtures for the napari widget tests (run under xvfb: see docs / NAPARI_TESTING.md)."""

import numpy as np
import pytest

SPACING = (1.5, 1.0, 0.8)
TRANSLATE = (10.0, -5.0, 2.5)


@pytest.fixture(autouse=True)
def _widget_env(monkeypatch, tmp_path):
    """Synchronous jobs and a private settings file for every widget test."""
    monkeypatch.setenv("NAPARI_TUBULAR_SYNC", "1")
    monkeypatch.setenv("NAPARI_TUBULAR_CONFIG", str(tmp_path / "settings.json"))


@pytest.fixture(scope="session")
def vessel_case():
    """A small anisotropic synthetic vessel tree (image, mask, centerline, spacing)."""
    from napari_tubular.synthetic import make_vessel_tree

    return make_vessel_tree((32, 40, 40), spacing=SPACING, seed=3, distractors=False)


@pytest.fixture
def fake_prediction(vessel_case):
    """A ``Prediction``-like object built from the reference mask (no network)."""
    from scipy import ndimage as ndi

    from napari_tubular.geometry.distance import local_radius_mm
    from napari_tubular.inference import FALLBACK_TP, FALLBACK_TR, Prediction

    mask = vessel_case.mask.astype(bool)
    prob = ndi.gaussian_filter(mask.astype(np.float32), 0.7)
    prob = np.clip(prob / max(float(prob.max()), 1e-6), 0, 1).astype(np.float32)
    radius = ndi.grey_dilation(local_radius_mm(mask, SPACING), size=3).astype(np.float32)
    return Prediction(
        probability=prob,
        radius_mm=radius,
        spacing=SPACING,
        model_spacing=SPACING,
        device_used="cpu",
        batch_size=1,
        timings={},
        # a model with tuned thresholds, like the shipped one (the fallback values: the panel's
        # defaults are unchanged), so that the confidence filter's default level applies
        meta={"metrics": {"refine": {"tp": FALLBACK_TP, "tr": FALLBACK_TR}}},
    )


class PredictCounter:
    """Stand-in for ``inference.predict``: counts calls, returns a fixed prediction."""

    def __init__(self, prediction, cancel_after=None):
        self.prediction = prediction
        self.calls = 0
        self.cancel_after = cancel_after

    def __call__(
        self, volume, model="default", device="auto", *, progress=None, cancel=None, **kwargs
    ):
        self.calls += 1
        self.kwargs = kwargs
        for i in range(3):
            if cancel is not None and cancel():
                from napari_tubular.inference import Cancelled

                raise Cancelled("inference cancelled")
            if progress is not None:
                progress(i + 1, 3, f"window {i + 1}/3")
        assert volume.data.shape == self.prediction.probability.shape
        return self.prediction


@pytest.fixture
def predict_counter(monkeypatch, fake_prediction):
    """Replace ``inference.predict`` and the model loading by a counting stand-in."""
    from napari_tubular import inference
    from napari_tubular._widgets.segment import SegmentWidget

    counter = PredictCounter(fake_prediction)
    monkeypatch.setattr(inference, "predict", counter)
    monkeypatch.setattr(SegmentWidget, "_load_model", lambda self, spec, device: ("net", {}))
    return counter


@pytest.fixture
def tiny_model_path(tmp_path_factory):
    """A random-weight TubularUNet saved as a model file (for a real end-to-end run).

    Trained spacing = the test volume's spacing and one window per 24^3 volume: a fast run."""
    from .._tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", spacing=SPACING,
                           patch=(24, 24, 24), base_channels=4,
                           normalization={"kind": "zscore"})


def held_call(monkeypatch, module, name):
    """Replace ``module.name`` by a call that sets ``started`` and waits for ``release``
    (``(started, release)`` events) before doing the real work: a job still running when a
    test acts (closes a panel, moves a slider)."""
    import threading

    started, release = threading.Event(), threading.Event()
    real = getattr(module, name)

    def held(*args, **kwargs):
        started.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, held)
    return started, release


def deleting_call(monkeypatch, module, name, viewer, layer: str) -> None:
    """Replace ``module.name`` by a call that first removes the layer ``layer`` from
    ``viewer``, then does the real work: the user deletes an input while the job runs."""
    real = getattr(module, name)

    def deleting(*args, **kwargs):
        viewer.layers.remove(layer)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, deleting)


def open_sagittal(viewer, path, data, spacing, origin) -> tuple:
    """Write ``data`` as a sagittal NIfTI file (a direction that permutes the axes: the reader
    opens it transposed), open it in ``viewer`` and return ``(layer, the layer's file axes)``
    (checked not to be the identity)."""
    from napari_tubular.io import Volume, write_volume

    direction = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # (z, y, x)
    write_volume(path, Volume(data=data, spacing=spacing, origin=origin, direction=direction))
    (layer,) = viewer.open(str(path), plugin="napari-tubular")
    axes = tuple(layer.metadata["napari_tubular_file_axes"])
    assert axes != (0, 1, 2)
    return layer, axes


#: a file's axis ``c`` is the array's axis ``PERMUTED[c]`` in the permuted-axes tests
PERMUTED = (1, 2, 0)


def write_maybe_permuted(folder, arrays: dict, permuted) -> dict:
    """``{name: path}`` of NIfTI files of ``arrays`` (name -> array in the layers' order): the
    names in ``permuted`` ("both": all) stored along other axes (:data:`PERMUTED`, a direction
    that permutes them back: the reader opens them transposed onto the same voxels), the others
    as they are; origin (3, -2, 1), spacing :data:`SPACING`."""
    from napari_tubular.io import Volume, write_volume

    paths = {}
    for name, arr in arrays.items():
        paths[name] = folder / f"{name}.nii.gz"
        if permuted in ("both", name):  # the same voxels, stored along other axes
            vol = Volume(data=arr.transpose(PERMUTED),
                         spacing=tuple(SPACING[a] for a in PERMUTED), origin=(3.0, -2.0, 1.0),
                         direction=np.eye(3)[:, list(PERMUTED)])
        else:
            vol = Volume(data=arr, spacing=SPACING, origin=(3.0, -2.0, 1.0))
        write_volume(paths[name], vol)
    return paths
