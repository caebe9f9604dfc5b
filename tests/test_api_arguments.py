"""Public Python functions refuse bad arguments with a ValueError that names them (an audit
of the scripting API: these failed deep inside with an IndexError or numpy's broadcast message,
silently used the wrong radii, or named the wrong function)."""

import numpy as np
import pytest

from napari_tubular.io import write_dicom_series
from napari_tubular.synthetic import render_capsules
from napari_tubular.topology import surface_distances, surface_voxels

ISO = (1.0, 1.0, 1.0)


def _rod() -> np.ndarray:
    m = np.zeros((12, 12, 12), bool)
    m[2:10, 5:7, 5:7] = True
    return m


def test_surface_voxels_refuses_a_2d_mask():
    with pytest.raises(ValueError, match="3-D"):
        surface_voxels(_rod()[5])


def test_surface_voxels_refuses_nan():
    m = _rod().astype(np.float32)
    m[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        surface_voxels(m)


def test_surface_voxels_of_labels_is_the_union_surface():
    lab = _rod().astype(np.uint8)
    lab[6:] *= 2  # two labels touching: no surface between them
    assert np.array_equal(surface_voxels(lab), surface_voxels(lab > 0))


def test_surface_distances_refuses_masks_of_other_shapes():
    m = _rod()
    with pytest.raises(ValueError, match="must match"):
        surface_distances(m, m[:8], ISO)


def test_surface_distances_takes_labels():
    m = _rod()
    d_pr, d_rp = surface_distances(m.astype(np.uint8) * 3, m, ISO)
    assert d_pr.max() == 0.0
    assert d_rp.max() == 0.0


PTS = np.array([[2.0, 6.0, 6.0], [10.0, 6.0, 6.0], [10.0, 10.0, 6.0]])


@pytest.mark.parametrize(
    ("radii", "edges", "match"),
    [
        (np.ones(2), [[0, 1]], "radii_mm"),  # one radius missing: was taken silently
        (np.ones(3), [[0, 5]], "edges must index"),  # was an IndexError
        (np.ones(3), [[0, -1]], "edges must index"),  # silently joined the last point
        (np.ones(3), [[0.5, 1.0]], "integer"),
        (np.ones(3), [0, 1, 2], r"\(M, 2\)"),
        (np.array([1.0, np.nan, 1.0]), [[0, 1]], "radii_mm"),
    ],
)
def test_render_capsules_refuses_inconsistent_geometry(radii, edges, match):
    with pytest.raises(ValueError, match=match):
        render_capsules(PTS, radii, np.asarray(edges), (12, 12, 12), ISO)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.0, 1.0, 1.0)])
def test_render_capsules_refuses_bad_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        render_capsules(PTS, np.ones(3), np.array([[0, 1]]), (12, 12, 12), spacing)


def test_render_capsules_still_renders_and_takes_no_edges():
    mask, occ = render_capsules(PTS, np.ones(3), np.array([[0, 1], [1, 2]]), (12, 12, 12), ISO)
    assert mask[2:11, 6, 6].all()
    assert mask[10, 6:11, 6].all()
    assert occ.max() == 1.0
    empty, _ = render_capsules(PTS, np.ones(3), [], (12, 12, 12), ISO, occupancy=False)
    assert not empty.any()


def test_write_dicom_series_names_itself_in_its_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^write_dicom_series\(.*3-D"):
        write_dicom_series(tmp_path / "d", np.zeros((4, 4), np.uint8))


def test_resample_like_refuses_arrays_and_checks_interpolation_on_any_grids():
    from napari_tubular.io import Volume, resample_like

    vol = Volume(_rod().astype(np.uint8))
    with pytest.raises(ValueError, match="must be a Volume"):
        resample_like(vol.data, vol)  # was an AttributeError
    with pytest.raises(ValueError, match="must be a Volume"):
        resample_like(vol, vol.data)
    # a misspelt interpolation passed silently when the grids agreed
    with pytest.raises(ValueError, match="interpolation"):
        resample_like(vol, vol, interpolation="cubic")
    assert resample_like(vol, vol, interpolation="linear")[1] == "same grid"


def test_save_case_refuses_an_array(tmp_path):
    from napari_tubular.synthetic import save_case

    with pytest.raises(ValueError, match="SyntheticCase"):
        save_case(_rod(), tmp_path, "x", overwrite=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs", [{"noise": -1.0}, {"noise": float("nan")}, {"contrast": float("inf")}])
@pytest.mark.parametrize("maker", ["make_tube", "make_torus"])
def test_simple_phantoms_refuse_bad_noise_and_contrast(maker, kwargs):
    from napari_tubular import synthetic

    fn = getattr(synthetic, maker)
    shape = (8, 24, 24)
    extra = {"major_radius_mm": 6.0, "minor_radius_mm": 2.0} if maker == "make_torus" else {}
    with pytest.raises(ValueError, match="noise|contrast"):
        fn(shape, **extra, **kwargs)
    # numpy scalars are numbers
    img = fn(shape, **extra, noise=np.float32(5.0), seed=1).image
    assert np.isfinite(img).all()


def test_mask_radius_refuses_maps_of_other_shapes():
    from napari_tubular.inference import mask_radius

    with pytest.raises(ValueError, match="must match"):
        mask_radius(np.ones((8, 8, 8)), np.ones((4, 8, 8)), 0.5)
    with pytest.raises(ValueError, match="must match"):
        mask_radius(np.ones((8, 8, 8)), np.ones((1, 8, 8)), 0.5)  # was broadcast silently
    r = mask_radius(np.full((2, 2, 2), 3.0), np.eye(2)[None].repeat(2, 0), 0.9)
    assert r.dtype == np.float32
    assert r.sum() == 12.0


@pytest.mark.parametrize(
    ("size", "window", "overlap"),
    [(10, 0, 0.25), (10, -4, 0.25), (0, 4, 0.25), (10, 4, 1.0), (10, 4, -0.1), (10, 4.5, 0.25)],
)
def test_window_starts_refuses_bad_arguments(size, window, overlap):
    from napari_tubular.inference import window_starts

    with pytest.raises(ValueError, match="window|size|overlap"):
        window_starts(size, window, overlap)  # window 0 gave 11 starts for 10 voxels


def test_window_starts_still_covers_the_axis():
    from napari_tubular.inference import window_starts

    assert window_starts(10, 4, 0.25) == [0, 3, 6]
    assert window_starts(np.int64(3), np.int64(4), 0.5) == [0]


def test_is_orthonormal_refuses_a_matrix_that_is_not_3x3():
    from napari_tubular.io import is_orthonormal

    with pytest.raises(ValueError, match="3x3"):
        is_orthonormal(np.eye(2))
    assert is_orthonormal(np.diag([1.0, -1.0, 1.0]))
    assert not is_orthonormal(np.diag([1.0, 2.0, 1.0]))


@pytest.mark.parametrize("data", [np.full((2, 2, 2), "a"), np.empty((2, 2, 2), object)])
def test_volume_refuses_non_numeric_data(data):
    from napari_tubular.io import Volume

    with pytest.raises(ValueError, match="numeric"):
        Volume(data)
