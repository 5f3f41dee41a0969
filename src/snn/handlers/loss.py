"""Loss stage: the epoch's cost and d cost / d A[L]; the cost also goes to CloudWatch as a
metric (embedded metric format), so the cost curve can be watched there during a run."""

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from snn import stages
from snn.handlers import stage

metrics = Metrics(namespace="SNN", service="snn")


def _loss(ctx: stages.Context, run_id: str, epoch: int) -> dict[str, Any]:
    result = stages.loss(ctx, run_id, epoch)
    # Start clean: a flush with metrics disabled (the local engine) does not clear them.
    metrics.clear_metrics()
    metrics.add_dimension(name="run_id", value=run_id)
    metrics.add_metric(name="Cost", unit=MetricUnit.NoUnit, value=result["cost"])
    metrics.add_metadata(key="epoch", value=epoch)
    metrics.flush_metrics()
    return result


handler = stage("run_id", "epoch")(_loss)
