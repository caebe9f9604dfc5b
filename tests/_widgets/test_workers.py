"""Worker plumbing: outcomes routed to the right callbacks, errors as notifications, debounce."""

import threading

import pytest

from napari_tubular._widgets import _workers
from napari_tubular._widgets._workers import CancelToken, Debouncer, ProgressRelay, start_job

pytestmark = pytest.mark.gui


@pytest.fixture
def shown(monkeypatch):
    messages = []
    monkeypatch.setattr(_workers, "show_error", messages.append)
    monkeypatch.setattr(_workers, "show_info", messages.append)
    return messages


def _calls():
    log = []
    return log, {
        "on_returned": lambda r: log.append(("returned", r)),
        "on_error": lambda e: log.append(("error", type(e).__name__)),
        "on_cancelled": lambda: log.append(("cancelled",)),
        "on_finished": lambda: log.append(("finished",)),
    }


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ValueError("spacing: bad"), "Job failed: spacing: bad"),
        (FileNotFoundError("x.pt missing"), "Job failed: x.pt missing"),
        (ZeroDivisionError("oops"), "Job failed (ZeroDivisionError): oops"),
    ],
)
def test_errors_become_notifications(qapp, shown, exc, text):
    def boom():
        raise exc

    log, callbacks = _calls()
    job = start_job(boom, sync=True, what="Job", **callbacks)
    assert shown == [text]
    assert log == [("error", type(exc).__name__), ("finished",)]
    assert not job.running


def test_a_failure_while_showing_the_result_is_reported(qapp, shown):
    """An audit: an exception in the result callback (e.g. a NameError while adding layers)
    reached only the console and left the widget half-updated; it is now shown like a failed
    job and the error callback runs."""
    log, callbacks = _calls()

    def show(_result):
        raise NameError("name 'find_owned_layer' is not defined")

    callbacks["on_returned"] = show
    start_job(lambda: 1, sync=True, what="Segmentation", **callbacks)
    assert shown == ["Segmentation failed (NameError): name 'find_owned_layer' is not defined"]
    assert log == [("error", "NameError"), ("finished",)]


def test_core_cancelled_is_not_an_error(qapp, shown):
    class Cancelled(RuntimeError):
        pass

    def stopped():
        raise Cancelled("inference cancelled")

    log, callbacks = _calls()
    start_job(stopped, sync=True, what="Job", **callbacks)
    assert log == [("cancelled",), ("finished",)]
    assert shown == ["Job cancelled."]


def test_cancel_discards_a_result_that_arrives_late(qtbot, shown):
    release = threading.Event()
    token = CancelToken()

    def work():
        release.wait(5)  # ignores the token, like a core step that cannot be interrupted
        return 42

    log, callbacks = _calls()
    job = start_job(work, sync=False, what="Job", token=token, **callbacks)
    job.cancel()
    assert token()
    release.set()
    qtbot.waitUntil(lambda: not job.running, timeout=5000)
    assert log == [("cancelled",), ("finished",)]


def test_progress_relay_reaches_the_gui_thread(qtbot):
    relay = ProgressRelay()
    seen = []
    relay.progressed.connect(lambda d, t, m: seen.append((d, t, m, threading.get_ident())))
    job = start_job(lambda: [relay(i, 3, f"step {i}") for i in range(1, 4)], sync=False, what="Job")
    qtbot.waitUntil(lambda: not job.running and len(seen) == 3, timeout=5000)
    assert [s[:3] for s in seen] == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert {s[3] for s in seen} == {threading.get_ident()}


def test_debouncer_coalesces_triggers(qtbot):
    calls = []
    debouncer = Debouncer(lambda: calls.append(1), delay_ms=50)
    for _ in range(5):
        debouncer.trigger()
    assert calls == []
    qtbot.waitUntil(lambda: calls == [1], timeout=2000)
    qtbot.wait(120)
    assert calls == [1]
    sync = Debouncer(lambda: calls.append(2), sync=True)
    sync.trigger()
    assert calls == [1, 2]


@pytest.mark.parametrize("sync", [True, False])
def test_core_warnings_become_warning_notifications(qtbot, monkeypatch, sync):
    """An outside judge: superqt's worker routes ``warnings.warn`` to its ``warned`` signal
    only, and napari (PyQt) relays nothing from it, so the core's warnings during a job (an
    empty training label, a constant image) reached neither the viewer nor the console."""
    import warnings

    warned = []
    monkeypatch.setattr(_workers, "show_warning", warned.append, raising=False)
    monkeypatch.setattr(_workers, "_SHOWN_WARNINGS", set(), raising=False)

    def work():
        warnings.warn("the label is empty (no vessel voxel)", UserWarning, stacklevel=2)
        return 1

    log, callbacks = _calls()
    job = start_job(work, sync=sync, what="Training", **callbacks)
    qtbot.waitUntil(lambda: ("finished",) in log, timeout=5000)
    assert not job.running
    assert warned == ["Training: the label is empty (no vessel voxel)"]
    assert log == [("returned", 1), ("finished",)]


def test_a_repeated_warning_is_shown_once_and_given_to_the_widget(qapp, monkeypatch):
    """Each refinement of a slider drag warned the same text: it is shown once a session,
    and ``on_warned`` hears it when it is shown (a widget then does not repeat it as an info,
    and may say it itself when it is not shown again)."""
    import warnings

    warned, heard = [], []
    monkeypatch.setattr(_workers, "show_warning", warned.append)
    monkeypatch.setattr(_workers, "_SHOWN_WARNINGS", set())
    for _ in range(3):
        start_job(lambda: warnings.warn("T_p leaves nothing", UserWarning, stacklevel=2),
                  sync=True, what="Refinement", on_warned=heard.append)
    assert warned == ["Refinement: T_p leaves nothing"]
    assert heard == ["T_p leaves nothing"]


def test_a_viewer_warning_during_a_job_is_not_said_as_the_jobs(qapp, monkeypatch):
    """An outside judge: with a sagittal file open, napari's own slicing warning, raised in the
    GUI thread while the Segment panel's device detection ran, read "Device detection:
    Non-orthogonal slicing is being requested" (superqt catches every thread's warnings while
    a job runs); it is said as the viewer's, and the widget does not take it for the job's."""
    import os
    import warnings

    import napari

    warned, heard = [], []
    monkeypatch.setattr(_workers, "show_warning", warned.append)
    monkeypatch.setattr(_workers, "_SHOWN_WARNINGS", set())
    napari_file = os.path.join(os.path.dirname(napari.__file__), "layers", "utils",
                               "_slice_input.py")

    def work():
        warnings.warn_explicit("Non-orthogonal slicing is being requested", UserWarning,
                               napari_file, 1)
        warnings.warn("the image is constant", UserWarning, stacklevel=1)

    start_job(work, sync=True, what="Device detection", on_warned=heard.append)
    assert warned == ["Non-orthogonal slicing is being requested",
                      "Device detection: the image is constant"]
    assert heard == ["the image is constant"]
