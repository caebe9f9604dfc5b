"""Command line: ``napari-tubular <command> ...``.

Each command lives in ``napari_tubular/_cli/<command>.py`` and exposes
``add_parser(subparsers, name, help_text)`` (registers its arguments) and ``run(args) -> int``.
Command modules are imported lazily so that ``--help`` and ``info`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from . import __version__

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "generate synthetic vessel volumes (image, label, centerline CSV)"),
    "info": ("info", "print shape, spacing, origin, direction and intensity range of a volume"),
    "segment": ("segment", "segment tubular structures with a DDT model (writes labels, probability, radius, skeleton, report)"),
    "refine": ("refine", "re-run the geometry-aware refinement on saved probability + radius maps with new thresholds"),
    "evaluate": ("evaluate", "compare predicted and reference masks: Dice, clDice, Betti errors, HD95, ASSD, error maps"),
    "train": ("train", "train a DDT segmentation model on image/label folders or synthetic data"),
    "tune": ("tune", "tune a model's refinement thresholds T_p / T_r on validation volumes and write a copy of the model file with them"),
}


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: where an option of several values (``--val-data DIR [DIR ...]``)
    took the word meant as a positional argument, its error says so (an outside judge:
    ``tune --val-data val/ runs/r1/model.pt -o t.pt`` said only "the following arguments are
    required: MODEL", and ``train --spacing 1 cfg.yaml`` "invalid float value: 'cfg.yaml'")."""

    _words: list[str] = []
    _originals: dict[str, str] = {}  # parse_args' stand-ins for words after "--"

    def parse_known_args(self, args=None, namespace=None):
        if args is not None:
            self._words = [str(w) for w in args]
        return super().parse_known_args(args, namespace)

    def _runs(self) -> list[tuple[str, list[str]]]:
        """``(option, the words it took)`` for each option of several values in the words."""
        many = {s: a for a in self._actions if a.nargs in ("+", "*") for s in a.option_strings}
        runs, words = [], self._words
        for i, word in enumerate(words):
            if word == "--":
                break
            word = self._full_option(word)
            if word in many:
                taken = []
                for w in words[i + 1:]:
                    if w.startswith("-") and not _number(w):
                        break
                    taken.append(w)
                if taken:
                    runs.append((word, taken))
        return runs

    def _full_option(self, word: str) -> str:
        """The long option ``word`` stands for when it is an abbreviation argparse takes
        (``--val-d`` for ``--val-data``: the hints below missed it), else ``word``."""
        if (not word.startswith("--") or "=" in word or word in self._option_string_actions
                or not self.allow_abbrev):
            return word
        longer = [s for s in self._option_string_actions if s.startswith(word)]
        return longer[0] if len(longer) == 1 else word

    def error(self, message):
        positionals = [a for a in self._actions if not a.option_strings]
        runs = self._runs()
        missing = re.match(r"the following arguments are required: (.*)", message)
        if missing and runs:
            names = [n.strip() for n in missing.group(1).split(",")]
            wanted = [n for n in names
                      if any(n in (a.metavar, a.dest) for a in positionals)]
            if wanted:
                option, taken = runs[-1]
                name = wanted[0]
                message = (f"{name} missing: {option} took {taken[-1]!r} as the last of its "
                           f"value(s); if that is {name}, put {name} before {option} (or "
                           f"another option between {option}'s values and {name})")
        invalid = re.match(r"argument (\S+?)(?:/\S+)?: invalid \w+ value: '(.*)'$", message)
        if invalid and positionals:
            took = [t for o, t in runs if invalid.group(2) in t and len(t) > 1]
            if took and took[0][-1] == invalid.group(2):
                name = positionals[0].metavar or positionals[0].dest
                option = next(o for o, t in runs if t is took[0])
                message += (f" ({option} took it as one of its values; if it is {name}, put "
                            f"it before {option})")
        for stand_in, word in self._originals.items():
            message = message.replace(stand_in, word)
        super().error(message)


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-tubular",
        description=(
            "Segment, measure and review tubular structures (vessels, airways, ducts, neurons) "
            "in 3-D medical volumes. Run 'napari-tubular COMMAND --help' for a command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-tubular {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"napari_tubular._cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"napari_tubular._cli.{module}":
                raise
            continue  # command not available in this build
        mod.add_parser(sub, name, help_text)
    return parser


def _tolerant_streams() -> None:
    """Tables use a few non-ASCII signs (mm³, ±); never crash on a terminal that lacks them."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """``parser.parse_args(argv)``, with a command's options allowed between its positional
    arguments (an outside judge: ``segment a.nii.gz -o out b.nii.gz`` and ``evaluate PRED
    --json m.json REF`` said "unrecognized arguments: b.nii.gz" / "REF", under the top-level
    usage): the command's own parser reads its arguments intermixed, as ``argparse`` reads
    them for a parser without sub-commands; otherwise its usual error."""
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args  # what parse_args gives (it is parse_known_args refusing extras)
    command = getattr(args, "command", None)
    if not command:
        return parser.parse_args(argv)  # its error
    words = list(sys.argv[1:] if argv is None else argv)
    sub = next((a.choices[command] for a in parser._actions
                if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None or command not in words:
        return parser.parse_args(argv)
    own, originals = _after_double_dash(words[words.index(command) + 1:])
    sub._originals = originals  # its errors name the words given, not the stand-ins
    try:
        intermixed = sub.parse_intermixed_args(own)
    except TypeError:  # a parser argparse cannot read intermixed
        return parser.parse_args(argv)
    finally:
        sub._originals = {}
    for key, value in vars(intermixed).items():
        setattr(intermixed, key, _restored(value, originals))
    intermixed.command = command
    return intermixed


def _after_double_dash(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """``words`` with each word after the first ``--`` that starts with '-' replaced by a
    stand-in, and the words replaced (stand-in -> word): argparse's intermixed reading (Python
    3.11) drops a ``--`` that comes before the first positional argument and then reads the
    words after it as options (an outside judge: ``synth -- out --n 3`` wrote 3 cases into
    ``out``, where the plain reading refuses ``--n 3`` as extra positional arguments)."""
    if "--" not in words:
        return list(words), {}
    cut = words.index("--") + 1
    originals: dict[str, str] = {}
    out = list(words[:cut])
    for word in words[cut:]:
        if word.startswith("-"):
            stand_in = f"\0napari-tubular-argument-{len(originals)}\0"
            originals[stand_in] = word
            word = stand_in
        out.append(word)
    return out, originals


def _restored(value, originals: dict[str, str]):
    """``value`` (a parsed argument: a word, a path, a list of them) with the stand-ins of
    :func:`_after_double_dash` put back."""
    if not originals:
        return value
    if isinstance(value, list):
        return [_restored(v, originals) for v in value]
    if isinstance(value, tuple):
        return tuple(_restored(v, originals) for v in value)
    if isinstance(value, (str, os.PathLike)) and os.fspath(value) in originals:
        word = originals[os.fspath(value)]
        return word if isinstance(value, str) else type(value)(word)
    return value


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    # warnings the commands do not collect themselves (a reader's "2 DICOM series", refine's
    # NaN notice) are printed like the commands' own lines, without Python's source line (an
    # audit: "/.../info.py:36: UserWarning: ..." from 'info' on a DICOM folder); main() called
    # from Python leaves the process as it was
    from ._cli import ddp_rank, tidy_warnings

    # under torchrun ("torchrun ... napari-tubular train ...") rank 0 speaks for all
    with tidy_warnings(f"napari-tubular {args.command}", show=ddp_rank() == 0):
        return _run(args)


def _run(args, prefix: str | None = None) -> int:
    """Run the command ``args.func``; a user error prints ``{prefix}: error: ...`` (default
    prefix ``napari-tubular COMMAND``) and gives exit status 2, without a traceback."""
    from ._cli import ddp_rank, error_text

    prefix = prefix or f"napari-tubular {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # Ctrl-C; SIGTERM where a command turns it into one
        if ddp_rank() == 0:
            print(getattr(exc, "word", "interrupted"), file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except BrokenPipeError:  # "napari-tubular info x | head": the reader left, not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        except OSError:
            pass
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError) as exc:
        # Core functions raise these with messages meant for the user; no traceback (and
        # under torchrun once, by rank 0: error_text)
        text = error_text(prefix, exc)
        if text:
            print(text, file=sys.stderr)
        return 2
    except MemoryError as exc:
        # numpy's "Unable to allocate 116. GiB for an array ..." (an audit: a traceback)
        if ddp_rank() == 0:
            print(f"{prefix}: error: not enough memory ({exc}); use a smaller volume (or, for "
                  "segment, --batch-size 1)", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system's refusal (a name too long, a full disk, rights)
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        if ddp_rank() == 0:
            print(f"{prefix}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
