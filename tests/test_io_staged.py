"""napari_tubular.io.write_staged: a set of output files written as a whole (the writer of
``segment``'s outputs, ``refine``'s labels and skeleton and ``save_case``'s case)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from napari_tubular.io import VolumeIOError, restore_output_names, write_staged


def _text_writer(text: str, calls: list | None = None):
    def write(path: Path) -> None:
        if calls is not None:
            calls.append(path)
        path.write_text(text)

    return write


def _failing(exc: BaseException, calls: list | None = None):
    def write(path: Path) -> None:
        if calls is not None:
            calls.append(path)
        path.write_text("half")  # a file half-written under its temporary name
        raise exc

    return write


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if not p.is_symlink()}


def test_writes_the_set_under_temporary_names_then_renames(tmp_path):
    outs = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    calls: list[Path] = []
    write_staged([(p, _text_writer(p.stem, calls)) for p in outs])
    assert _listing(tmp_path) == {"a.txt": "a", "b.txt": "b", "c.txt": "c"}
    # each written beside its output under a hidden temporary name, in the order given
    assert [c.name for c in calls] == [f".partial-{os.getpid()}-{p.name}" for p in outs]
    assert all(c.parent == tmp_path for c in calls)


@pytest.mark.parametrize("exc", [OSError("No space left on device"), KeyboardInterrupt(),
                                 ValueError("bad data")])
def test_an_error_in_the_middle_leaves_the_set_as_it_was(tmp_path, exc):
    """The first file written, the second failing: the old files are kept as they were, the
    third is never written, and no temporary file is left; the error goes on as it is."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    outs[0].write_text("old a")
    outs[1].write_text("old b")
    calls: list[Path] = []
    files = [(outs[0], _text_writer("new a", calls)), (outs[1], _failing(exc, calls)),
             (outs[2], _text_writer("new c", calls))]
    with pytest.raises(type(exc)) as info:
        write_staged(files)
    assert info.value is exc
    assert len(calls) == 2
    assert _listing(tmp_path) == {"a.txt": "old a", "b.txt": "old b"}


def test_files_that_appeared_meanwhile_are_not_replaced(tmp_path):
    """``appeared``: an output there after the writes, not among ``replaceable`` (another
    process wrote it meanwhile), stops the set before any rename."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]

    def other_process(path: Path) -> None:
        outs[1].write_text("theirs")
        path.write_text("new a")

    with pytest.raises(FileExistsError, match="b.txt appeared"):
        write_staged([(outs[0], other_process), (outs[1], _text_writer("new b"))],
                     appeared=lambda p: f"{p.name} appeared")
    assert _listing(tmp_path) == {"b.txt": "theirs"}


def test_existing_files_are_kept_without_overwrite(tmp_path):
    """An existing output, not replaceable: nothing of the set replaced, nothing left."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    outs[1].write_text("kept")
    with pytest.raises(FileExistsError, match=r"b\.txt exists"):
        write_staged([(p, _text_writer("new")) for p in outs],
                     appeared=lambda p: f"{p} exists")
    assert _listing(tmp_path) == {"b.txt": "kept"}


