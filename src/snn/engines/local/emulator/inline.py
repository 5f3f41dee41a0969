"""Work that moto's interpreter hands to a new thread only to wait for it, done by the thread that
waits.

- Every Task and Map state (`ExecutionState._evaluate_with_timeout`) runs its work in a thread
  of its own and waits for it, for at most the state's TimeoutSeconds. With no timeout that can
  fire (none declared: the default of 99,999,999 seconds, over three years), waiting for that
  thread to end is running its work: the work runs in the state's own thread instead, with the
  same frame, the same output, the same errors, the same events. A state that declares a
  timeout (or a heartbeat) keeps moto's thread and its timeout.
- Every program, an execution's and each Map iteration's (`Program.eval`), runs in a thread of
  its own, joined for at most the program's TimeoutSeconds. With none declared (the
  definition declares none, nor do its Maps) the program runs in the thread that would join it.
- An inline Map (`InlineIterationComponent._launch_worker`) starts one thread per worker and
  waits for them all. With a single worker (one item, or MaxConcurrency 1) that worker runs in
  the Map's own thread. Maps of several workers keep their threads (`map_concurrency`).

The definition declares no TimeoutSeconds, and its layer Maps run one layer at a time: at a whole
layer per task, nearly every thread of an epoch went, each a start, a hand-over of the
interpreter lock and a join (bench/floor.py).

`run_inline()` installs the three; it returns the undo.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
from moto.stepfunctions.parser.asl.component.program.program import Program
from moto.stepfunctions.parser.asl.component.state.exec import execute_state
from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    inline_iteration_component as inline,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (  # noqa: E501
    DistributedIterationComponent,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
    DEFAULT_MAX_CONCURRENCY_VALUE,
)

NEVER = TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS  # a timeout of this many seconds cannot fire
LOG = logging.getLogger(__name__)


def never_times_out(state: Any) -> bool:
    """The state declares neither a timeout nor a heartbeat."""
    timeout = state.timeout
    return (
        state.heartbeat is None
        and type(timeout) is TimeoutSeconds
        and timeout.timeout_seconds >= NEVER
    )


def run_inline() -> Callable[[], None]:
    """Run a state's work, a program and a Map's only worker in the thread that waits for it;
    returns the undo."""
    original_state = ExecutionState._evaluate_with_timeout
    original_program = Program.eval
    original_launch = inline.InlineIterationComponent._launch_worker

    @functools.wraps(original_program)
    def program(self: Any, env: Any) -> None:
        if self.timeout_seconds:
            return original_program(self, env)
        env.next_state_name = self.start_at.start_at_name
        try:
            EvalComponent.eval(self, env)
        except Exception:  # what ended moto's thread, and no more
            LOG.exception("the program ended with an exception")
        return None

    @functools.wraps(original_state)
    def evaluate(self: Any, env: Any) -> None:
        if not never_times_out(self):
            return original_state(self, env)
        _evaluate_here(self, env)
        return None

    @functools.wraps(original_launch)
    def launch(self: Any, env: Any, eval_input: Any, job_pool: Any) -> Any:
        declared = eval_input.max_concurrency
        workers = (
            len(eval_input.input_items) if declared == DEFAULT_MAX_CONCURRENCY_VALUE else declared
        )
        if workers > 1 or isinstance(self, DistributedIterationComponent):
            return original_launch(self, env, eval_input, job_pool)
        worker = self._create_worker(env=env, eval_input=eval_input, job_pool=job_pool)
        worker.eval()  # the job pool is closed when it returns: the Map's wait ends at once
        return worker

    ExecutionState._evaluate_with_timeout = evaluate  # type: ignore[method-assign]
    Program.eval = program  # type: ignore[method-assign]
    inline.InlineIterationComponent._launch_worker = launch  # type: ignore[method-assign]

    def restore() -> None:
        ExecutionState._evaluate_with_timeout = original_state  # type: ignore[method-assign]
        Program.eval = original_program  # type: ignore[method-assign]
        inline.InlineIterationComponent._launch_worker = original_launch  # type: ignore[method-assign]

    return restore


def _evaluate_here(state: Any, env: Any) -> None:
    """moto's ExecutionState._evaluate_with_timeout (5.2.5), the thread and the wait for it
    removed: what the thread ran, then what the waiting thread did."""
    state.timeout.eval(env=env)
    env.stack.pop()  # the timeout, which cannot fire
    frame = env.open_frame()
    frame.states.reset(input_value=env.states.get_input())
    frame.stack = execute_state.copy.deepcopy(env.stack)  # (the copier `copies` installs)
    outputs: list[Any] = []
    failure: Exception | None = None
    try:
        state._eval_execution(frame)
        outputs.extend(frame.stack)
    except Exception as ex:
        failure = ex
    frame.set_ended()
    env.close_frame(frame)
    if failure is not None:
        raise failure
    output = outputs.pop()
    env.stack.append(output)
    if not state._is_language_query_jsonpath():
        env.states.set_result(output)
    if state.assign_decl:
        state.assign_decl.eval(env=env)
    if state.result_selector:
        state.result_selector.eval(env=env)
    if state.result_path:
        state.result_path.eval(env)
    else:
        env.states.reset(input_value=env.stack.pop())
