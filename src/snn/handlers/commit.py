"""Commit: advance the run to the next step (one conditional write), then delete the step before
the one just finished (unless it is a checkpoint). At an epoch's last batch it also closes the
epoch: its cost (mini-batches: their summed costs over m), its validation cost, early stopping.

Event (events/commit.json):
    {"run_id": "sample", "epoch": 0, "batch": 0}
Result (where the run is now, and whether early stopping ended it):
    {"epoch": 1, "batch": 0, "step": 1, "stopped": false}

Refused, with nothing changed, unless the run is RUNNING at this step and every shard of the
next step's weights (and optimizer state) exists. A commit already made is a no-op that returns
the same result.
"""

from typing import Any

from snn import stages
from snn.handlers import STEP, handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, STEP, lambda ctx, e: stages.commit(ctx, **e))
