"""The one exception type for user mistakes (bad input, missing files, mismatched checkpoints), and
the command-line parser that reports a mistyped command as one line too."""

import argparse

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
