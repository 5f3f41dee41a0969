"""Update: one step of gradient descent for one shard of one layer: W - lr dW and b - lr db,
written as the weights entering the next epoch.

Event (events/update.json):
    {"run_id": "sample", "epoch": 0, "batch": 0, "layer": 1, "shard": 0}
Result:
    {"key": "scratch/sample/step/000000001/W/layer001/shard00000.npy"}

Refused, with nothing written, unless the run is RUNNING at this epoch and the shard's gradients
exist.
"""

from typing import Any

from snn import stages
from snn.handlers import SHARD, handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, SHARD, lambda ctx, e: stages.update(ctx, **e))
