"""One step of the state machine's loop (one mini-batch), read from its definition
(statemachine/training.asl.json): walked with the plan Init returns, as Step Functions would run
it, from the loop's Choice back to it. The walk gives

- `phases`: every Lambda call of the step, in order: a list of phases one after the other, each
  a list of lanes side by side (a Map's iterations), each lane a list of calls. The direct
  engine and the tests walk the same calls from `snn.epoch`; a test checks the two agree.
- `critical` and `total`: the states entered and the Lambda invocations along the step's
  critical path (what runs one after the other: the wall time) and in all (what Standard bills,
  and what the history counts); `waves`: the most waves of any Map that runs its items side by
  side. A Map with MaxConcurrency 1 runs its items one after the other; any other inline Map
  runs at most min(MaxConcurrency, 40) at once ("Using Map state in Inline mode in Step
  Functions workflows", https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html),
  in waves as long as their longest item.

Only what the definition uses is understood: Task, Choice, Pass, Wait, Succeed, Fail, Parallel
and inline Map states, JSONPath of the forms $, $.a.b, $$.Map.Item.Value[.a.b] and
$$.Map.Item.Index.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn.epoch import Call, Phase
from snn.errors import SnnError

INLINE_MAP_CONCURRENCY = 40
FUNCTION = re.compile(r"\$\{(\w+)FunctionArn\}")


class DefinitionError(SnnError):
    """The definition cannot be walked as a step of training."""


def load(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefinitionError(f"{path}: cannot be read as a state machine ({exc})") from None


def stage_of(function: str) -> str:
    """The stage a function runs, from its logical id: ForwardLinear -> forward_linear."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", function).lower()


@dataclass(frozen=True)
class Counts:
    """States entered and Lambda invocations made."""

    states: int = 0
    invocations: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.states + other.states, self.invocations + other.invocations)

    def scaled(self, k: int) -> Counts:
        return Counts(k * self.states, k * self.invocations)


@dataclass(frozen=True)
class StepPath:
    critical: Counts
    total: Counts
    waves: int
    phases: list[Phase] = field(default_factory=list)


@dataclass(frozen=True)
class _Walk:
    critical: Counts
    total: Counts
    waves: int = 1
    phases: tuple[tuple[tuple[Call, ...], ...], ...] = ()

    def then(self, other: _Walk) -> _Walk:
        return _Walk(
            self.critical + other.critical,
            self.total + other.total,
            max(self.waves, other.waves),
            self.phases + other.phases,
        )

    def calls(self) -> tuple[Call, ...]:
        return tuple(call for phase in self.phases for lane in phase for call in lane)


def step_path(definition: dict[str, Any], plan: dict[str, Any]) -> StepPath:
    """Walk one step of `definition` (as parsed) with `plan` (what Init returns, the input of
    the loop's Choice): the Choice, then each state up to the Choice again."""
    states = definition.get("States")
    if not isinstance(states, dict):
        raise DefinitionError("the state machine definition has no States")
    choice, first = _step_loop(states)
    walk = _Walk(Counts(1, 0), Counts(1, 0)).then(_chain(states, first, plan, stop=choice))
    phases = [[list(lane) for lane in phase] for phase in walk.phases]
    return StepPath(walk.critical, walk.total, walk.waves, phases)


def _step_loop(states: dict[str, Any]) -> tuple[str, str]:
    """(the Choice that loops over the steps, the first state of its training branch): the one
    branch of a Choice whose chain of Next leads back to that Choice."""
    loops = []
    for name, state in states.items():
        if state.get("Type") != "Choice":
            continue
        branches = [c.get("Next") for c in state.get("Choices", [])] + [state.get("Default")]
        for first in branches:
            step, seen = first, set()
            while isinstance(step, str) and step in states and step not in seen:
                if step == name:
                    loops.append((name, first))
                    break
                seen.add(step)
                following = states[step]
                if following.get("Type") == "Choice" or following.get("End"):
                    break
                step = following.get("Next")
    if len(loops) != 1:
        raise DefinitionError(
            f"expected one loop over the steps (a Choice that a chain of states leads back to), "
            f"found {len(loops)}"
        )
    return loops[0]


def _chain(states: dict[str, Any], start: str, data: Any, stop: str | None = None) -> _Walk:
    """The states from `start`, following Next, until `stop` or the end."""
    walk = _Walk(Counts(), Counts())
    name: str | None = start
    seen = set()
    while name is not None and name != stop:
        if name in seen or name not in states:
            raise DefinitionError(f"cannot walk the state machine at state {name!r}")
        seen.add(name)
        state = states[name]
        walk = walk.then(_state(name, state, data))
        name = None if state.get("End") else state.get("Next")
    if stop is not None and name != stop:
        raise DefinitionError(f"the step's states do not lead back to {stop!r}")
    return walk


