"""Commit: advance the run to the next epoch (one conditional write), then delete the epoch before
the one just finished (unless it is a checkpoint).

Event (events/commit.json):
    {"run_id": "sample", "epoch": 0}
Result:
    {"epoch": 1}

Refused, with nothing changed, unless the run is RUNNING at this epoch and every shard of the
next epoch's weights exists. A commit already made is a no-op that returns the same result.
"""

from typing import Any

from snn import stages
from snn.handlers import handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, ("run_id", "epoch"), lambda ctx, e: stages.commit(ctx, **e))
