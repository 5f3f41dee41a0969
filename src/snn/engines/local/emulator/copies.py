"""The interpreter's copies of state data, made without copy.deepcopy's bookkeeping.

moto's interpreter copies a state's input, result and context at nearly every step (so that no
state can change another's data), with `copy.deepcopy`: a quarter of the interpreter's own time
when the handlers do nothing (bench/floor.py, profiled). What it copies is JSON: dicts, lists,
strings, numbers, booleans and None, for which a plain recursive copy gives an equal, unshared
result several times faster. So does the state of a program that the interpreter copies into
every frame it opens (running, ended, failed...: plain objects of a few JSON attributes), rebuilt
as `copy.deepcopy` rebuilds it. Anything else (the interpreter's other objects, tuples, sets,
dict subclasses) still goes to `copy.deepcopy`, so every copy is what it was.

`fast_copies()` gives the interpreter's modules that copy state data this copier in place of
`copy` (their only use of it is `copy.deepcopy`); it returns the undo.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from moto.stepfunctions.parser.asl.eval import program_state

_PARSER = "moto.stepfunctions.parser.asl"
# The modules whose `copy.deepcopy` copies state data (inputs, results, the context object,
# the evaluation stack, event details).
MODULES = (
    f"{_PARSER}.eval.states",
    f"{_PARSER}.eval.environment",
    f"{_PARSER}.eval.event.event_manager",
    f"{_PARSER}.component.common.string.string_expression",
    f"{_PARSER}.component.common.path.result_path",
    f"{_PARSER}.component.state.exec.execute_state",
    f"{_PARSER}.component.state.exec.state_map.state_map",
)
_SCALARS = frozenset({str, int, float, bool, type(None)})
# The program states: no __slots__, no copy hooks of their own, attributes set in __init__.
_PROGRAM_STATES = frozenset(
    {
        program_state.ProgramEnded,
        program_state.ProgramError,
        program_state.ProgramRunning,
        program_state.ProgramStopped,
        program_state.ProgramTimedOut,
    }
)


def json_copy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A deep copy of `value`: JSON containers rebuilt, scalars shared (they are immutable),
    anything else by `copy.deepcopy`."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: json_copy(v) for k, v in value.items()}
    if kind is list:
        return [json_copy(v) for v in value]
    if kind in _PROGRAM_STATES:  # as copy.deepcopy does: a new instance, its state copied
        state = object.__new__(kind)
        state.__dict__.update({k: json_copy(v) for k, v in value.__dict__.items()})
        return state
    return copy.deepcopy(value, memo)


def fast_copies() -> Callable[[], None]:
    """Make the interpreter copy state data with `json_copy`; returns the undo."""
    fast = SimpleNamespace(deepcopy=json_copy)
    modules = [importlib.import_module(name) for name in MODULES]
    originals = [module.copy for module in modules]
    for module in modules:
        module.copy = fast  # type: ignore[attr-defined]

    def restore() -> None:
        for module, original in zip(modules, originals, strict=True):
            module.copy = original  # type: ignore[attr-defined]

    return restore
