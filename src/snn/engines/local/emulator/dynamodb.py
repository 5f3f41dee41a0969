"""The emulated DynamoDB, one request at a time. moto's tables are plain dictionaries: a read of
the run record that meets the Loss stage's write of a cost fails with "dictionary changed size
during iteration". In Lambda nothing runs concurrently within a container; the local engine runs
handlers, the interpreter and its follower in threads of one process."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.responses import DynamoHandler

_lock = threading.RLock()


def serialise() -> Callable[[], None]:
    """Make the emulated DynamoDB answer one request at a time; returns the undo."""
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def one_at_a_time(self: Any) -> Any:
        with _lock:
            return original(self)

    DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]

    def restore() -> None:
        DynamoHandler.call_action = original  # type: ignore[method-assign]

    return restore
