"""TrainingWidget: layer pairs to training data, a short run with a live loss plot, stop, save."""

import dataclasses
import threading

import numpy as np
import pytest

from napari_tubular._widgets import _workers
from napari_tubular._widgets.train import TrainingWidget, parse_loss

from .conftest import SPACING, TRANSLATE

pytestmark = pytest.mark.gui

TINY = {"base_channels": 4, "depth": 2}


@pytest.fixture
def train_widget(make_napari_viewer, vessel_case, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(vessel_case.image, name="ct", scale=SPACING, translate=TRANSLATE)
    viewer.add_labels(
        vessel_case.mask.astype(np.uint8), name="ref", scale=SPACING, translate=TRANSLATE
    )
    widget = TrainingWidget(viewer)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.device_combo.setCurrentText("cpu")
    widget.init_combo.setCurrentText("random weights")
    widget.add_pair()
    return widget


def _tiny(config, **changes):
    return dataclasses.replace(
        config,
        model=dict(TINY),
        patch_size=(16, 16, 16),
        batch_size=1,
        K=3,
        augment=False,
        **changes,
    )


def _start_long_run(widget) -> threading.Event:
    """Start a long tiny run in a worker thread; the event is set at its first step."""
    widget.sync = False
    widget.overwrite_check.setChecked(True)
    started = threading.Event()
    widget.relay.progressed.connect(lambda d, t, m: m.startswith("step") and started.set())
    widget.start(_tiny(widget.config(), steps=5000, log_every=1))
    assert widget.running
    return started


def test_layer_pairs_become_training_data(train_widget):
    from napari_tubular.io import read_volume
    from napari_tubular.training import find_pairs

    assert train_widget.pairs == [("ct", "ref")]
    config = train_widget.config()
    pairs = find_pairs(config.data)
    assert len(pairs) == 1
    image = read_volume(pairs[0][0])
    np.testing.assert_allclose(image.spacing, SPACING)
    np.testing.assert_allclose(image.origin, TRANSLATE)
    label = read_volume(pairs[0][1])
    assert set(np.unique(label.data)) == {0, 1}


def test_parse_loss():
    assert parse_loss("step 2/3 loss 1.7697 | 1.34 it/s") == pytest.approx(1.7697)
    assert parse_loss("loading training volumes") is None


@pytest.mark.slow
def test_short_run_plots_loss_and_saves(train_widget, tmp_path, monkeypatch):
    from napari_tubular.models import load_model

    train_widget.start(_tiny(train_widget.config(), steps=3, log_every=1))
    assert train_widget.model_path is not None
    assert train_widget.model_path.is_file()
    assert train_widget.plot.steps == [1, 2, 3]
    assert all(np.isfinite(train_widget.plot.losses))
    assert train_widget.save_button.isEnabled()
    # a second run into the same folder needs the overwrite box
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    with pytest.raises(FileExistsError, match="not empty"):
        train_widget.config()
    train_widget.start()
    assert shown
    # in the widget's words (an audit: it named the command line's --overwrite / --resume)
    assert 'not empty: tick "replace an existing run folder"' in shown[-1]
    assert "--" not in shown[-1]
    saved = train_widget.save_model(tmp_path / "mine.pt")
    net, meta = load_model(saved, device="cpu")
    assert meta["K"] == 3
    with pytest.raises(FileExistsError):
        train_widget.save_model(saved)


@pytest.mark.slow
def test_stop_ends_the_run(train_widget, qtbot, tmp_path):
    started = _start_long_run(train_widget)
    qtbot.waitUntil(started.is_set, timeout=30000)
    train_widget.stop()
    qtbot.waitUntil(lambda: not train_widget.running, timeout=30000)
    assert train_widget.status.text().startswith("stopped")
    assert (tmp_path / "run" / "last.pt").is_file()  # the core saves before stopping
    assert train_widget.start_button.isEnabled()
    # the weights so far are a model file the user can save and use
    assert train_widget.model_path == tmp_path / "run" / "model.pt"
    assert train_widget.save_button.isEnabled()
    from napari_tubular.models import load_model

    _net, meta = load_model(train_widget.save_model(tmp_path / "stopped.pt"), device="cpu")
    assert meta["K"] == 3


@pytest.mark.slow
def test_start_button_starts_a_run(train_widget, monkeypatch):
    """The button, not only ``start()``: Qt's clicked(bool) must not reach ``start(config)``."""
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    ui_config = train_widget.config
    monkeypatch.setattr(train_widget, "config", lambda: _tiny(ui_config(), steps=1))
    train_widget.start_button.click()
    assert not shown, shown
    assert train_widget.model_path is not None
    assert train_widget.model_path.is_file()


def test_errors_are_notifications(make_napari_viewer, monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = TrainingWidget(viewer)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.start()  # no pairs
    assert shown
    assert "pair" in shown[-1]
    widget.source_combo.setCurrentText("folders")
    widget.folders_edit.setText(str(tmp_path / "missing"))
    widget.device_combo.setCurrentText("cpu")
    widget.start()  # the core raises FileNotFoundError in the worker
    assert "not found" in shown[-1]
    assert widget.start_button.isEnabled()
    with pytest.raises(ValueError, match="no trained model"):
        widget.save_model(tmp_path / "x.pt")


@pytest.mark.slow
def test_fine_tunes_the_default_model(train_widget):
    from napari_tubular.models import load_model, read_model_meta

    shipped = read_model_meta("default")
    train_widget.init_combo.setCurrentText("default model")
    config = train_widget.config()
    assert config.init_model == "default"
    assert config.K == shipped["K"]
    np.testing.assert_allclose(config.target_spacing, shipped["spacing"])
    train_widget.start(dataclasses.replace(config, steps=1, patch_size=(16, 16, 16),
                                           batch_size=1, augment=False))
    net, meta = load_model(train_widget.model_path, device="cpu")
    assert meta["arch"] == shipped["arch"]
    train_widget.init_combo.setCurrentText("model file")
    train_widget.overwrite_check.setChecked(True)
    with pytest.raises(ValueError, match="model file"):
        train_widget.config()


def test_layer_pairs_survive_a_rename(train_widget):
    viewer = train_widget.viewer
    viewer.layers["ct"].name = "patient 1"
    config = train_widget.config()  # writes the pair: found by identity, not by name
    from napari_tubular.training import find_pairs

    assert len(find_pairs(config.data)) == 1


def test_closing_the_dock_stops_the_run(train_widget, qtbot, tmp_path, monkeypatch):
    """An audit: a run kept training for minutes after its panel was closed (the dock is only
    reparented): closing it stops the run, which saves its weights so far."""
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    train_widget.sync = False
    train_widget.overwrite_check.setChecked(True)
    started = threading.Event()
    train_widget.relay.progressed.connect(lambda d, t, m: m.startswith("step") and started.set())
    dock = train_widget.viewer.window.add_dock_widget(train_widget, name="Fine-tune")
    train_widget.start(_tiny(train_widget.config(), steps=5000, log_every=1))
    qtbot.waitUntil(started.is_set, timeout=30000)
    train_widget.viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    qtbot.waitUntil(lambda: not train_widget.running, timeout=30000)
    assert (tmp_path / "run" / "model.pt").is_file()
    assert any("Fine-tune panel was closed" in m for m in shown)


def test_a_used_run_folder_is_refused_before_the_pairs_are_written(train_widget, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(_workers, "show_error", lambda _m: None)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    train_widget.start()
    assert "not empty" in train_widget.status.text()
    assert not (tmp_path / "run_data").exists()
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_a_labels_layer_on_another_grid_is_refused(train_widget, monkeypatch):
    """An audit: labels at scale 2 and 30 mm away were accepted and written on the image's
    grid, so the mask no longer lay on its vessels (the command line refuses that)."""
    monkeypatch.setattr(_workers, "show_error", lambda *a, **k: None)
    viewer = train_widget.viewer
    moved = viewer.add_labels(viewer.layers["ref"].data.copy(), name="moved",
                              scale=tuple(2 * s for s in SPACING), translate=TRANSLATE)
    train_widget.label_picker.set_layer(moved)
    train_widget.add_pair()
    assert "different grids" in train_widget.status.text()
    assert train_widget.pairs == [("ct", "ref")]


def test_labels_with_several_values_are_named_and_removed_pairs_are_not_trained(
        train_widget, tmp_path):
    """An audit: a labels layer with values {0, 1, 2, 7} became a vessel mask without a word,
    and a pair removed from the list was still in the data folder of the next run."""
    from napari_tubular.training import find_pairs

    viewer = train_widget.viewer
    many = viewer.layers["ref"].data.copy()
    many[many > 0] = 2
    multi = viewer.add_labels(many, name="multi", scale=SPACING, translate=TRANSLATE)
    train_widget.label_picker.set_layer(multi)
    train_widget.add_pair()
    assert "values other than 0 and 1 (2)" in train_widget.status.text()
    assert len(find_pairs(train_widget.config().data)) == 2
    train_widget.overwrite_check.setChecked(True)
    train_widget.pairs_list.setCurrentRow(1)
    train_widget._remove_pair()
    assert len(find_pairs(train_widget.config().data)) == 1


def test_only_the_panels_own_pair_files_are_cleared(train_widget, tmp_path):
    """A review: the clean-up glob deleted a user's pair01_ct_patient7.nii.gz and missed the
    panel's own pair100_image.nii.gz."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("pair01_ct_patient7.nii.gz", "pair100_image.nii.gz", "pair07_label.nii.gz",
                 "mine.nii.gz"):
        (folder / name).write_bytes(b"x")
    train_widget._write_pairs(folder)
    left = sorted(p.name for p in folder.iterdir())
    assert "pair01_ct_patient7.nii.gz" in left
    assert "mine.nii.gz" in left
    assert "pair100_image.nii.gz" not in left
    assert "pair07_label.nii.gz" not in left
    assert "pair00_image.nii.gz" in left  # the current pair


def test_a_pair_moved_after_add_pair_and_an_empty_run_folder_are_refused(train_widget,
                                                                        monkeypatch):
    """An audit: a labels layer moved after Add pair was trained on, written on the image's
    grid; an empty run folder field trained into napari's working directory; the patch box
    allowed 8 voxels, too few for the U-Net's bottom."""
    monkeypatch.setattr(_workers, "show_error", lambda *a, **k: None)
    ref = train_widget.viewer.layers["ref"]
    ref.translate = (TRANSLATE[0], TRANSLATE[1] + 42.0, TRANSLATE[2])
    with pytest.raises(ValueError, match="different grids"):
        train_widget.config()
    ref.translate = TRANSLATE
    train_widget.config()  # back in place: accepted
    train_widget.out_edit.setText("  ")
    with pytest.raises(ValueError, match="give a folder"):
        train_widget.config()
    assert train_widget.patch_spin.minimum() >= 16


@pytest.mark.slow
def test_save_model_waits_for_a_new_run(train_widget, qtbot, tmp_path):
    """An audit: after one run, Save model stayed enabled during the next run into the same
    folder and copied the model.pt that run was overwriting."""
    train_widget.start(_tiny(train_widget.config(), steps=1))
    assert train_widget.save_button.isEnabled()
    started = _start_long_run(train_widget)
    assert not train_widget.save_button.isEnabled()
    with pytest.raises(ValueError, match="no trained model"):
        train_widget.save_model(tmp_path / "early.pt")
    qtbot.waitUntil(started.is_set, timeout=30000)
    train_widget.stop()
    qtbot.waitUntil(lambda: not train_widget.running, timeout=30000)
    assert train_widget.save_button.isEnabled()  # the stopped run's weights
    assert train_widget.save_model(tmp_path / "stopped.pt").is_file()


def test_an_empty_labels_layer_is_named_at_add_pair(train_widget, monkeypatch):
    """An outside judge: an all-zero labels layer was added as "pair added: ..." and trained
    on as background without a word; it is named in a warning and in the status."""
    from napari.utils import notifications

    warned = []
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    viewer = train_widget.viewer
    empty = viewer.add_labels(np.zeros_like(viewer.layers["ref"].data), name="blank",
                              scale=SPACING, translate=TRANSLATE)
    train_widget.label_picker.set_layer(empty)
    train_widget.add_pair()
    assert len(train_widget.pairs) == 2  # added (it may be meant), but said
    assert "'blank' have no vessel voxel" in train_widget.status.text()
    assert len(warned) == 1
    assert "'blank'" in warned[0]
    assert "only teaches background" in warned[0]


def test_the_device_is_remembered_as_the_segment_panel_does(make_napari_viewer, monkeypatch):
    """The Fine-tune panel's device comes back in the next session ("cpu" at once, "cuda" only
    once a run on it has worked, so that a machine without one does not keep asking for it);
    it did not save its device at all."""
    from napari_tubular._widgets import train as train_module
    from napari_tubular._widgets._settings import load_settings

    widget = TrainingWidget(make_napari_viewer())
    widget.device_combo.setCurrentText("cpu")
    assert load_settings().device == "cpu"
    assert TrainingWidget(make_napari_viewer()).device_combo.currentText() == "cpu"
    widget.device_combo.setCurrentText("cuda")
    assert load_settings().device == "cpu"  # not yet: no run on it

    class Config:
        device = "cuda"
        out = "unused"

    monkeypatch.setattr(train_module, "_refuse_used_folder", lambda config: None)
    import napari_tubular.training as training

    monkeypatch.setattr(training, "train", lambda config, progress, cancel: "model.pt")
    widget.start(Config())
    assert load_settings().device == "cuda"


def test_a_diverged_run_names_the_panels_controls(train_widget, monkeypatch, tmp_path):
    """An outside judge: a run whose loss became NaN told the panel's user to lower "--lr",
    pass "--no-amp" and "--resume", command-line options the panel has none of. The panel's
    message names its own controls; the command line's text is unchanged (tests/test_training)."""
    from napari_tubular.models import unet
    from napari_tubular.training.loop import divergence_message

    forward, calls = unet.TubularUNet.forward, [0]

    def nan_forward(self, x):
        out = forward(self, x)
        if self.training:
            calls[0] += 1
            if calls[0] >= 3:
                out["seg"] = out["seg"] * float("nan")
        return out

    monkeypatch.setattr(unet.TubularUNet, "forward", nan_forward)
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    train_widget.start(_tiny(train_widget.config(), steps=5, checkpoint_every=2))
    assert shown
    message = train_widget.status.text()
    assert "training diverged at step 3 of 5" in message
    assert "lower the 'learning rate' (0.0005" in message
    assert f"{tmp_path / 'run' / 'last.pt'} holds the weights of step 2" in message
    assert "Start again with a lower 'learning rate'" in message
    assert f"napari-tubular train --out {tmp_path / 'run'} --resume" in message
    assert "--lr" not in message
    assert "--resume and" not in message
    assert "--lr" not in shown[-1]
    # mixed precision (on CUDA only): named as the panel can change it
    from napari_tubular._widgets.train import PANEL_DIVERGENCE_HINTS
    from napari_tubular.training import TrainConfig

    amp = divergence_message(3, TrainConfig(data=["x"], steps=5), float("nan"), {}, lr=1e-3,
                             amp=True, hints=PANEL_DIVERGENCE_HINTS)
    assert "choose device 'cpu'" in amp
    assert "(--no-amp)" not in amp
    cli = divergence_message(3, TrainConfig(data=["x"], steps=5), float("nan"), {}, lr=1e-3,
                             amp=True)
    assert "(--no-amp)" in cli
    assert "--lr" in cli


def test_starting_from_the_run_folders_own_model_is_said_in_the_panels_words(
        train_widget, monkeypatch, tmp_path):
    """An outside judge: to go on from a stopped run, "start from: model file" its model.pt
    with "replace an existing run folder" ticked; the run failed with the core's "init_model
    ... is one of the files --overwrite would delete ...; or choose another --out". It is
    refused before the run, naming the panel's checkbox, and the file is kept."""
    shown = []
    monkeypatch.setattr(_workers, "show_error", shown.append)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"the stopped run's weights")
    train_widget.overwrite_check.setChecked(True)
    config = dataclasses.replace(_tiny(train_widget.config(), steps=1),
                                 init_model=str(run / "model.pt"))
    train_widget.start(config)
    assert shown
    assert 'the model file' in shown[-1]
    assert '"replace an existing run folder" deletes' in shown[-1]
    assert "--" not in shown[-1]
    assert not train_widget.running
    assert train_widget.start_button.isEnabled()
    assert (run / "model.pt").read_bytes() == b"the stopped run's weights"


def test_a_multiscale_labels_layer_is_written_at_its_finest_level(make_napari_viewer,
                                                                  vessel_case, tmp_path):
    """An outside judge: the pair files were written from ``labels.data > 0``, a TypeError for
    a multiscale (pyramid) labels layer; its finest level is the one its scale describes."""
    from napari_tubular.io import read_volume

    mask = vessel_case.mask.astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(vessel_case.image, name="ct", scale=SPACING, translate=TRANSLATE)
    labels = viewer.add_labels([mask, mask[::2, ::2, ::2]], name="pyramid", scale=SPACING,
                               translate=TRANSLATE, multiscale=True)
    widget = TrainingWidget(viewer)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.init_combo.setCurrentText("random weights")
    widget.label_picker.set_layer(labels)
    widget.add_pair()
    assert widget.pairs == [("ct", "pyramid")]
    widget.config()
    written = read_volume(tmp_path / "run_data" / "pair00_label.nii.gz")
    np.testing.assert_array_equal(written.data, mask > 0)


def test_a_renamed_pair_is_not_added_twice(train_widget):
    """An outside judge: pairs were told apart by layer name, so after a rename the same two
    layers were added (and trained on) twice."""
    viewer = train_widget.viewer
    viewer.layers["ct"].name = "ct renamed"
    train_widget.add_pair()
    assert len(train_widget.pairs) == 1
    assert "in the list already" in train_widget.status.text()


def test_the_pair_list_shows_the_layers_names_now(train_widget, tmp_path):
    """An outside judge: after a rename the list still showed the old name (the pair is kept
    by identity); a deleted layer's pair gave no sign until Start."""
    viewer = train_widget.viewer
    viewer.layers["ct"].name = "patient 1"
    viewer.layers["ref"].name = "patient 1 vessels"
    assert train_widget.pairs_list.item(0).text() == "patient 1  +  patient 1 vessels"
    assert train_widget.pairs == [("patient 1", "patient 1 vessels")]
    # the message of a pair added again names it as it is now
    train_widget.add_pair()
    assert "(as patient 1  +  patient 1 vessels)" in train_widget.status.text()
    viewer.layers.remove("patient 1 vessels")
    assert train_widget.pairs_list.item(0).text() == "patient 1  +  patient 1 vessels (deleted)"
    with pytest.raises(ValueError, match="'patient 1 vessels'.*no longer in the viewer"):
        train_widget.config()


def test_a_model_file_to_start_from_under_the_home_folder_is_found(train_widget, tmp_path,
                                                                    monkeypatch):
    """As the run folder: "~/m.pt" is the home folder's m.pt (it was "does not exist")."""
    from tests._tiny_model import save_tiny_model

    monkeypatch.setenv("HOME", str(tmp_path))
    save_tiny_model(tmp_path / "m.pt", K=4)
    train_widget.init_combo.setCurrentText("model file")
    train_widget.init_path.setText("~/m.pt")
    config = train_widget.config()
    assert config.init_model == str(tmp_path / "m.pt")
    assert config.K == 4