def test_replaceable_files_and_no_check_replace(tmp_path):
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    outs[0].write_text("old")
    write_staged([(p, _text_writer("new")) for p in outs], appeared=lambda p: "refused",
                 replaceable={outs[0]})
    assert _listing(tmp_path) == {"a.txt": "new", "b.txt": "new"}
    write_staged([(p, _text_writer("newer")) for p in outs])  # appeared=None: no check
    assert _listing(tmp_path) == {"a.txt": "newer", "b.txt": "newer"}


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_symbolic_link_is_written_through(tmp_path):
    """The file a link points to is replaced, the link kept; the temporary file lies beside
    that file, not beside the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "real.txt").write_text("old")
    link = tmp_path / "a.txt"
    link.symlink_to(elsewhere / "real.txt")
    calls: list[Path] = []
    write_staged([(link, _text_writer("new", calls))])
    assert link.is_symlink()
    assert (elsewhere / "real.txt").read_text() == "new"
    assert calls[0].parent == elsewhere
    assert sorted(p.name for p in elsewhere.iterdir()) == ["real.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_link_to_another_file_type_is_refused_before_any_write(tmp_path):
    (tmp_path / "y.nrrd").write_text("other")
    (tmp_path / "x.nii.gz").symlink_to(tmp_path / "y.nrrd")
    calls: list[Path] = []
    with pytest.raises(VolumeIOError, match="not a .nii.gz file"):
        write_staged([(tmp_path / "a.txt", _text_writer("a", calls)),
                      (tmp_path / "x.nii.gz", _text_writer("x", calls))])
    assert calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz", "y.nrrd"]


def test_error_names_are_mapped_back_to_the_outputs(tmp_path):
    """``on_error`` gets the file being written and every file's temporary name, after the
    temporary files are gone; restore_output_names puts the outputs' names back."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    seen = []

    def fail(path: Path) -> None:
        raise OSError(f"{path}: cannot write ({path.name} is too large)")

    def on_error(exc, current, staged):
        seen.append((current, staged, sorted(tmp_path.iterdir())))
        raise OSError(restore_output_names(str(exc), staged)) from None

    with pytest.raises(OSError) as info:
        write_staged([(outs[0], _text_writer("a")), (outs[1], fail)], on_error=on_error)
    assert str(info.value) == f"{outs[1]}: cannot write (b.txt is too large)"
    (current, staged, left), = seen
    tmp_b = tmp_path / f".partial-{os.getpid()}-b.txt"
    assert current == (outs[1], tmp_b)
    assert staged == [(outs[0], tmp_path / f".partial-{os.getpid()}-a.txt"), (outs[1], tmp_b)]
    assert left == []
    # bare=False: only the full paths
    assert restore_output_names(f"{tmp_b} ({tmp_b.name})", staged, bare=False) == \
        f"{outs[1]} ({tmp_b.name})"


def test_on_error_returning_raises_the_error_as_it_is(tmp_path):
    exc = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        write_staged([(tmp_path / "a.txt", _failing(exc))], on_error=lambda *a: None)
    assert info.value is exc
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_names_that_file_and_removes_the_rest(tmp_path):
    """A rename failing (a folder in the output's place): the files renamed before it stay,
    those after it are removed; ``current`` is the file being renamed."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    outs[1].mkdir()
    (outs[1] / "inside").write_text("x")
    seen = []
    with pytest.raises(OSError):
        write_staged([(p, _text_writer(p.stem)) for p in outs],
                     on_error=lambda exc, current, staged: seen.append(current[0]))
    assert seen == [outs[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert outs[0].read_text() == "a"


def test_in_place_writes_each_output_itself(tmp_path):
    """``in_place``: every file written straight to its name, nothing checked or renamed."""
    outs = [tmp_path / "a.mhd", tmp_path / "b.txt"]
    outs[1].write_text("old")
    calls: list[Path] = []
    write_staged([(p, _text_writer("new", calls)) for p in outs], in_place=True,
                 appeared=lambda p: "not checked in place")
    assert calls == outs
    assert _listing(tmp_path) == {"a.mhd": "new", "b.txt": "new"}


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")
def test_held_signals_come_after_the_last_rename(tmp_path, monkeypatch):
    """``hold_signals``: Ctrl-C during the renames is delivered after the last, the set
    whole."""
    outs = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    real = os.replace
    renamed = []

    def replace_then_interrupt(src, dst):
        real(src, dst)
        renamed.append(dst)
        if len(renamed) == 1:
            # to this thread, whose mask holds it (os.kill to the process may reach another
            # thread of the test process that does not block it: a worker pool's, torch's)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_staged([(p, _text_writer(p.stem)) for p in outs], hold_signals=True)
    assert renamed == outs
    assert _listing(tmp_path) == {"a.txt": "a", "b.txt": "b", "c.txt": "c"}
