"""What a run needs from its committed step on: every object that a later step, a later
execution's Init or Evaluate can read. Everything else in the bucket is either written again by
the steps still to come or never read again, so this list is all a run must keep to be carried
on (the local engine's resume state saves exactly these objects).

It is derived from the same facts the stages act on (the run's parameters, its committed step
and epoch, its best epoch, the execution's input), and a test checks it against the keys the
stages actually read in a run of every example network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snn import keys
from snn.parameters import Parameters
from snn.stages.context import Run
from snn.stages.training import best_step, is_sampled, next_weights

# The execution input's fields that name objects (the rest, run_id, is not a key).
INPUT_KEYS = ("parameters_key", "train_key", "test_key", "data_key")


def state_keys(
    run_id: str, record: Mapping[str, Any], execution_input: Mapping[str, str]
) -> set[str]:
    """The keys a run reads from its committed step on, given its run record (parameters,
    batches, committed_step, committed_epoch, best_epoch) and its execution's input:

    - parameters.json and the uploads: every execution's Init reads them;
    - the preprocessed data (train, test, and valid when held out): every step, Commit's
      validation cost and Evaluate;
    - the weights and the optimizer's state entering the committed step: the next step;
    - with early stopping, the weights entering the step after the best epoch: Evaluate's model;
    - the neuron statistics of the sampled epochs done: Evaluate gathers them all.
    """
    p = Parameters.from_json(record["parameters"])
    step, epoch = int(record["committed_step"]), int(record["committed_epoch"])
    batches = int(record.get("batches", 1))
    needed = {execution_input[k] for k in INPUT_KEYS if k in execution_input}
    splits = keys.SPLITS if p.training.validation is not None else ("train", "test")
    needed |= {keys.data_key(run_id, split, part) for split in splits for part in "xy"}
    needed |= next_weights(p, run_id, step - 1)
    best = record.get("best_epoch")
    if p.training.patience is not None and best is not None:
        at = best_step(Run(run_id, p, int(record["examples"]), batches), int(best))
        needed |= {
            keys.matrix_key(run_id, at, name, layer, s.index)
            for layer in range(1, p.layers + 1)
            for s in p.shards(layer)
            for name in ("W", "b")
        }
    needed |= {
        keys.neuron_stats_key(run_id, e, layer, s.index)
        for e in range(epoch)
        if is_sampled(p, e)
        for layer in range(1, p.layers + 1)
        for s in p.shards(layer)
    }
    return needed

