"""Training widget: a short training run on layer pairs, folders or synthetic cases.

Layer pairs are written (with their geometry, via ``io.write_volume``) as
``pairNN_image.nii.gz`` / ``pairNN_label.nii.gz`` into ``<run folder>_data`` (beside the run
folder, which must be empty for a new run) so that
``training.train`` reads them like any folder of pairs. The run goes in a worker with a live
loss plot (from the core's ``progress`` messages) and can be stopped; ``Save model...`` copies
the trained model file.
"""

from __future__ import annotations

import re
import shutil
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_tubular._widgets._layers import (
    LayerPicker,
    layer_data,
    layer_geometry,
    same_layer,
    scrollable_layout,
    volume_from_layer,
)
from napari_tubular._widgets._settings import DEVICES, load_settings, update_settings
from napari_tubular._widgets._workers import (
    CancelToken,
    ProgressRelay,
    report_error,
    start_job,
    sync_default,
)

if TYPE_CHECKING:
    import napari

SOURCES = ("layer pairs", "folders", "synthetic")
_LOSS_RE = re.compile(r"\bloss ([0-9.eE+-]+)")


#: what a run starts from: the shipped model, a model file, or random weights
INIT_CHOICES = ("default model", "model file", "random weights")


def _check_pair(image, labels) -> None:
    """Refuse an (image, labels) layer pair of other shapes or grids (ValueError)."""
    layer_geometry(image)
    layer_geometry(labels)
    # a multiscale layer's finest level, the one written (and its ``scale``'s)
    shapes = [tuple(np.shape(ly.data[0] if getattr(ly, "multiscale", False) else ly.data))
              for ly in (image, labels)]
    if shapes[0] != shapes[1]:
        raise ValueError(
            f"image {image.name!r} {shapes[0]} and labels "
            f"{labels.name!r} {shapes[1]} differ in shape"
        )
    # the grids, as the command line checks them (an audit: labels placed 30 mm away at
    # another scale were accepted and written on the image's grid)
    differences = volume_from_layer(image).geometry_differences(
        volume_from_layer(labels), atol=1e-3)
    if differences:
        raise ValueError(f"image {image.name!r} and labels {labels.name!r} are on different "
                         f"grids ({'; '.join(differences)}): the labels would not lie on their "
                         "vessels")


#: how a diverged run's message names what to try in this panel (the core's names the command
#: line's ``--lr``, ``--no-amp`` and ``--resume``, which mean nothing here: an outside judge)
PANEL_DIVERGENCE_HINTS = {
    "lr": "lower the 'learning rate' ({lr:g}; {now:.3g} at this step)",
    "amp": ("disable mixed precision (this panel has no switch for it: choose device 'cpu', "
            "or train with `napari-tubular train --no-amp`)"),
    "resume": ("{last} holds the weights of step {step}; Start again with a lower 'learning "
               "rate' (tick \"replace an existing run folder\" or choose another run folder), "
               "or continue this run with `napari-tubular train --out {last.parent} --resume`"),
    "no_checkpoint": ("no checkpoint was written yet; Start again with a lower 'learning "
                      "rate' (tick \"replace an existing run folder\" or choose another run "
                      "folder)"),
}


def panel_error(exc: BaseException) -> BaseException:
    """The core's error as this panel says it: a diverged run's hints name the panel's
    controls (:data:`PANEL_DIVERGENCE_HINTS`); any other error is returned as it is."""
    from napari_tubular.training import TrainingDiverged
    from napari_tubular.training.loop import divergence_message

    details = getattr(exc, "details", None)
    if not isinstance(exc, TrainingDiverged) or not details:
        return exc
    return TrainingDiverged(divergence_message(**details, hints=PANEL_DIVERGENCE_HINTS),
                            details)


def _refuse_used_folder(config) -> None:
    """FileExistsError when a new run would replace files in ``config.out`` (the core's test;
    its message names the command line's options, this one the panel's checkbox)."""
    from napari_tubular.training import run_folder_in_use

    if run_folder_in_use(config):
        raise FileExistsError(
            f"run folder {config.out} is not empty: tick \"replace an existing run folder\" "
            "or choose another folder"
        )


