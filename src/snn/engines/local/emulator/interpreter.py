"""moto's Step Functions interpreter: narrow speed-ups, its execution histories read from the
backend, finished executions forgotten, and an execution failed as AWS fails it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.event import event_manager
from moto.stepfunctions.parser.asl.utils import json_path
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from snn.engines.local.emulator import ACCOUNT, REGION


def speed_up() -> Callable[[], None]:
    """Two narrow patches where the interpreter wastes time; returns the undo.

    - It builds a new boto3 client for every Lambda task (about 4 ms, a tenth of a task's cost
      here), where the Step Functions service keeps its connections: tasks share one client.
    - It parses every JSONPath string again at every use (in its JSONPath helpers and in
      ResultPath): parsing, a pure function of the string, is cached.
    """
    original_parse, original_result_parse = json_path.parse, result_path.parse
    json_path.parse = functools.lru_cache(maxsize=4096)(original_parse)
    result_path.parse = functools.lru_cache(maxsize=4096)(original_result_parse)
    original = lambda_eval_utils.boto_client_for
    clients: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def shared(region: str, service: str, state_credentials: Any = None) -> Any:
        with lock:
            if (region, service) not in clients:
                clients[region, service] = original(
                    region=region, service=service, state_credentials=state_credentials
                )
            return clients[region, service]

    lambda_eval_utils.boto_client_for = shared

    def restore() -> None:
        lambda_eval_utils.boto_client_for = original
        json_path.parse, result_path.parse = original_parse, original_result_parse

    return restore


def fast_timestamps() -> Callable[[], None]:
    """Every history event's timestamp is formatted as ISO 8601 text with milliseconds, by
    `strftime` (several microseconds, for some hundred events an epoch): `isoformat` gives the
    same text faster. Returns the undo."""
    original = event_manager.iso_8601_datetime_with_milliseconds

    @functools.wraps(original)
    def formatted(value: Any = None) -> str:
        if value is None or value.year < 1000:  # (strftime does not pad such years)
            return original(value)
        return value.isoformat(timespec="milliseconds")[:23] + "Z"

    event_manager.iso_8601_datetime_with_milliseconds = formatted

    def restore() -> None:
        event_manager.iso_8601_datetime_with_milliseconds = original

    return restore


def parse_once() -> Callable[[], None]:
    """Every execution parses its state machine's definition again (an ANTLR parse, about 0.3 s
    for the definition here: a run is cut into executions of some 150 steps each). The program
    a definition parses into is what every execution of it evaluates, as every loop of one
    execution evaluates the same program, its Map iterations side by side: it is parsed once
    per definition text and reused. Returns the undo."""
    original = ExecutionWorker._get_evaluation_entrypoint
    programs: dict[str, Any] = {}
    lock = threading.Lock()

    @functools.wraps(original)
    def entrypoint(self: Any) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        with lock:
            program = programs.get(definition)
        if program is None:
            program = original(self)
            with lock:
                if len(programs) >= 16:  # a few definitions at once, at most
                    programs.clear()
                program = programs.setdefault(definition, program)
        return program

    ExecutionWorker._get_evaluation_entrypoint = entrypoint  # type: ignore[method-assign]

    def restore() -> None:
        ExecutionWorker._get_evaluation_entrypoint = original  # type: ignore[method-assign]

    return restore


def first_end_stands() -> Callable[[], None]:
    """Once an execution has ended (stopped, or failed by `fail_execution`), it stays ended as
    it ended. moto lets a Map's iterations, failing as they wind down after a stop, replace the
    end with an error of their own: StopExecution of a running Map then ends FAILED with an
    internal error, where AWS ends it ABORTED. Returns the undo."""
    original = Environment.set_error

    @functools.wraps(original)
    def set_error(self: Environment, error: Any) -> None:
        if self.is_running():
            original(self, error)

    Environment.set_error = set_error  # type: ignore[method-assign]

    def restore() -> None:
        Environment.set_error = original  # type: ignore[method-assign]

    return restore


def _backend() -> Any:
    return stepfunctions_parser_backends[ACCOUNT][REGION]


def _execution(execution_arn: str) -> Any:
    for machine in _backend().state_machines:
        for execution in machine.executions:
            if execution.exec_arn == execution_arn:
                return execution
    return None


def history(execution_arn: str, start: int = 0) -> list[dict[str, Any]]:
    """An execution's history events from the `start`-th on, as GetExecutionHistory returns
    them, read from the interpreter's own list: moto's API deep-copies the whole history at
    every read, which a follower polling a long execution cannot afford. The events are shared,
    not copied: read them, never change them."""
    execution = _execution(execution_arn)
    env = getattr(getattr(execution, "exec_worker", None), "env", None)
    if env is None:
        return list(_backend().get_execution_history(execution_arn)["events"])[start:]
    manager = env.event_manager
    with manager._mutex:
        return manager._history_event_list[start:]


def forget_execution(execution_arn: str) -> None:
    """Drop an execution that has ended, once summarised: a long run's histories would otherwise
    all stay in memory (AWS keeps them for 90 days)."""
    for machine in _backend().state_machines:
        machine.executions[:] = [
            e
            for e in machine.executions
            if not (
                e.exec_arn == execution_arn and e.exec_status is not None and e.status != "RUNNING"
            )
        ]


def fail_execution(execution_arn: str, error: str, cause: str) -> bool:
    """End a running execution as FAILED with `error` and `cause`, as AWS ends one on an error
    that no Catch can catch: the state running now goes no further, no other state is entered,
    and the history ends with ExecutionFailed. False if it was not running."""
    execution = _execution(execution_arn)
    worker = getattr(execution, "exec_worker", None)
    env = getattr(worker, "env", None)
    if env is None or not env.is_running():
        return False
    env.set_error({"error": error, "cause": cause})
    return True
