"""Activation: A = g(Z) for one shard of one layer, in one epoch (g is the layer's activation:
relu, tanh or sigmoid).

Event (events/activation.json):
    {"run_id": "sample", "epoch": 0, "batch": 0, "layer": 1, "shard": 0}
Result:
    {"key": "scratch/sample/step/000000000/A/layer001/shard00000.npy", "shape": [1, 209]}

Refused, with nothing written, unless the run is RUNNING at this epoch and the shard's Z exists.
"""

from typing import Any

from snn import stages
from snn.handlers import SHARD, handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, SHARD, lambda ctx, e: stages.activation(ctx, **e))
