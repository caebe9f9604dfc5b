"""``napari-tubular train``: the time budget, resumes with nothing to do, Ctrl-C while the data
is prepared, run folders left by a failed start, a resume without config.json (an audit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from napari_tubular.cli import main  # noqa: E402
from napari_tubular.training import Cancelled, TrainConfig, train  # noqa: E402
from napari_tubular.training import data as tdata  # noqa: E402

SMALL_SYN = {"pool_size": 2, "refresh_every": 0, "extent_mm": (30.0, 36.0),
             "inplane_spacing": (0.9, 1.1)}
TINY = ["--patch", "16", "16", "16", "--base-channels", "4", "--depth", "2", "-K", "3",
        "--val-data", "none", "--device", "cpu", "--threads", "1", "--batch-size", "1"]


def _config_file(tmp_path: Path, **extra) -> str:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"synthetic": SMALL_SYN, "log_every": 1, "augment": False,
                                **extra}))
    return str(path)


def _start(tmp_path: Path, out: Path, *flags: str, **extra) -> int:
    return main(["train", _config_file(tmp_path, **extra), "--synthetic", "--out", str(out),
                 *TINY, *flags])


def _snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _step(out: Path) -> int:
    return int(torch.load(out / "last.pt", weights_only=False)["step"])


def test_time_budget_is_said_and_a_spent_one_refuses_to_resume(tmp_path, capsys):
    """An audit: a run stopped by --minutes said "done: 10 steps" (of 300) without saying why;
    a --resume then ran 0 steps, said "done", exited 0 and rewrote model.pt."""
    out = tmp_path / "run"
    assert _start(tmp_path, out, "--steps", "1000", "--minutes", "0.0005") == 0
    err = capsys.readouterr().err
    step = _step(out)
    assert 1 <= step < 1000
    assert (f"stopped by the time budget (--minutes 0.0005) at step {step} of 1000; --resume "
            "with a larger --minutes continues") in err
    before = _snapshot(out)
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "time budget is spent" in err
    assert "larger --minutes" in err
    assert _snapshot(out) == before  # nothing rewritten
    # the budget is the run's (it counts the minutes trained before): a larger one continues
    assert main(["train", "--out", str(out), "--resume", "--minutes", "5",
                 "--steps", str(step + 1), "--quiet"]) == 0
    assert _step(out) == step + 1


def test_minutes_help_says_the_budget_counts_across_resumes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "a --resume counts the minutes already trained" in help_text


def test_resume_with_steps_at_or_below_the_checkpoint_is_refused(tmp_path, capsys):
    """An audit: --resume --steps 8 on a 10-step run warned "steps 10 -> 8", said done,
    rewrote model.pt and config.json recorded 8 steps."""
    out = tmp_path / "run"
    assert _start(tmp_path, out, "--steps", "3", "--quiet") == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--steps 2 is below the run's step" in err
    assert "steps 3 -> 2" not in err  # no warning as if it were going on
    assert main(["train", "--out", str(out), "--resume", "--steps", "3"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert json.loads((out / "config.json").read_text())["steps"] == 3


@pytest.mark.parametrize("case", ["depth", "model_key", "empty_labels"])
def test_a_failed_start_leaves_no_empty_run_folder(tmp_path, capsys, case):
    """An audit: --depth 0, or a config with an unknown model key, left an empty runs/...
    folder (the folders this run created are removed; nothing else)."""
    out = tmp_path / "runs" / "new"
    flags = {"depth": ["--depth", "0"], "model_key": [], "empty_labels": []}[case]
    extra = {"model": {"bogus": 1}} if case == "model_key" else {}
    if case == "empty_labels":
        import numpy as np

        from napari_tubular.io import write_volume

        data = tmp_path / "data"
        data.mkdir()
        write_volume(data / "a_image.nii.gz", np.zeros((20, 20, 20), np.float32))
        write_volume(data / "a_label.nii.gz", np.zeros((20, 20, 20), np.uint8))
        argv = ["train", _config_file(tmp_path, **extra), "--data", str(data)]
    else:
        argv = ["train", _config_file(tmp_path, **extra), "--synthetic"]
    assert main([*argv, "--out", str(out), *TINY, *flags, "--steps", "2", "--quiet"]) == 2
    assert not (tmp_path / "runs").exists()
    # a folder that was there (empty, or with the user's files and --overwrite) is kept
    out.mkdir(parents=True)
    assert main([*argv, "--out", str(out), *TINY, *flags, "--steps", "2", "--quiet"]) == 2
    assert out.is_dir()
    (out / "notes.txt").write_text("mine")
    assert main([*argv, "--out", str(out), *TINY, *flags, "--steps", "2", "--quiet",
                 "--overwrite"]) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_cancel_while_synthetic_cases_are_generated_stops_there(tmp_path, monkeypatch):
    """An audit: Ctrl-C while ``--synthetic`` prepared its data generated every case first, and
    left an empty run folder behind."""
    made = []
    real = tdata.make_synthetic_case

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tdata, "make_synthetic_case", counting)
    out = tmp_path / "runs" / "syn"
    config = TrainConfig(out=str(out), patch_size=(16, 16, 16), batch_size=1, steps=3,
                         model={"base_channels": 4, "depth": 2}, K=3, val_data=[],
                         synthetic={**SMALL_SYN, "pool_size": 6}, num_threads=1, device="cpu")
    started = []

    def cancel():
        return len(made) >= 2  # "Ctrl-C" after the second case

    with pytest.raises(Cancelled, match="interrupted before the first step; nothing saved"):
        train(config, cancel=cancel, on_first_step=lambda: started.append(1))
    assert len(made) == 2  # not the pool's 6
    assert not started
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_while_the_data_is_prepared(tmp_path):
    """The command itself: SIGINT during the synthetic generation exits 130 promptly, says
    nothing was saved (not "saving last.pt and model.pt") and leaves no run folder."""
    out = tmp_path / "runs" / "syn"
    # cases big enough that generating the pool takes far longer than the test waits
    cfg = _config_file(tmp_path, synthetic={"pool_size": 64, "refresh_every": 0})
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from napari_tubular.cli import main; "
         "sys.exit(main())", "train", cfg, "--synthetic", "--out", str(out), *TINY,
         "--steps", "2"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the generation to have begun
            lines.append(proc.stderr.readline())
            if "generating synthetic cases" in lines[-1] or not lines[-1]:
                break
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(timeout=20)  # the little it prints fits in the pipe
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 20
    assert "interrupted before the first step; nothing saved" in err
    assert "saving last.pt" not in err
    assert not (tmp_path / "runs").exists()


def test_resume_without_config_json_uses_the_checkpoints_settings(tmp_path, capsys):
    """An audit: with config.json deleted, --resume went on with the parser's defaults
    (val_every 3 -> 200) without a word; last.pt stores the run's settings."""
    out = tmp_path / "run"
    assert _start(tmp_path, out, "--steps", "2", "--val-every", "3", "--quiet") == 0
    (out / "config.json").unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "config.json is missing; resuming with the settings stored in" in err
    assert "val_every" not in err  # no "val_every 3 -> 200" warning
    saved = json.loads((out / "config.json").read_text())
    assert saved["val_every"] == 3
    assert saved["model"]["base_channels"] == 4
    assert _step(out) == 3


