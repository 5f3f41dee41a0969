"""ForwardLinear: Z = W . A[l-1] + b for one shard of one layer, in one epoch.

Event (events/forward_linear.json):
    {"run_id": "sample", "epoch": 0, "batch": 0, "layer": 1, "shard": 0}
Result:
    {"key": "scratch/sample/step/000000000/Z/layer001/shard00000.npy", "shape": [1, 209]}

Refused, with nothing written, unless the run is RUNNING at this epoch and the shard's W and b
and the layer's input exist.
"""

from typing import Any

from snn import stages
from snn.handlers import SHARD, handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, SHARD, lambda ctx, e: stages.forward_linear(ctx, **e))
