"""The stages of a training run, each the body of one Lambda function.

A stage checks its preconditions, reads its inputs from the matrix store (objects of its own
step only), calls the maths in `snn.network`, writes new keys, and returns a small dict of keys,
shapes and scalars. The handlers wrap these for S3 and DynamoDB; the direct engine calls them in
a plain loop on in-memory stores (see `snn.epoch` for the order).

Preconditions, checked before anything is written, so that a replayed, out-of-order or
conflicting event changes nothing:
- every stage of a step (batch b of epoch e): the run is RUNNING and its committed step is that
  step;
- Commit of a step: every shard of the next step's weights (and optimizer state) exists (a
  replay of a commit already made is a no-op);
- the run's lifecycle (Init, ContinueAsNew, Evaluate, RecordFailure): see `lifecycle`.
Numbers are checked too: a non-finite result fails the stage (NumericalError) in the epoch
where it appears, before it is stored.
"""

from snn.stages.context import Context, Executions, Run, Step, finite, layer_matrix
from snn.stages.lifecycle import (
    confusion_matrix,
    continue_as_new,
    evaluate,
    final_weights,
    init,
    neuron_history,
    record_failure,
)
from snn.stages.state import state_keys
from snn.stages.training import (
    CHECKPOINT_EVERY,
    NEURON_SAMPLES,
    NEURON_STATS,
    activation,
    backward,
    best_step,
    commit,
    forward_linear,
    is_sampled,
    loss,
    next_weights,
    sampled_epochs,
    update,
)

# The stages of a step by name, as `snn.epoch.Call.stage` and the handler modules name them.
STEP_STAGES = {
    "forward_linear": forward_linear,
    "activation": activation,
    "loss": loss,
    "backward": backward,
    "update": update,
    "commit": commit,
}

__all__ = [
    "CHECKPOINT_EVERY",
    "NEURON_SAMPLES",
    "NEURON_STATS",
    "STEP_STAGES",
    "Context",
    "Executions",
    "Run",
    "Step",
    "activation",
    "backward",
    "best_step",
    "commit",
    "confusion_matrix",
    "continue_as_new",
    "evaluate",
    "final_weights",
    "finite",
    "forward_linear",
    "init",
    "is_sampled",
    "layer_matrix",
    "loss",
    "neuron_history",
    "next_weights",
    "record_failure",
    "sampled_epochs",
    "state_keys",
    "update",
]
