"""Evaluate: the trained network's accuracy on the training and test sets (and the validation set,
if held out), the model as one .npz object, every neuron's recorded statistics as another, and
the run marked SUCCEEDED. The model is the last step's, or with early stopping the best
epoch's (`model_epoch`).

Event (events/evaluate.json):
    {"run_id": "sample"}
Result:
    {"model_epoch": 2499, "train_accuracy": 1.0, "test_accuracy": 0.72,
     "confusion_matrix": {"true_positive": 28, "false_positive": 8, "true_negative": 8,
                          "false_negative": 6},
     "model_key": "runs/sample/model.npz", "neurons_key": "runs/sample/neurons.npz"}

Refused unless the run is RUNNING at its last step (or stopped early); on a run that has
succeeded it writes the same bytes again and changes nothing.
"""

from typing import Any

from snn import stages
from snn.handlers import handle


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    return handle(event, ("run_id",), lambda ctx, e: stages.evaluate(ctx, **e))