def _pairs(folder: Path, n: int = 1, seed: int = 0) -> None:
    """``n`` small image/label pairs as ``napari-tubular synth`` writes them."""
    assert main(["synth", str(folder), "--n", str(n), "--seed", str(seed), "--shape", "24",
                 "24", "24"]) == 0


@pytest.mark.parametrize("run_own", ["config.json", "last.pt"])
def test_resume_from_another_working_directory_keeps_the_runs_folders(tmp_path, capsys,
                                                                     monkeypatch, run_own):
    """An audit: a run started in proj/ with relative --data data --val-data val, resumed from
    the parent folder (--out proj/run --resume), was refused ("data ... is not the checkpoint's
    run's data") and, given --data, validated on ./val of the new working directory (here an
    empty folder of the same name: "no image/label volume pairs found")."""
    proj = tmp_path / "proj"
    _pairs(proj / "data", n=2, seed=1)
    _pairs(proj / "val", seed=50)
    (tmp_path / "val").mkdir()  # a decoy of the same name beside proj/
    monkeypatch.chdir(proj)
    assert main(["train", "--data", "data", "--val-data", "val", "--out", "run", "--steps",
                 "2", "--val-every", "2", "--no-tune", "--quiet",
                 *[a for a in TINY if a not in ("--val-data", "none")]]) == 0
    if run_own == "last.pt":
        (proj / "run" / "config.json").unlink()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--out", "proj/run", "--resume", "--steps", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "val_data" not in err  # no "val_data ['val'] -> [...]" warning either
    assert _step(proj / "run") == 3
    saved = json.loads((proj / "run" / "config.json").read_text())
    assert [Path(d).resolve() for d in saved["data"]] == [(proj / "data").resolve()]
    assert [Path(d).resolve() for d in saved["val_data"]] == [(proj / "val").resolve()]
    rows = json.loads((proj / "run" / "log.json").read_text())["rows"]
    assert rows[-1]["step"] == 3
    assert rows[-1]["val_dice"] is not None
    # folders given on the command line are still the working directory's
    assert main(["train", "--out", "proj/run", "--resume", "--steps", "4", "--quiet",
                 "--val-data", "val"]) == 2
    assert "val: no image/label volume pairs found" in capsys.readouterr().err