def _refuse_replaced_init_model(config) -> None:
    """ValueError when "replace an existing run folder" would delete the model file the run
    starts from (an outside judge: continuing a stopped run from its model.pt, in its own
    folder, failed with the core's "--overwrite would delete ... or choose another --out")."""
    from napari_tubular.training import init_model_would_be_replaced

    if init_model_would_be_replaced(config):
        raise ValueError(
            f"start from: the model file {config.init_model} is in the run folder "
            f"{config.out}, whose files \"replace an existing run folder\" deletes: save it "
            "elsewhere first (Save model...) and start from that copy, or choose another run "
            "folder")


def parse_loss(message: str) -> float | None:
    """The training loss in a core progress message (``"step 3/10 loss 0.41 | ..."``), or None."""
    match = _LOSS_RE.search(message or "")
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


class LossPlot(QWidget):
    """A small matplotlib plot of the training loss against the step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3, 2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self._redraw()

    def clear(self) -> None:
        self.steps, self.losses = [], []
        self._redraw()

    def add(self, step: int, loss: float) -> None:
        if self.steps and step <= self.steps[-1]:
            return
        self.steps.append(int(step))
        self.losses.append(float(loss))
        self._redraw()

    def _redraw(self) -> None:
        ax = self.axes
        ax.clear()
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        if self.steps:
            ax.plot(self.steps, self.losses, "o-", markersize=3)
        self.canvas.draw_idle()


class TrainingWidget(QWidget):
    """Start / stop a short training run and save the model.

    Args:
        napari_viewer: the viewer.
        sync: run jobs in the GUI thread (tests); default from ``NAPARI_TUBULAR_SYNC``.

    Attributes:
        pairs: (image layer name, labels layer name) pairs for the "layer pairs" source.
        model_path: the trained model file of the last finished run, or None.
    """

    def __init__(self, napari_viewer: napari.Viewer, sync: bool | None = None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.sync = sync_default() if sync is None else sync
        self.pairs: list[tuple[str, str]] = []
        self._pair_layers: list[tuple] = []
        self.model_path: Path | None = None
        self._job = None
        self._build_ui()

    def _build_ui(self) -> None:
        settings = load_settings()
        layout = scrollable_layout(self)
        data_box = QGroupBox("Data")
        form = QFormLayout(data_box)
        self.source_combo = QComboBox()
        self.source_combo.addItems(list(SOURCES))
        form.addRow("source", self.source_combo)
        self.image_picker = LayerPicker(self.viewer, ["image"])
        self.label_picker = LayerPicker(self.viewer, ["labels"])
        add = QPushButton("Add pair")
        add.clicked.connect(self.add_pair)
        remove = QPushButton("Remove")
        remove.clicked.connect(self._remove_pair)
        form.addRow("image", self.image_picker)
        form.addRow("labels", self.label_picker)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        form.addRow(row)
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(80)
        form.addRow(self.pairs_list)
        self.folders_edit = QLineEdit()
        self.folders_edit.setPlaceholderText(
            "folders with <name>_image / <name>_label, ';'-separated"
        )
        browse = QPushButton("...")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_folder)
        frow = QHBoxLayout()
        frow.addWidget(self.folders_edit)
        frow.addWidget(browse)
        form.addRow("folders", frow)
        layout.addWidget(data_box)

        opt_box = QGroupBox("Run")
        opt = QFormLayout(opt_box)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(200)
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(16, 256)  # 8 left one voxel at the U-Net's bottom (an audit)
        self.patch_spin.setSingleStep(8)
        self.patch_spin.setValue(48)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 64)
        self.batch_spin.setValue(2)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(5e-4)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setCurrentText(settings.device)
        self.device_combo.currentTextChanged.connect(self._on_device)
        self.out_edit = QLineEdit(str(Path.home() / "napari-tubular-runs" / "finetune"))
        self.init_combo = QComboBox()
        self.init_combo.addItems(list(INIT_CHOICES))
        self.init_combo.setToolTip(
            "fine-tune the default model or a model file (its architecture, K and spacing are "
            "used), or train a new network from random weights"
        )
        self.init_path = QLineEdit()
        self.init_path.setPlaceholderText("model file for 'model file'")
        opt.addRow("start from", self.init_combo)
        opt.addRow("", self.init_path)
        opt.addRow("steps", self.steps_spin)
        opt.addRow("patch size (vox)", self.patch_spin)
        opt.addRow("batch size", self.batch_spin)
        opt.addRow("learning rate", self.lr_spin)
        opt.addRow("device", self.device_combo)
        opt.addRow("run folder", self.out_edit)
        self.overwrite_check = QCheckBox("replace an existing run folder")
        opt.addRow(self.overwrite_check)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        # clicked(bool) would pass ``checked`` as the config
        self.start_button.clicked.connect(lambda _checked=False: self.start())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.save_button = QPushButton("Save model...")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        for b in (self.start_button, self.stop_button, self.save_button):
            buttons.addWidget(b)
        opt.addRow(buttons)
        self.progress_bar = QProgressBar()
        opt.addRow(self.progress_bar)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        opt.addRow(self.status)
        layout.addWidget(opt_box)
        self.plot = LossPlot()
        self.plot.setMinimumHeight(160)
        layout.addWidget(self.plot)

        self.relay = ProgressRelay()
        self.relay.progressed.connect(self._on_progress)

    # ------------------------------------------------------------------ data
    def add_pair(self) -> None:
        """Add the chosen (image, labels) layers as a training pair."""
        image, labels = self.image_picker.layer(), self.label_picker.layer()
        try:
            if image is None or labels is None:
                raise ValueError("choose an image layer and a labels layer")
            _check_pair(image, labels)
        except ValueError as exc:
            self.status.setText(report_error("Add pair", exc))
            return
        pair = (image.name, labels.name)
        self.source_combo.setCurrentText("layer pairs")
        # the same layers, by identity (an outside judge: after a rename the same pair was
        # added again under the new name, and trained on twice)
        listed = next((i for i, (im, lb) in enumerate(self._pair_layers)
                       if same_layer(im, image) and same_layer(lb, labels)), None)
        if listed is not None:
            self.status.setText(f"this pair is in the list already (as "
                                f"{self.pairs_list.item(listed).text().strip()}): "
                                f"{pair[0]} + {pair[1]}")
            return
        self.pairs.append(pair)
        self._pair_layers.append((image, labels))  # found again by identity (renames)
        self.pairs_list.addItem(f"{pair[0]}  +  {pair[1]}")
        self._follow_names(image, labels)
        from napari_tubular.training.data import label_values_note

        mask = layer_data(labels)
        if not (mask > 0).any():
            # said here, naming the layer (an outside judge: an all-zero labels layer was
            # added as "pair added" and trained on as background without a word)
            note = (f"labels {labels.name!r} have no vessel voxel (nothing above 0): the pair "
                    "only teaches background")
            from napari.utils.notifications import show_warning

            show_warning(f"Add pair: {note}")
        else:
            note = label_values_note(mask)
        self.status.setText(f"pair added; {note}" if note else
                            f"pair added: {image.name} + {labels.name}")

    def _follow_names(self, *layers) -> None:
        """Keep the list's names those of the layers now (an outside judge: after a rename
        the list showed the old name, though the pair is kept by identity), and say a pair
        whose layer was deleted."""
        me = weakref.ref(self)

        def renamed(_event=None):
            widget = me()
            if widget is not None:
                widget._show_pair_names()

        for layer in layers:
            layer.events.name.connect(renamed)
        if not getattr(self, "_follows_removals", False):
            self.viewer.layers.events.removed.connect(renamed)
            self._follows_removals = True

    def _show_pair_names(self) -> None:
        """The pairs' names (``pairs`` and the list) as the layers are called now; a layer no
        longer in the viewer is marked "(deleted)"."""
        try:
            present = list(self.viewer.layers)
        except RuntimeError:  # the viewer is being torn down
            return
        for row, chosen in enumerate(self._pair_layers):
            names = tuple(layer.name for layer in chosen)
            self.pairs[row] = names
            gone = [not any(same_layer(ly, layer) for ly in present) for layer in chosen]
            text = "  +  ".join(f"{name} (deleted)" if lost else name
                                for name, lost in zip(names, gone))
            try:
                item = self.pairs_list.item(row)
            except RuntimeError:  # the panel's Qt objects are gone (the viewer closed)
                return
            if item is not None and item.text() != text:
                item.setText(text)

    def _remove_pair(self) -> None:
        row = self.pairs_list.currentRow()
        if row >= 0:
            self.pairs.pop(row)
            self._pair_layers.pop(row)
            self.pairs_list.takeItem(row)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of image/label pairs")
        if folder:
            text = self.folders_edit.text().strip()
            self.folders_edit.setText(f"{text};{folder}" if text else folder)
            self.source_combo.setCurrentText("folders")

    def _write_pairs(self, folder: Path) -> list[str]:
        from napari_tubular.io import write_volume

        folder.mkdir(parents=True, exist_ok=True)
        # the pairs of an earlier run, removed from the list since, are not trained on again
        # (an audit: the folder kept them and the new run read them)
        for old in folder.glob("pair*_*.nii.gz"):
            if re.fullmatch(r"pair\d+_(image|label)\.nii\.gz", old.name):  # ours only (a review)
                old.unlink()
        for i, ((image_name, label_name), chosen) in enumerate(
            zip(self.pairs, self._pair_layers)
        ):
            found = [next((ly for ly in self.viewer.layers if same_layer(ly, c)), None)
                     for c in chosen]
            if None in found:
                raise ValueError(
                    f"layer pair ({image_name!r}, {label_name!r}) is no longer in the viewer: "
                    "remove the pair from the list and add the layers again"
                )
            # checked again: a layer moved or rescaled after Add pair (an audit: the run trained
            # on labels written onto the image's grid 42 mm away)
            _check_pair(*found)
            image = volume_from_layer(found[0])
            labels = found[1]
            stem = f"pair{i:02d}"
            write_volume(folder / f"{stem}_image.nii.gz", image, overwrite=True)
            # the finest level of a multiscale labels layer (an outside judge: ``labels.data
            # > 0`` of a pyramid failed with a TypeError)
            write_volume(
                folder / f"{stem}_label.nii.gz",
                image.with_data((layer_data(labels) > 0).astype("uint8")),
                overwrite=True,
            )
        return [str(folder)]

    def config(self):
        """The ``TrainConfig`` for the current settings (writes layer pairs to disk).

        Raises:
            ValueError: no data chosen, or invalid options.
        """
        from napari_tubular.training import TrainConfig

        text = self.out_edit.text().strip()
        if not text:
            # an audit: an empty field trained into napari's working directory
            raise ValueError("run folder: give a folder for the run's files")
        out = Path(text).expanduser()
        # before the layer pairs are written beside it (an audit: they were written, then the
        # run was refused)
        _refuse_used_folder(SimpleNamespace(out=str(out), resume=False,
                                            overwrite=self.overwrite_check.isChecked()))
        source = self.source_combo.currentText()
        if source == "layer pairs":
            if not self.pairs:
                raise ValueError("layer pairs: add at least one (image, labels) pair")
            data = self._write_pairs(out.parent / f"{out.name}_data")
            val: list[str] = []
        elif source == "folders":
            data = [f.strip() for f in self.folders_edit.text().split(";") if f.strip()]
            if not data:
                raise ValueError("folders: give at least one folder of image/label pairs")
            val = []
        else:
            data, val = ["synthetic"], ["synthetic"]
        p = self.patch_spin.value()
        init = self.init_combo.currentText()
        init_model = {"default model": "default", "model file": self.init_path.text().strip()}.get(
            init
        )
        if init_model and init_model.startswith("~"):  # as the run folder is read
            init_model = str(Path(init_model).expanduser())
        extra = {}
        if init_model is not None:
            if not init_model:
                raise ValueError("start from: give the model file to fine-tune")
            from napari_tubular.models import read_model_meta

            meta = read_model_meta(init_model)
            extra = {"init_model": init_model, "K": int(meta["K"]),
                     "target_spacing": tuple(meta["spacing"])}
        return TrainConfig(
            data=data,
            val_data=val,
            out=str(out),
            steps=self.steps_spin.value(),
            patch_size=(p, p, p),
            batch_size=self.batch_spin.value(),
            lr=self.lr_spin.value(),
            device=self.device_combo.currentText(),
            overwrite=self.overwrite_check.isChecked(),
            val_every=0,
            val_cases=1,
            checkpoint_every=max(10, self.steps_spin.value()),
            log_every=1,
            description="fine-tuned in the napari-tubular widget",
            **extra,
        )

    # ------------------------------------------------------------------ run
    def _on_device(self, device: str) -> None:
        # the device is remembered for the next session, as the Segment panel does ("cuda"
        # once a run on it has worked: chosen on a machine without one, it would come back)
        if device in DEVICES and device != "cuda":
            update_settings(device=device)

    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def start(self, config=None) -> None:
        """Start training (``config`` overrides the widget's settings, for scripts/tests)."""
        if self.running:
            return
        try:
            if config is None:
                config = self.config()  # refuses a used run folder itself, before writing
            else:
                _refuse_used_folder(config)
            _refuse_replaced_init_model(config)
        except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
            self.status.setText(report_error("Training", exc))
            return
        token = CancelToken()
        relay = self.relay

        def compute():
            from napari_tubular.training import TrainingDiverged, train

            try:
                return train(config, progress=relay, cancel=token)
            except TrainingDiverged as exc:
                raise panel_error(exc) from exc

        def returned(path):
            if str(getattr(config, "device", "")) == "cuda":
                update_settings(device="cuda")  # remembered once a run on it has worked
            self.model_path = Path(path)
            self.save_button.setEnabled(True)
            self.status.setText(f"done: {self.model_path}")

        def finished():
            self.start_button.setEnabled(True)
            self.stop_button.setEnabled(False)

        self.plot.clear()
        # the previous run's model is not this run's: Save model waits for this run (an audit:
        # it stayed enabled and copied a model.pt the new run was overwriting)
        self.model_path = None
        self.save_button.setEnabled(False)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText("starting...")
        self._job = start_job(
            compute,
            sync=self.sync,
            what="Training",
            owner=self,
            token=token,
            on_returned=returned,
            on_finished=finished,
            on_cancelled=lambda: self._stopped(Path(config.out) / "model.pt"),
            on_error=lambda exc: self.status.setText(f"error: {exc}"),
        )

    def event(self, event) -> bool:  # noqa: D102 (Qt override)
        # napari's remove_dock_widget (the dock's close button) takes the widget out of its
        # dock with setParent(None): the panel is gone, so its training run stops (an audit: it
        # ran on for minutes with nothing left to stop it); the weights so far are saved
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.running:
            self.stop()
            from napari.utils.notifications import show_info

            show_info("Training stopped: the Fine-tune panel was closed (the model so far is "
                      "saved as model.pt in the run folder).")
        return super().event(event)

    def _stopped(self, model_file: Path) -> None:
        """A stopped run saved its weights so far as a model file: offer to save it."""
        if model_file.is_file():
            self.model_path = model_file
            self.save_button.setEnabled(True)
            self.status.setText(f"stopped: the model so far is {model_file} (Save model...)")
        else:
            self.status.setText("stopped before the first step: no model")

    def stop(self) -> None:
        """Ask the training loop to stop (it saves ``last.pt`` and ``model.pt`` first)."""
        if self.running:
            self._job.cancel()
            self.status.setText("stopping...")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.status.setText(message)
        loss = parse_loss(message)
        if loss is not None:
            self.plot.add(done, loss)

    def save_model(self, path: str | Path, overwrite: bool = False) -> Path:
        """Copy the trained model file to ``path``.

        Raises:
            ValueError: no finished run yet.
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        if self.model_path is None or not self.model_path.is_file():
            raise ValueError("no trained model yet: start a run and let it finish")
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model_path, path)
        return path

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "finetuned.pt", "Models (*.pt)")
        if path:
            try:
                self.save_model(path, overwrite=True)
                self.status.setText(f"saved {path}")
            except (ValueError, OSError) as exc:
                report_error("Save model", exc)
