"""Errors that the user can cause and fix. The CLI prints them as one line and exits non-zero."""


class SnnError(Exception):
    """An expected failure: bad input, missing data, a failed run. Never shown as a traceback."""

    exit_code = 2


class ParametersError(SnnError):
    """parameters.json is malformed: the message names the field and what was expected."""


class DataError(SnnError):
    """The data set is missing, unreadable or not what the network expects."""


class EventError(SnnError):
    """A Lambda event is malformed or names something that does not exist."""


class RunFailed(SnnError):
    """A training run ended without success (the execution failed or was stopped)."""

    exit_code = 1


class NumericalError(EventError):
    """The numbers of a run stopped being finite (NaN or infinity): training diverged. A stage
    raises it in the epoch where it happens, and the run fails there, with no model written."""


class Interrupted(BaseException):
    """A signal asked the process to stop (SIGTERM, SIGHUP; SIGINT is KeyboardInterrupt). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class RunInterrupted(SnnError):
    """A run stopped by a signal; its exit code is the shell's for that signal (128 + signal)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