def test_a_moved_project_resumes_with_its_folders_where_they_are_now(tmp_path, capsys,
                                                                     monkeypatch):
    """An audit: after the project folder was moved (a/ renamed to b/), its run could not be
    resumed at all: "data data (b/data) is not the checkpoint's run's data (a/data)", with or
    without --data. The checkpoint's folders are gone: the run goes on with a warning; a
    relative val_data is looked for from the working directory, as before."""
    _pairs(tmp_path / "a" / "data", seed=1)
    _pairs(tmp_path / "a" / "val", seed=50)
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--data", "data", "--val-data", "val", "--out", "run", "--steps",
                 "1", "--no-tune", "--quiet",
                 *[a for a in TINY if a not in ("--val-data", "none")]]) == 0
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["train", "--out", "run", "--resume", "--steps", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "a/data) is no longer there; going on with" in err
    assert _step(tmp_path / "b" / "run") == 2
    rows = json.loads((tmp_path / "b" / "run" / "log.json").read_text())["rows"]
    assert rows[-1]["val_dice"] is not None
    # other data while the checkpoint's folders are there is still refused
    _pairs(tmp_path / "b" / "other", seed=7)
    assert main(["train", "--out", "run", "--resume", "--steps", "3", "--quiet", "--data",
                 "other"]) == 2
    assert "is not the checkpoint's run's data" in capsys.readouterr().err


def test_a_data_folder_given_as_the_config_file_is_named_so(tmp_path, capsys):
    """An audit: ``napari-tubular train DATA_DIR --out run`` (the data folder where the config
    file goes) said "config file not found: DATA_DIR", a folder that is there."""
    (tmp_path / "data").mkdir()
    assert main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err
    assert "--data" in err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_init_model(tmp_path, capsys, monkeypatch):
    """An audit: ``--resume --init-model other.pt`` went on from last.pt's weights without a
    word, and the run's config.json then named other.pt as the model it had started from."""
    from tests._tiny_model import save_tiny_model

    init = save_tiny_model(tmp_path / "init.pt")
    other = save_tiny_model(tmp_path / "other.pt")
    plain, tuned = tmp_path / "plain", tmp_path / "tuned"
    assert _start(tmp_path, plain, "--steps", "2", "--quiet") == 0
    assert _start(tmp_path, tuned, "--steps", "2", "--quiet", "--init-model", str(init)) == 0
    capsys.readouterr()
    for out, model in ((plain, init), (tuned, other)):
        before = _snapshot(out)
        assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet",
                     "--init-model", str(model)]) == 2
        err = capsys.readouterr().err
        assert f"init_model {model} is not the checkpoint's run's" in err
        assert "goes on from the weights in last.pt" in err
        assert _snapshot(out) == before
    # the run's own initial model, however spelled, resumes
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(tuned), "--resume", "--steps", "3", "--quiet",
                 "--init-model", "./init.pt"]) == 0
    assert _step(tuned) == 3


def test_resume_says_when_the_cldice_schedule_or_the_tube_validation_changes(tmp_path,
                                                                             capsys):
    """An audit: --cldice-warmup and --val-tubes changed on resume without a word (the clDice
    weight jumped from 0 to its full value; the score that picks best.pt changed), while
    --cldice-weight was named."""
    out = tmp_path / "run"
    assert _start(tmp_path, out, "--steps", "2", "--quiet") == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet",
                 "--cldice-warmup", "1", "--val-tubes"]) == 0
    assert ("cldice_warmup_steps None -> 1, val_tubes False -> True: the new values apply"
            in capsys.readouterr().err)


