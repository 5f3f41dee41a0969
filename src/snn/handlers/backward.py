"""Backward: the gradients of one shard of one layer, in one epoch: dZ = dA * g'(Z), then
dW = dZ . A[l-1].T / m, db = mean(dZ) and, for the layers after the first, this shard's part of
dA[l-1] = W.T . dZ. At sampled epochs it also records each neuron's statistics.

Event (events/backward.json):
    {"run_id": "sample", "epoch": 0, "batch": 0, "layer": 1, "shard": 0}
Result:
    {"dW_norm": 0.0123, "db_norm": 0.0004}

Refused, with nothing written, unless the run is RUNNING at this epoch and dA of the shard's rows
exists (from Loss for the last layer, else from every shard of the next layer).
"""

from typing import Any

from snn import stages
from snn.handlers import SHARD, handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, SHARD, lambda ctx, e: stages.backward(ctx, **e))
