"""``napari-tubular tune MODEL --val-data DIR [DIR ...] | synthetic -o OUT.pt``.

Tunes a model's refinement thresholds T_p / T_r and its confidence filter's level on
validation volumes, as train does at the end of a run, and writes a copy of the model file
with them (the weights and everything else unchanged).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    prose = " ".join(s.strip() for s in __doc__.splitlines()[2:5]).replace("``", "")
    p = subparsers.add_parser(name, help=help_text, description=prose)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._paths import path_text

    p.add_argument("model", metavar="MODEL", type=path_text,
                   help="model file to tune (model.pt or best.pt of a run, a snapshot of "
                   "one, a model tuned before); 'default': the shipped model (already tuned "
                   "on generated volumes), whose tuned copy is written to -o, never into the "
                   "installed package")
    # action="extend": "--val-data a --val-data b" tunes on both folders (the last one alone
    # was used, the others dropped without a word)
    p.add_argument("--val-data", nargs="+", action="extend", metavar="DIR", type=path_text,
                   required=True,
                   help="validation folder(s) of <name>_image / <name>_label volume pairs (as "
                   "train's --val-data; given twice: the folders of both), or 'synthetic': "
                   "generated volumes at their own grids, with validation seeds that train "
                   "never trains on")
    p.add_argument("--val-cases", type=int, metavar="N",
                   help="generated validation volumes with --val-data synthetic (default 4)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="with --val-data synthetic: the volumes a train run of this --seed "
                   "validates on (default: the model's own run's seed, so the volumes it was "
                   "validated on; 0 for a model without one)")
    p.add_argument("-o", "--out", required=True, metavar="OUT.pt", type=path_text,
                   help="model file to write: a copy of MODEL with the new thresholds")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (OUT may then be MODEL itself)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--no-amp", action="store_true", help="disable bfloat16 autocast on CUDA")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _pair(tp, tr) -> str:
    return f"T_p {float(tp):g} / T_r {float(tr):g}"


def _level(value) -> str:
    return "off" if value is None else f"{float(value):g}"


def _summary(result: dict) -> list[str]:
    """The lines that say what the thresholds were and are, with their validation scores."""
    from napari_tubular.inference import FALLBACK_TP, FALLBACK_TR

    new, previous = result["refine"], result["previous"]
    n = new["volumes"]
    lines = []
    before = result.get("previous_thresholds")
    if before is not None:
        old_score = new.get("initial", new["fallback"])["score"]
        source = previous.get("source")
        by = f", tuned by {source}" if source else ""
        if previous.get("inherited_from"):
            # an outside judge: a fine-tuned model's thresholds, its initial model's, were said
            # to be "tuned by tune validation" (the initial model's source), as if on its weights
            there = f" (tuned there by {source})" if source else ""
            by = (f", inherited from {previous['inherited_from']}{there}, not tuned on these "
                  "weights")
        if previous.get("tp") is None or previous.get("tr") is None:
            # a hand-edited record: segment reads the missing threshold as the fallback's
            gone = [(name, value) for key, name, value in (("tp", "T_p", FALLBACK_TP),
                                                           ("tr", "T_r", FALLBACK_TR))
                    if previous.get(key) is None]
            by += (f"; the file's record has no {' or '.join(n for n, _ in gone)}: segment "
                   f"used the fallback's {' / '.join(f'{n} {v:g}' for n, v in gone)}")
        lines.append(f"before: {_pair(*before)}, score {old_score:.4f} "
                     f"on these {n} volume(s){by}; confidence filter "
                     f"{_level(result['previous_min_confidence'])}")
    else:
        lines.append(f"before: not tuned (the fallback {_pair(FALLBACK_TP, FALLBACK_TR)}), "
                     f"score {new['fallback']['score']:.4f} on these {n} volume(s); "
                     "confidence filter off")
    levels = ", ".join(f"{k} {v:.4f}" for k, v in new["confidence_scores"].items())
    lines.append(f"after:  {_pair(new['tp'], new['tr'])}, score {new['score']:.4f}; "
                 f"confidence filter {_level(new['min_confidence'])} (after the clean-up of "
                 f"specks and blobs: {levels})")
    lines.append(f"score: mean (Dice + clDice) / 2 - 0.01 x Betti-0 error over {n} validation "
                 f"volume(s), the refinement's labels before the clean-up; "
                 f"{new['time_s']:g} s")
    return lines


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from napari_tubular.training.retune import tune_model_file

    from ._paths import refuse_file_as_folder

    refuse_file_as_folder("-o", args.out)
    interrupts = [0]

    def on_signal(signum, frame):  # first Ctrl-C: stop the tuning, writing nothing; second: quit
        interrupts[0] += 1
        if interrupts[0] > 1:
            raise KeyboardInterrupt
        what = "Ctrl-C" if signum == signal.SIGINT else f"signal {signum}"
        print(f"[tune] {what}: stopping the tuning; {args.out} is not written (Ctrl-C again to "
              "quit at once)", file=sys.stderr, flush=True)

    def progress(i: int, n: int, name: str) -> None:
        if not args.quiet:
            print(f"[tune] validation volume {i}/{n}: {name}", file=sys.stderr, flush=True)

    main_thread = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled} if main_thread else {}
    try:
        result = tune_model_file(
            args.model, args.out, args.val_data, val_cases=args.val_cases, seed=args.seed,
            device=args.device, amp=not args.no_amp, overwrite=args.overwrite,
            progress=progress, cancel=lambda: interrupts[0] > 0)
    except KeyboardInterrupt as exc:
        exc.word = f"[tune] interrupted: {args.out} is not written"
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result is None:
        print(f"[tune] stopped: {args.out} is not written", file=sys.stderr, flush=True)
        return 130
    if interrupts[0]:
        # an outside judge: a Ctrl-C between the tuning's last check and the end of the
        # writing said "OUT is not written", and the file was written (exit status 0)
        print(f"[tune] the Ctrl-C came as the tuning was done and {args.out} being written: "
              "it is written whole", file=sys.stderr, flush=True)
    for line in _summary(result):
        print(f"[tune] {line}")
    print(f"[tune] wrote {result['path']} (segment --model {result['path']} uses the new "
          "thresholds and level)")
    warning = _no_useful_pair(result["refine"], result["path"])
    if warning:
        print(f"[tune] warning: {warning}", file=sys.stderr, flush=True)
    return 0


def _no_useful_pair(new: dict, path) -> str | None:
    """What to say when no threshold pair scored above 0 (see
    :func:`napari_tubular.training.tuning.no_useful_pair`)."""
    from napari_tubular.training.tuning import no_useful_pair

    return no_useful_pair(new, path)