def test_ctrl_c_during_the_threshold_tuning_says_what_it_stops(tmp_path, capsys, monkeypatch):
    """An audit: Ctrl-C while the thresholds were tuned after the last step announced "stopping
    after this step, saving last.pt and model.pt" (the run then ended as done, a --resume had
    nothing to do); stopped while best.pt (another step's weights) was tuned, the run said the
    thresholds were "stored in the model file(s)", and best.pt, the file it named, had none."""
    from napari_tubular.models import read_model_meta
    from napari_tubular.training import loop
    from napari_tubular.training import tuning as ttuning

    maps, calls = ttuning.native_maps, []

    def interrupted_maps(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
        return maps(*args, **kwargs)

    monkeypatch.setattr(ttuning, "native_maps", interrupted_maps)

    def fake_validate(*args, **kwargs):
        score = next(scores)
        return {"dice": score, "cldice": score, "b0_error": 0.0, "b1_error": 0.0,
                "hd95_mm": 1.0, "score": score}

    monkeypatch.setattr(loop, "validate", fake_validate)
    flags = [a for a in TINY if a not in ("--val-data", "none")]
    for stop_at, name in ((1, "a"), (2, "b")):
        calls.clear()
        scores = iter([0.9, 0.1])  # best.pt: the first validation's weights
        out = tmp_path / name
        assert main(["train", _config_file(tmp_path, val_cases=1), "--synthetic", "--out",
                     str(out), *flags, "--steps", "2", "--val-every", "1"]) == 0
        err = capsys.readouterr().err
        assert "stopping after this step" not in err
        assert "every step is trained: skipping the rest of the threshold tuning" in err
        note = json.loads((out / "log.json").read_text())["refine"]["note"]
        assert "refine" not in read_model_meta(out / "best.pt")["metrics"]
        if stop_at == 1:
            assert "not tuned (cancelled)" in note
            assert "refine" not in read_model_meta(out / "model.pt")["metrics"]
        else:
            assert "stored in model.pt for segment; best.pt: not tuned (cancelled)" in note
            assert "refine" in read_model_meta(out / "model.pt")["metrics"]


def test_ctrl_c_during_the_final_validation_says_what_it_stops(tmp_path, capsys, monkeypatch):
    """An outside judge: Ctrl-C during the validation after the last step announced "stopping
    after this step, saving last.pt and model.pt" and a --resume, and the run then ended as
    done (exit 0) after that validation, without the threshold tuning."""
    from napari_tubular.training import loop

    calls = []

    def interrupted_validate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the final one: no step is validated in the loop (every 5)
            os.kill(os.getpid(), signal.SIGINT)
        return {"dice": 0.5, "cldice": 0.5, "b0_error": 0.0, "b1_error": 0.0,
                "hd95_mm": 1.0, "score": 0.5}

    monkeypatch.setattr(loop, "validate", interrupted_validate)
    flags = [a for a in TINY if a not in ("--val-data", "none")]
    out = tmp_path / "run"
    assert main(["train", _config_file(tmp_path, val_cases=1), "--synthetic", "--out", str(out),
                 *flags, "--steps", "2", "--val-every", "5"]) == 0
    err = capsys.readouterr().err
    assert len(calls) == 1
    assert "validating the final weights" in err
    assert "stopping after this step" not in err
    assert "finishing the final validation, then skipping the threshold tuning" in err


@pytest.mark.parametrize("name", ["run.nii.gz", "run.nrrd", "run.dcm", "run.pt"])
def test_an_out_folder_named_like_a_volume_or_model_file_is_refused(tmp_path, capsys,
                                                                    monkeypatch, name):
    """An outside judge: ``train --out run.nii.gz`` made a folder named like a volume file with
    the run in it (segment's -o and synth's OUTDIR refuse such names), and ``--out
    afile/run`` said only "[Errno 20] Not a directory". Both are refused before any data is
    prepared, with --out or with the config file's "out"; a folder of that name that exists
    already (an earlier run) is still used."""
    import napari_tubular.training as training

    def no_run(*args, **kwargs):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(training, "train", no_run)
    assert main(["train", "--synthetic", "--out", str(tmp_path / name), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / name}: the output is a folder" in err
    assert ("not a model file" if name.endswith(".pt") else "not a volume file") in err
    assert not (tmp_path / name).exists()
    assert main(["train", _config_file(tmp_path, out=str(tmp_path / name)), "--synthetic",
                 *TINY]) == 2
    assert f"out {tmp_path / name}: the output is a folder" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--synthetic", "--out", str(afile / "run"), *TINY]) == 2
    assert f"{afile} is a file, not a folder" in capsys.readouterr().err
    (tmp_path / name).mkdir()
    with pytest.raises(AssertionError, match="training started"):
        main(["train", "--synthetic", "--out", str(tmp_path / name), *TINY])


@pytest.mark.parametrize("flag", ["--data", "--val-data"])
def test_a_config_file_taken_by_a_folder_option_is_named_so(tmp_path, capsys, flag):
    """An outside judge: ``train --data d/ cfg.json`` (the config after a folder option of
    several values) prepared the validation volumes, then said "data: cfg.json is a file; give
    the folder ... it lies in". The config file taken by the option is named before any
    work, with where it goes."""
    (tmp_path / "d").mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("steps: 2\n")
    assert main(["train", flag, str(tmp_path / "d"), str(cfg), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"config missing: {flag} took '{cfg}'" in err
    assert f"put the config file before {flag}" in err
    assert "preparing" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--spacing", "--spac"])
def test_a_config_file_taken_by_spacing_is_named_so(flag, capsys):
    """``train --spacing 1 cfg.yaml``: argparse's "invalid float value: 'cfg.yaml'" says too
    that --spacing took it, and where the config file goes (also for an abbreviation of
    --spacing that argparse takes)."""
    with pytest.raises(SystemExit):
        main(["train", flag, "1", "cfg.yaml"])
    err = capsys.readouterr().err
    assert "invalid float value: 'cfg.yaml' (--spacing took it as one of its values; if it " \
        "is config, put it before --spacing)" in err
