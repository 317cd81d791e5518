"""The one exception type for user mistakes (bad input, missing files, mismatched checkpoints), and
the command-line parser and argument types that report a mistyped command as one line too."""

import argparse
from collections.abc import Callable

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


positive_int = _int_at_least(1)  # argparse types
non_negative_int = _int_at_least(0)
seed_int = _int_at_least(0, 2**32 - 1)  # as TrainConfig.seed (cdraw.config.MAX_SEED; not imported: torch)
