"""The one exception type for user mistakes (bad input, missing files, mismatched checkpoints), and
the command-line parser and argument types that report a mistyped command as one line too, naming
the flag or field a misspelt one may mean."""

import argparse
import difflib
from collections.abc import Callable, Iterable

EXIT_USER_ERROR = 2  # the exit status of a command stopped by a CDrawError


class CDrawError(Exception):
    """A mistake the user can fix; the message says what was wrong and what to do.

    The CLI prints it on one line and exits with status 2. Internal bugs raise anything else.
    """


class CDrawWarning(UserWarning):
    """Something the user should know that does not stop the work (a truncated caption, an unknown word).

    The CLI prints it on one line as ``warning: ...``.
    """


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage mistake (a misspelt flag, a missing value) reported on one line, not the
    whole usage, and exit status 2, as argparse does: ``cdraw`` and its training recipes."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.unrecognized(unknown)
        return namespace

    def unrecognized(self, words: list[str], hint: str = "") -> None:
        """Stop on words this parser does not know, naming the flag each misspelt one may have meant
        (``--max_steps``: the YAML key's spelling; ``--nmu``) and then ``hint``."""
        guesses = did_you_mean(words, self._option_string_actions)
        guess = f"; did you mean {', '.join(guesses)}?" if guesses else ""
        self.error(f"unrecognized arguments: {' '.join(words)}{guess}{hint}")


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


DATA_DIR = "$CDRAW_DATA_DIR or ~/.cache/cdraw/data"  # as help says it: cdraw.data.default_data_dir

positive_int = _int_at_least(1)  # argparse types
non_negative_int = _int_at_least(0)
seed_int = _int_at_least(0, 2**32 - 1)  # as TrainConfig.seed (cdraw.config.MAX_SEED; not imported: torch)


def did_you_mean(words: Iterable[str], flags: Iterable[str]) -> list[str]:
    """The flags among ``flags`` that the unknown ``--long`` flags among ``words`` most likely misspell
    (:func:`nearest`), in order, once each."""
    flags = [flag for flag in flags if flag.startswith("--")]
    guesses: list[str] = []
    for word in words:
        if not word.startswith("--"):
            continue  # a value, or a short flag (too short to guess from)
        flag = word.split("=", 1)[0]
        match = nearest(flag.replace("_", "-"), flags)
        guesses += [match] if match and match != flag and match not in guesses else []  # not a right flag, misplaced
    return guesses


def nearest(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that ``name`` most likely misspells: itself (after the caller's ``-``/``_``
    swap), else the closest spelling if close enough, else None."""
    names = list(names)
    if name in names:
        return name
    return next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.75)), None)