def _state(name: str, state: dict[str, Any], data: Any) -> _Walk:
    kind = state.get("Type")
    if kind == "Task":
        invokes = _invokes_lambda(state)
        call = _call(state, data) if invokes else None
        one = Counts(1, 1 if invokes else 0)
        return _Walk(one, one, 1, (((call,),),) if call else ())
    if kind in ("Pass", "Wait", "Succeed", "Fail"):
        return _Walk(Counts(1, 0), Counts(1, 0))
    if kind == "Parallel":
        branches = [_chain(b["States"], b["StartAt"], data) for b in state.get("Branches", [])]
        longest = max((b.critical for b in branches), key=_length, default=Counts())
        total = sum((b.total for b in branches), Counts())
        waves = max((b.waves for b in branches), default=1)
        lanes = tuple(b.calls() for b in branches)
        return _Walk(Counts(1, 0) + longest, Counts(1, 0) + total, waves, (lanes,))
    if kind == "Map":
        return _map(name, state, data)
    raise DefinitionError(f"state {name!r}: a {kind} state inside a step cannot be walked")


def _map(name: str, state: dict[str, Any], data: Any) -> _Walk:
    processor = state.get("ItemProcessor") or state.get("Iterator")
    if not isinstance(processor, dict):
        raise DefinitionError(f"Map {name!r} has no ItemProcessor")
    if processor.get("ProcessorConfig", {}).get("Mode", "INLINE") != "INLINE":
        raise DefinitionError(f"Map {name!r}: only inline Map states can be walked")
    items = _lookup(state.get("ItemsPath", "$"), data, None)
    if not isinstance(items, list):
        raise DefinitionError(f"Map {name!r}: {state.get('ItemsPath', '$')} is not a list")
    selector = state.get("ItemSelector", state.get("Parameters"))
    runs = [
        _chain(processor["States"], processor["StartAt"], _item_input(selector, data, item, i))
        for i, item in enumerate(items)
    ]
    limit = int(state.get("MaxConcurrency", 0) or 0)
    width = 1 if limit == 1 else min(limit or INLINE_MAP_CONCURRENCY, INLINE_MAP_CONCURRENCY)
    critical = Counts(1, 0)
    for lo in range(0, len(runs), width):
        critical += max((r.critical for r in runs[lo : lo + width]), key=_length)
    total = sum((r.total for r in runs), Counts(1, 0))
    waves = max([math.ceil(len(runs) / width) if width > 1 else 1, *(r.waves for r in runs)])
    if width == 1:  # one item after the other: their phases in order
        phases = tuple(phase for r in runs for phase in r.phases)
    else:  # side by side: one phase, a lane per item
        phases = (tuple(r.calls() for r in runs),) if runs else ()
    return _Walk(critical, total, waves, phases)


def _length(c: Counts) -> tuple[int, int]:
    return (c.invocations, c.states)


def _invokes_lambda(state: dict[str, Any]) -> bool:
    resource = str(state.get("Resource", ""))
    return "lambda:invoke" in resource or ":function:" in resource or resource.endswith("Arn}")


def _call(state: dict[str, Any], data: Any) -> Call | None:
    """The call a Lambda Task makes: its function's stage and its payload's epoch, batch,
    layer and shard; None if its function is not one of the stack's (${<Name>FunctionArn})."""
    parameters = state.get("Parameters", {})
    match = FUNCTION.fullmatch(str(parameters.get("FunctionName", "")))
    if match is None:
        return None
    payload = _item_input(parameters.get("Payload", {}), data, None, 0)
    fields = {
        k: payload[k]
        for k in ("epoch", "batch", "layer", "shard")
        if isinstance(payload.get(k), int)
    }
    return Call(stage_of(match.group(1)), fields)


def _item_input(selector: Any, data: Any, item: Any, index: int) -> Any:
    """An iteration's input: the ItemSelector (or Parameters) applied, or the item itself."""
    if selector is None:
        return item
    if isinstance(selector, dict):
        out = {}
        for key, value in selector.items():
            if key.endswith(".$") and isinstance(value, str):
                at = (item, index) if item is not None else None
                out[key[:-2]] = _lookup(value, data, at, strict=False)
            else:
                out[key] = _item_input(value, data, item, index)
        return out
    return selector


def _lookup(path: str, data: Any, item: tuple[Any, int] | None, strict: bool = True) -> Any:
    """A JSONPath of the simple forms the definition uses. Other context paths (the execution's
    name, ...) do not shape a step: None."""
    if path.startswith("$$."):
        parts = path[3:].split(".")
        if item is None or parts[:2] != ["Map", "Item"] or len(parts) < 3:
            return None
        if parts[2] == "Index":
            return item[1]
        node, rest = item[0], parts[3:]
    elif path == "$" or path.startswith("$."):
        node, rest = data, [p for p in path[2:].split(".") if p]
    else:
        raise DefinitionError(f"cannot follow the path {path!r}")
    for part in rest:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif strict:
            raise DefinitionError(f"{path} is not in the state's input")
        else:
            return None
    return node
