"""How many iterations of an inline Map the emulator runs at once.

moto's interpreter starts one thread per iteration of a Map whose definition sets no
MaxConcurrency: a layer of 500 neurons at one neuron per task is 500 threads, each holding its
frames, its event and its handler's matrices while it waits for the interpreter lock. Step
Functions itself runs at most 40 iterations of an inline Map at a time; the others wait their
turn. On a machine of a few cores a few at a time are as fast, and hold less memory at once.

`limit(n)`, installed by the embedded stack, makes the interpreter run at most `n` iterations of
any inline Map at once (fewer if the definition's MaxConcurrency says so), without touching the
definition: what AWS runs is unchanged. The other iterations wait; each worker thread takes the
next one, in item order, when it finishes one, as moto does under a MaxConcurrency of the
definition's. The outputs and the history's events are the same.

moto's worker takes its next iteration one Python frame deeper, so a Map of `k` items runs
`ceil(k / n)` frames deep: under 150 for the widest Map one execution's history allows (under
1,000 iterations) at the default limit, far from the interpreter's recursion limit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    inline_iteration_component as inline,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
    DEFAULT_MAX_CONCURRENCY_VALUE,
)

# Iterations of one inline Map at once, unless SNN_LOCAL_MAP_CONCURRENCY says otherwise.
DEFAULT_LIMIT = 8
ENV = "SNN_LOCAL_MAP_CONCURRENCY"
# Step Functions runs at most this many iterations of an inline Map at a time.
AWS_INLINE_LIMIT = 40


def from_environment() -> int:
    """SNN_LOCAL_MAP_CONCURRENCY if a whole number from 1 to 40, else the default."""
    value = os.environ.get(ENV, "")
    if value.isdigit() and 1 <= int(value) <= AWS_INLINE_LIMIT:
        return int(value)
    return DEFAULT_LIMIT


def limit(most: int | None = None) -> Callable[[], None]:
    """Run at most `most` iterations of any inline Map at once (by default, SNN_LOCAL_MAP_
    CONCURRENCY or DEFAULT_LIMIT); returns the undo."""
    most = from_environment() if most is None else most
    if most < 1:
        raise ValueError(f"a Map must run at least one iteration at a time, not {most}")
    component = inline.InlineIterationComponent
    original = component._eval_body

    @functools.wraps(original)
    def bounded(self: Any, env: Any) -> None:
        eval_input = env.stack[-1]  # what the Map state pushed for its iterations
        declared = eval_input.max_concurrency
        unbounded = declared == DEFAULT_MAX_CONCURRENCY_VALUE
        wanted = len(eval_input.input_items) if unbounded else declared
        if wanted > most:
            eval_input.max_concurrency = most
        original(self, env)

    component._eval_body = bounded  # type: ignore[method-assign]

    def restore() -> None:
        component._eval_body = original  # type: ignore[method-assign]

    return restore
