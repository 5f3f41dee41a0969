"""The history quota of a Standard execution, which moto does not enforce: at 25,000 events AWS
fails the execution (States.Runtime, "The execution reached the maximum number of history events
(25000)."), and no Catch can catch it. The guard does the same to the emulated execution."""

from __future__ import annotations

import time

from snn.engines.local.embedded import EmbeddedStack
from snn.epoch import MAX_HISTORY_EVENTS

QUOTA_ERROR = "States.Runtime"
QUOTA_CAUSE = f"The execution reached the maximum number of history events ({MAX_HISTORY_EVENTS})."


class QuotaGuard:
    """Watches one execution. Reading a history copies it, so it is read only when it could be
    over the quota: one Lambda task adds at most EVENTS_PER_INVOCATION events (task, iteration
    and map events), so the invocations served since the execution started bound its length. It
    is also read every `every_read` seconds, for loops that invoke no Lambda."""

    EVENTS_PER_INVOCATION = 16

    def __init__(
        self, embedded: EmbeddedStack, execution_arn: str, every_read: float = 30.0
    ) -> None:
        assert embedded.lambdas is not None
        self.embedded, self.execution_arn, self.every_read = embedded, execution_arn, every_read
        self.exceeded = 0
        self._served_before = self._served()
        self._next_read = time.monotonic() + every_read

    def _served(self) -> int:
        assert self.embedded.lambdas is not None
        return sum(self.embedded.lambdas.invocations.values())

    def check(self) -> None:
        if self.exceeded:
            return
        now = time.monotonic()
        bound = (self._served() - self._served_before + 1) * self.EVENTS_PER_INVOCATION
        if bound < MAX_HISTORY_EVENTS and now < self._next_read:
            return
        self._next_read = now + self.every_read
        length = len(self.embedded.history(self.execution_arn))
        if length >= MAX_HISTORY_EVENTS - 1:
            self.exceeded = length
            self.embedded.fail_execution(self.execution_arn, QUOTA_ERROR, QUOTA_CAUSE)
