"""The npe2 manifest: valid, every python_name importable, widgets constructible from napari."""

from pathlib import Path

import pytest
import yaml

import napari_tubular

MANIFEST = Path(napari_tubular.__file__).parent / "napari.yaml"


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_is_the_installed_one():
    from npe2 import PluginManifest

    installed = PluginManifest.from_distribution("napari-tubular")
    assert installed.name == _manifest().name == "napari-tubular"
    assert {c.id for c in installed.contributions.commands} == {
        c.id for c in _manifest().contributions.commands
    }


def test_every_python_name_imports():
    from npe2.manifest.utils import import_python_name

    mf = _manifest()
    mf.validate_imports()  # what `npe2 validate --imports` runs
    for command in mf.contributions.commands:
        assert command.id.startswith("napari-tubular.")
        obj = import_python_name(command.python_name)
        assert callable(obj), command.python_name


def test_widgets_take_the_viewer():
    import inspect

    from npe2.manifest.utils import import_python_name
    from qtpy.QtWidgets import QWidget

    mf = _manifest()
    commands = {c.id: c for c in mf.contributions.commands}
    assert len(mf.contributions.widgets) == 4
    for widget in mf.contributions.widgets:
        cls = import_python_name(commands[widget.command].python_name)
        assert issubclass(cls, QWidget)
        assert "napari_viewer" in inspect.signature(cls.__init__).parameters


def test_menu_additions_are_valid():
    from napari._app_model.constants._menus import MenuId
    from npe2 import PluginManifest

    mf = PluginManifest(**yaml.safe_load(MANIFEST.read_text()))  # npe2 schema check
    assert set(mf.contributions.menus) == {"napari/layers/segment", "napari/layers/measure"}
    contributable = {str(m) for m in MenuId.contributables()}
    widget_commands = {w.command for w in mf.contributions.widgets}
    for menu_id, items in mf.contributions.menus.items():
        assert menu_id in contributable, menu_id
        for item in items:
            assert item.command in widget_commands


@pytest.mark.gui
def test_widgets_open_through_the_plugin_manager(make_napari_viewer, monkeypatch, tmp_path):
    from napari_tubular._widgets.distance import DistanceMapWidget
    from napari_tubular._widgets.review import TopologyReviewWidget
    from napari_tubular._widgets.segment import SegmentWidget
    from napari_tubular._widgets.train import TrainingWidget

    monkeypatch.setenv("NAPARI_TUBULAR_SYNC", "1")
    monkeypatch.setenv("NAPARI_TUBULAR_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer()
    expected = {
        "Segment (DDT)": SegmentWidget,
        "Distance maps & centerlines": DistanceMapWidget,
        "Topology review": TopologyReviewWidget,
        "Fine-tune": TrainingWidget,
    }
    for name, cls in expected.items():
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-tubular", name)
        assert isinstance(widget, cls)
