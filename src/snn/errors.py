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
