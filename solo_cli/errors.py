"""The one exception type the engine raises for problems a user can fix."""

from __future__ import annotations


class SoloError(Exception):
    """A problem with the user's input or environment, phrased as one line that says what to do.

    ``exit_code`` follows the CLI convention: 2 for a usage error (bad flag, bad file),
    1 for a runtime failure.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(SoloError):
    """Bad flags, files or values: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class RuntimeFailure(SoloError):
    """Something failed while running (out of memory, NaN loss, disk): exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)
