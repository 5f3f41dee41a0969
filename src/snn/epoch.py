"""One epoch of training as the state machine runs it: the plan Init returns, the calls of an
epoch in the state machine's order, and what an epoch costs in history events.

statemachine/training.asl.json is the truth of this order. The direct engine and the tests walk
`epoch_steps` instead of the definition, so a test derives the same steps from the definition
itself (tests/unit/test_state_machine.py) and they cannot drift apart:

    ForwardLayers:  for each layer 1..L in order, its shards side by side:
                    ForwardLinear, then Activation
    Loss
    BackwardLayers: for each layer L..1 in order, its shards side by side: Backward
    UpdateShards:   every (layer, shard) side by side: Update
    Commit
"""

from __future__ import annotations

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


# An epoch is a list of steps run one after the other; a step is a list of lanes that may run
# side by side (a Map's iterations); a lane is a list of calls run one after the other.
Lane = list[Call]
Step = list[Lane]


def shard_count(p: Parameters) -> int:
    return sum(len(p.shards(layer)) for layer in range(1, p.layers + 1))


def events_per_epoch(p: Parameters) -> int:
    """History events of one fault-free epoch: a Task is 5 events, a Map 4 plus 2 per
    iteration, a Choice 2. With L layers and S shards in all: Choice 2, ForwardLayers
    4 + sum(6 + 12 s_l), Loss 5, BackwardLayers 4 + sum(6 + 7 s_l), UpdateShards 4 + 7 S,
    Commit 5; that is 24 + 12 L + 26 S. Two runs of different lengths check it exactly
    (tests/integration/test_local_engine.py)."""
    return 24 + 12 * p.layers + 26 * shard_count(p)


def epochs_per_execution(p: Parameters) -> int:
    return max(1, (EXECUTION_EVENT_BUDGET - EXECUTION_FIXED_EVENTS) // events_per_epoch(p))


def check_fits(p: Parameters) -> None:
    """Refuse a network of which not even one epoch fits one execution's event budget."""
    needed = events_per_epoch(p) + EXECUTION_FIXED_EVENTS
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
        f"one epoch of this network is {shard_count(p)} shards, {needed} history events: over "
        f"the {EXECUTION_EVENT_BUDGET}-event budget of one execution (Step Functions fails an "
        f"execution at {MAX_HISTORY_EVENTS}){hint}"
    )


def _events_with(p: Parameters, neurons_per_task: int) -> int:
    shards = sum(-(-n // neurons_per_task) for n in p.neurons)
    return 24 + 12 * p.layers + 26 * shards


def plan(p: Parameters, run_id: str, epoch: int) -> dict[str, Any]:
    """What the state machine loops over, from `epoch` to `chunk_end` in this execution: small,
    so it travels in the execution's state."""
    layers = range(1, p.layers + 1)
    forward = [{"layer": n, "shards": [s.index for s in p.shards(n)]} for n in layers]
    return {
        "run_id": run_id,
        "epochs": p.epochs,
        "chunk_end": min(p.epochs, epoch + epochs_per_execution(p)),
        "progress": {"epoch": epoch},
        "forward": forward,
        "backward": forward[::-1],
        "update": [{"layer": n, "shard": s.index} for n in layers for s in p.shards(n)],
    }


def epoch_steps(plan: dict[str, Any], epoch: int) -> list[Step]:
    """The calls of one epoch, in the state machine's order (see the module's docstring)."""

    def at(layer: int, shard: int) -> dict[str, int]:
        return {"epoch": epoch, "layer": layer, "shard": shard}

    steps: list[Step] = []
    for item in plan["forward"]:
        steps.append(
            [
                [
                    Call("forward_linear", at(item["layer"], s)),
                    Call("activation", at(item["layer"], s)),
                ]
                for s in item["shards"]
            ]
        )
    steps.append([[Call("loss", {"epoch": epoch})]])
    for item in plan["backward"]:
        steps.append([[Call("backward", at(item["layer"], s))] for s in item["shards"]])
    steps.append([[Call("update", at(item["layer"], item["shard"]))] for item in plan["update"]])
    steps.append([[Call("commit", {"epoch": epoch})]])
    return steps


def calls_in_order(steps: list[Step]) -> list[Call]:
    """The calls as one engine that runs one at a time makes them: lanes in shard order."""
    return [call for step in steps for lane in step for call in lane]
