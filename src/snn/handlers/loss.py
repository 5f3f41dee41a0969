"""Loss: the step's cost (binary cross-entropy) and dA of the output layer. The cost is recorded
in the run table, once (a replay records the same value, never another): the epoch's cost, or
with mini-batches the batch's summed cost, which Commit adds up at the epoch's end. It is also
published as the CloudWatch metric SNN/Cost (embedded metric format), to watch during a run.

Event (events/loss.json):
    {"run_id": "sample", "epoch": 0, "batch": 0}
Result:
    {"cost": 0.693049735659989}

Refused, with nothing written, unless the run is RUNNING at this epoch and every shard of the
output layer's A exists.
"""

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from snn import stages
from snn.handlers import STEP, Event, handle

metrics = Metrics(namespace="SNN", service="snn")


def _loss(ctx: stages.Context, event: Event) -> dict[str, Any]:
    result = stages.loss(ctx, **event)
    # Start clean: a flush with metrics disabled (the local engine) does not clear them.
    metrics.clear_metrics()
    metrics.add_dimension(name="run_id", value=event["run_id"])
    metrics.add_metric(name="Cost", unit=MetricUnit.NoUnit, value=result["cost"])
    metrics.add_metadata(key="epoch", value=event["epoch"])
    metrics.add_metadata(key="batch", value=event["batch"])
    metrics.flush_metrics()
    return result


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, STEP, _loss)
