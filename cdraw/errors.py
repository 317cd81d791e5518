"""The one exception type for user mistakes (bad input, missing files, mismatched checkpoints)."""

EXIT_USER_ERROR = 2  # the exit status of a command stopped by a CDrawError


class CDrawError(Exception):
    """A mistake the user can fix; the message says what was wrong and what to do.

    The CLI prints it on one line and exits with status 2. Internal bugs raise anything else.
    """


class CDrawWarning(UserWarning):
    """Something the user should know that does not stop the work (a truncated caption, an unknown word).

    The CLI prints it on one line as ``warning: ...``.
    """
