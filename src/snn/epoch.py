"""One step of training as the state machine runs it: the plan Init returns, the calls of a step
in the state machine's order, and what a step costs in history events.

A step is one gradient step, on one mini-batch: epoch e has B batches (B = 1 without
mini-batches), and step k is batch b of epoch e, k = e B + b. The state machine loops over the
steps; each runs every stage once per shard:

    ForwardLayers:  for each layer 1..L in order, its shards side by side:
                    ForwardLinear, then Activation
    Loss
    BackwardLayers: for each layer L..1 in order, its shards side by side: Backward
    UpdateShards:   every (layer, shard) side by side: Update
    Commit          (at an epoch's last batch it also closes the epoch)

statemachine/training.asl.json is the truth of this order. The direct engine and the tests walk
`calls` instead of the definition, so a test derives the same calls from the definition itself
(tests/unit/test_state_machine.py) and they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snn.errors import ParametersError

if TYPE_CHECKING:
    from snn.parameters import Parameters

# A Standard execution fails at 25,000 history events. A run is cut into executions of at most
# this many planned events, which leaves room for retries (about 3 events each) and margin.
MAX_HISTORY_EVENTS = 25_000
EXECUTION_EVENT_BUDGET = 15_000
EXECUTION_FIXED_EVENTS = 32  # start, Init, the last Choice, Evaluate or ContinueAsNew, end


@dataclass(frozen=True)
class Call:
    """One Lambda invocation: the stage (its function in snn.stages and its handler module) and
    the event's fields besides run_id."""

    stage: str
    fields: dict[str, int]


# A step is a list of phases run one after the other; a phase is a list of lanes that may run
# side by side (a Map's iterations); a lane is a list of calls run one after the other.
Lane = list[Call]
Phase = list[Lane]


def shard_count(p: Parameters) -> int:
    return sum(len(p.shards(layer)) for layer in range(1, p.layers + 1))


def training_examples(p: Parameters, examples: int) -> int:
    """The examples a run learns from, of `examples` in its training set: all but its
    validation set, if it holds one out (see `network.validation_split`)."""
    from snn.network import held_out

    fraction = p.training.validation
    if fraction is None or examples < 2:
        return examples
    return examples - held_out(examples, fraction)


def batches_per_epoch(p: Parameters, examples: int) -> int:
    """B, the mini-batches of an epoch over `examples` training examples (1 without)."""
    size = p.training.batch_size
    return 1 if size is None else max(1, math.ceil(examples / size))


def events_per_step(p: Parameters) -> int:
    """History events of one fault-free step: a Task is 5 events, a Map 4 plus 2 per
    iteration, a Choice 2. With L layers and S shards in all: Choice 2, ForwardLayers
    4 + sum(6 + 12 s_l), Loss 5, BackwardLayers 4 + sum(6 + 7 s_l), UpdateShards 4 + 7 S,
    Commit 5; that is 24 + 12 L + 26 S. Two runs of different lengths check it exactly
    (tests/integration/test_local_engine.py)."""
    return 24 + 12 * p.layers + 26 * shard_count(p)


def steps_per_execution(p: Parameters) -> int:
    return max(1, (EXECUTION_EVENT_BUDGET - EXECUTION_FIXED_EVENTS) // events_per_step(p))


def check_fits(p: Parameters) -> None:
    """Refuse a network of which not even one step fits one execution's event budget."""
    needed = events_per_step(p) + EXECUTION_FIXED_EVENTS
    if needed <= EXECUTION_EVENT_BUDGET:
        return
    fits = next(
        (
            n
            for n in range(p.neurons_per_task + 1, max(p.neurons) + 1)
            if _events_with(p, n) + EXECUTION_FIXED_EVENTS <= EXECUTION_EVENT_BUDGET
        ),
        None,
    )
    hint = f'; "neurons_per_task": {fits} would fit' if fits else ""
    raise ParametersError(
        f"one step of this network is {shard_count(p)} shards, {needed} history events: over "
        f"the {EXECUTION_EVENT_BUDGET}-event budget of one execution (Step Functions fails an "
        f"execution at {MAX_HISTORY_EVENTS}){hint}"
    )


def _events_with(p: Parameters, neurons_per_task: int) -> int:
    shards = sum(-(-n // neurons_per_task) for n in p.neurons)
    return 24 + 12 * p.layers + 26 * shards


def position(step: int, batches: int) -> dict[str, int]:
    """Where step k is: {"epoch", "batch", "step"}."""
    epoch, batch = divmod(step, batches)
    return {"epoch": epoch, "batch": batch, "step": step}


def plan(p: Parameters, run_id: str, step: int, batches: int = 1) -> dict[str, Any]:
    """What the state machine loops over, from `step` to `chunk_end` in this execution: small,
    so it travels in the execution's state."""
    layers = range(1, p.layers + 1)
    forward = [{"layer": n, "shards": [s.index for s in p.shards(n)]} for n in layers]
    steps = p.epochs * batches
    return {
        "run_id": run_id,
        "epochs": p.epochs,
        "batches": batches,
        "steps": steps,
        "chunk_end": min(steps, step + steps_per_execution(p)),
        "progress": {**position(step, batches), "stopped": False},
        "forward": forward,
        "backward": forward[::-1],
        "update": [{"layer": n, "shard": s.index} for n in layers for s in p.shards(n)],
    }


def calls(plan: dict[str, Any], epoch: int, batch: int = 0) -> list[Phase]:
    """The calls of one step, in the state machine's order (see the module's docstring)."""
    at = {"epoch": epoch, "batch": batch}

    def shard(layer: int, index: int) -> dict[str, int]:
        return {**at, "layer": layer, "shard": index}

    phases: list[Phase] = []
    for item in plan["forward"]:
        layer = item["layer"]
        phases.append(
            [
                [Call("forward_linear", shard(layer, s)), Call("activation", shard(layer, s))]
                for s in item["shards"]
            ]
        )
    phases.append([[Call("loss", dict(at))]])
    for item in plan["backward"]:
        phases.append([[Call("backward", shard(item["layer"], s))] for s in item["shards"]])
    phases.append(
        [[Call("update", shard(item["layer"], item["shard"]))] for item in plan["update"]]
    )
    phases.append([[Call("commit", dict(at))]])
    return phases


def calls_in_order(phases: list[Phase]) -> list[Call]:
    """The calls as one engine that runs one at a time makes them: lanes in shard order."""
    return [call for phase in phases for lane in phase for call in lane]
