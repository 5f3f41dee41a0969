"""The stack of template.yaml, stood up in moto for the duration of a `with` block.

- template.yaml says what to stand up: the bucket, the table (its own key schema), the functions
  (Handler, Environment), the state machine (DefinitionUri + DefinitionSubstitutions) and the
  function an EventBridge rule calls when an execution fails.
- moto emulates S3, DynamoDB and Step Functions in memory; its interpreter runs the definition
  from statemachine/ as it is.
- Every Lambda invoke is served in-process (`lambda_service`), and the handlers' S3 object
  requests by moto's S3 backend directly (`emulator.s3_requests`).
- Where AWS fails an execution and moto would not, the engine fails it (a payload over 256 KB,
  the history quota), then calls the execution-status rule's function with the event EventBridge
  would send, so the run record ends as it would on AWS.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from snn import blas
from snn.engines.local import iam
from snn.engines.local.lambda_service import ACCOUNT, REGION, LambdaService
from snn.engines.stack import Stack
from snn.template import Template, TemplateError, resolve

# Environment of the emulated account. The handlers' own configuration (from the template) is
# added on top; the process environment is restored when the stack is torn down.
EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # No CloudWatch here: the Loss stage's metric would only be printed.
    "POWERTOOLS_METRICS_DISABLED": "true",
}
CLEARED_ENV = ("AWS_ENDPOINT_URL", "AWS_PROFILE")
# CloudFormation's pseudo parameters, as they resolve in the emulated account.
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
FAILED_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")

# Called with the emulator's boto3 session as soon as it exists, before any client is made from
# it: a way to observe every request of a run (`snn bill` meters them).
SESSION_HOOKS: list[Callable[[Any], None]] = []

T = TypeVar("T")


class EmbeddedStack:
    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        fault_rate: float = 0.0,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.template = Template.load(template_path)
        self.fault_rate = fault_rate
        self.environment = dict(environment or {})  # overrides of the functions' environment
        self.suffix = uuid.uuid4().hex[:8]
        self._saved_env: dict[str, str | None] = {}
        self._undo: list[Callable[[], None]] = []
        self._mock: Any = None
        self.lambdas: LambdaService | None = None
        self.stack: Stack | None = None
        self.failure_function: str | None = None
        self.compactor: Any = None
        self.s3_requests: Any = None
        self.item_requests: Any = None
        self.iam: iam.Enforcer | None = None

    # --- standing the stack up ------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        import boto3
        from moto import mock_aws

        from snn.engines.local import emulator  # the version gate: a clear error, or all of it

        functions = self.template.functions()
        bucket_id, _ = self.template.one("AWS::S3::Bucket")
        table_id, table_props = self.template.one("AWS::DynamoDB::Table")
        sm_id, _ = self.template.state_machine()
        self.failure_function = self.template.execution_status_target()
        names = {bucket_id: f"snn-local-{self.suffix}", table_id: f"snn-local-runs-{self.suffix}"}
        arns = {fid: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fid}" for fid in functions}
        env = {**_function_environment(functions, names), **self.environment}
        if os.environ.get(blas.ENV):  # this machine's choice, not the Lambda functions'
            env[blas.ENV] = os.environ[blas.ENV]
        handlers = {
            fid: iam.acting_as(fid, _import_handler(f.handler)) for fid, f in functions.items()
        }
        # Every function's requests are authorised by its policies (and the state machine's
        # invokes by its own): what passes here passes on AWS.
        refs, attributes = iam.embedded_names(
            self.template, f"snn-local-{self.suffix}", REGION, ACCOUNT, names
        )
        policies = iam.Policies.from_template(self.template, refs, attributes)
        machine = attributes[sm_id, "Name"]

        self._set_env({**EMULATOR_ENV, **env}, clear=CLEARED_ENV)
        # The interpreter logs every aborted or failed state at length; the engine reports
        # failures from the execution history instead.
        # The handlers log a rejected event as a warning, which the engine reports itself.
        for name, quiet in (("moto.stepfunctions", logging.CRITICAL), ("snn", logging.ERROR)):
            log = logging.getLogger(name)
            self._undo.append(functools.partial(log.setLevel, log.level))
            log.setLevel(quiet)
        try:
            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._mock.start()
            _reset_caches()
            session = (
                boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
            )
            for hook in SESSION_HOOKS:
                hook(session)
            self.iam = iam.Enforcer(
                policies,
                REGION,
                ACCOUNT,
                sm_id,
                functools.partial(emulator.s3_requests.object_exists, ACCOUNT),
            )
            self._undo.append(self.iam.install(session))
            # Requests served without the HTTP detour, for every client made from now on
            # (a client copies the session's hooks when it is made).
            if os.environ.get("SNN_LOCAL_S3") != "http":
                self.s3_requests = emulator.s3_requests.ObjectRequests(ACCOUNT)
                self.s3_requests.install(session)
                self._undo.append(lambda: self.s3_requests.uninstall(session))
            self.item_requests = emulator.dynamodb.ItemRequests(ACCOUNT, REGION)
            self._undo.append(self.item_requests.install(session))
            served = {"dynamodb": emulator.dynamodb.SERVED, "lambda": {"Invoke"}}
            if self.s3_requests is not None:
                served["s3"] = emulator.s3_requests.SERVED
            self._undo.append(emulator.short_path.install(session, served))
            s3, dynamodb, sfn = (
                session.client(s, region_name=REGION) for s in ("s3", "dynamodb", "stepfunctions")
            )
            s3.create_bucket(Bucket=names[bucket_id])
            dynamodb.create_table(TableName=names[table_id], **table_definition(table_props))
            definition = self.template.definition({**arns, **names, **PSEUDO_PARAMETERS})
            arn = sfn.create_state_machine(
                name=machine,
                definition=definition,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{sm_id}Role",
                type="STANDARD",
            )["stateMachineArn"]
            timeouts = {fid: f.timeout for fid, f in functions.items()}
            self.lambdas = LambdaService(handlers, timeouts, self.fault_rate)
            self.lambdas.on_data_limit = self._data_limit
            self.lambdas.check_resources = ResourceCheck(functions, self._stack_of)
            session.events.register("before-call.lambda.Invoke", self.lambdas.on_before_call)
            self._undo.append(
                lambda: session.events.unregister(
                    "before-call.lambda.Invoke", self.lambdas.on_before_call
                )
            )
            self._undo.append(emulator.interpreter.speed_up())
            self._undo.append(emulator.interpreter.first_end_stands())
            self._undo.append(emulator.interpreter.fast_timestamps())
            self._undo.append(emulator.interpreter.parse_once())
            self._undo.append(emulator.inline.run_inline())
            self._undo.append(emulator.map_concurrency.limit())
            self._undo.append(emulator.copies.fast_copies())
            self._undo.append(emulator.dynamodb.serialise())
            self.compactor = emulator.memory.Compactor()
            self.stack = Stack(
                names[bucket_id], names[table_id], arn, s3, dynamodb, sfn, self.history
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stack is not None:
            self.stop_executions()
        while self._undo:
            self._undo.pop()()
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        _reset_caches()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}

    def stop_executions(self, quiet_seconds: float = 0.5, timeout: float = 60) -> list[str]:
        """Stop every running execution, as a user stopping them on AWS would, and wait until no
        handler is still at work. Returns the ARNs of the executions stopped."""
        st, lambdas = self.stack, self.lambdas
        assert st is not None and lambdas is not None
        listed = st.sfn.list_executions(
            stateMachineArn=st.state_machine_arn, statusFilter="RUNNING"
        )["executions"]
        for ex in listed:
            st.sfn.stop_execution(executionArn=ex["executionArn"])
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if lambdas.in_flight:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                break
            time.sleep(0.05)
        return [ex["executionArn"] for ex in listed]

    def _set_env(self, values: dict[str, str], clear: tuple[str, ...]) -> None:
        for k in (*values, *clear):
            self._saved_env.setdefault(k, os.environ.get(k))
        for k in clear:
            os.environ.pop(k, None)
        os.environ.update(values)

    # --- the emulator, through its gate ---------------------------------------------------------

    def history(self, execution_arn: str, start: int = 0) -> list[dict[str, Any]]:
        """The execution's history events from the `start`-th on (shared: read only)."""
        from snn.engines.local import emulator

        return emulator.interpreter.history(execution_arn, start)

    def compact(self) -> None:
        self.compactor.compact()

    def forget_execution(self, execution_arn: str) -> None:
        from snn.engines.local import emulator

        emulator.interpreter.forget_execution(execution_arn)

    def fail_execution(self, execution_arn: str, error: str, cause: str) -> bool:
        from snn.engines.local import emulator

        return emulator.interpreter.fail_execution(execution_arn, error, cause)

    def _stack_of(self) -> Stack:
        assert self.stack is not None
        return self.stack

    def _data_limit(self, run_id: str | None, message: str) -> None:
        """A payload over the limit: fail the execution that carries the run (every running
        one, if the payload names no run), as AWS would: States.DataLimitExceeded cannot be
        caught."""
        st = self.stack
        assert st is not None
        record = st.runs.get(run_id, ("execution",)) if run_id else None
        if record and record.get("execution"):
            arns = [st.execution_arn(record["execution"])]
        else:
            listed = st.sfn.list_executions(
                stateMachineArn=st.state_machine_arn, statusFilter="RUNNING"
            )["executions"]
            arns = [e["executionArn"] for e in listed]
        for arn in arns:
            self.fail_execution(arn, "States.DataLimitExceeded", message)

    def execution_ended(self, description: dict[str, Any]) -> None:
        """What EventBridge does when an execution fails, times out or is stopped: call the
        execution-status rule's function with the event it would deliver."""
        if description.get("status") not in FAILED_STATUSES or not self.failure_function:
            return
        assert self.lambdas is not None and self.stack is not None
        self.lambdas.invoke(self.failure_function, status_change_event(self.stack, description))


class ResourceCheck:
    """Each invocation's working set (`snn.memory`, from the run's parameters and data shape,
    read once per run from its record and data objects) against its function's MemorySize, and
    Init's h5 uploads against its ephemeral storage: what Lambda would end the invocation with
    ((error type, message)), or None. A prediction, not a measurement: arithmetic on a few
    numbers per invocation, so the engine is as fast with it as without."""

    def __init__(self, functions: dict[str, Any], stack: Callable[[], Stack]) -> None:
        from snn import memory

        self.functions = functions
        self.stack = stack
        self.stages = {fid: stage for stage, fid in memory.FUNCTIONS.items()}
        self._runs: dict[str, Any] = {}
        self._needs: dict[tuple[str, str, int | None], int] = {}  # by run, stage and layer
        self._lock = threading.Lock()

    def __call__(self, function_id: str, event: Any) -> tuple[str, str] | None:
        stage = self.stages.get(function_id)
        if stage is None or not isinstance(event, dict):
            return None
        f = self.functions[function_id]
        if stage == "Init":
            return self._storage(f, event.get("input"))
        run = self._run(event.get("run_id"))
        if run is None:
            return None
        from snn import memory

        p, data = run
        layer = event.get("layer") if stage in memory.PER_LAYER else None
        if layer is not None and not (isinstance(layer, int) and 1 <= layer <= p.layers):
            return None  # the handler refuses the event
        cached = (event["run_id"], stage, layer)
        need = self._needs.get(cached)
        if need is None:
            need = self._needs[cached] = memory.stage_bytes(stage, p, data, layer)
        if need <= (f.memory_mb - memory.RUNTIME_MB) * memory.MB:
            return None
        where = f" of layer {layer}" if layer is not None else ""
        return (
            "Runtime.OutOfMemory",
            f"{function_id}: the working set of {stage}{where} is {need / memory.MB:,.0f} MB "
            f"with {memory.RUNTIME_MB} MB for the runtime, over its MemorySize of "
            f"{f.memory_mb:,} MB: Runtime exited with error: signal: killed",
        )

    def _storage(self, f: Any, execution_input: Any) -> tuple[str, str] | None:
        """Init writes the two h5 uploads to /tmp."""
        from snn import memory

        if not isinstance(execution_input, dict) or "train_key" not in execution_input:
            return None
        st, size = self.stack(), 0
        for field in ("train_key", "test_key"):
            key = execution_input.get(field)
            if not isinstance(key, str):
                return None
            try:
                size += as_the_engine(
                    lambda key=key: st.s3.head_object(Bucket=st.bucket, Key=key)["ContentLength"]
                )
            except Exception:
                return None
        if size <= f.ephemeral_mb * memory.MB:
            return None
        return ("OSError", "[Errno 28] No space left on device")

    def _run(self, run_id: Any) -> tuple[Any, Any] | None:
        """(parameters, data shape) of a run, once its record exists (kept: neither changes)."""
        if not isinstance(run_id, str):
            return None
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id]
        found = as_the_engine(lambda: self._read(run_id))
        if found is not None:
            with self._lock:
                self._runs[run_id] = found
        return found

    def _read(self, run_id: str) -> tuple[Any, Any] | None:
        from snn import keys, memory
        from snn.parameters import Parameters

        st = self.stack()
        record = st.runs.get(run_id, ("parameters", "n_x", "examples"))
        if not record or "n_x" not in record:
            return None
        n_x = int(record["n_x"])

        def examples(split: str) -> int:
            key = keys.data_key(run_id, split, "x")
            try:
                size = st.s3.head_object(Bucket=st.bucket, Key=key)["ContentLength"]
            except Exception:
                return 0
            return max(0, (int(size) - NPY_HEADER) // (memory.FLOAT * n_x))

        p = Parameters.from_json(record["parameters"])
        return p, memory.Data(n_x, int(record["examples"]), examples("valid"), examples("test"))


def as_the_engine(read: Callable[[], T]) -> T:
    """`read()` as the engine's own requests, not the invoked function's: in a thread of its own,
    which starts with an empty context (so IAM does not check them as the function's) and is
    not the invocation's (so the bill does not count them as the function's)."""
    result: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            result.append(read())
        except BaseException as e:
            failed.append(e)

    thread = threading.Thread(target=run, name="snn-engine-read")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return result[0]


# The header of a 2-D float64 .npy (padded to 128 bytes).
NPY_HEADER = 128


def status_change_event(st: Stack, description: dict[str, Any]) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event EventBridge delivers."""

    def millis(value: Any) -> int | None:
        return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else None

    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [description["executionArn"]],
        "detail": {
            "executionArn": description["executionArn"],
            "stateMachineArn": st.state_machine_arn,
            "name": description["name"],
            "status": description["status"],
            "startDate": millis(description.get("startDate")),
            "stopDate": millis(description.get("stopDate")),
            "input": description.get("input"),
            "inputDetails": {"included": True},
            "output": description.get("output"),
            "outputDetails": None,
            "error": description.get("error"),
            "cause": description.get("cause"),
        },
    }


def _function_environment(functions: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    """One environment for all functions: it is process-wide here, so functions that set a
    variable differently could not run side by side in Map states."""
    env: dict[str, str] = {}
    for f in functions.values():
        for k, v in f.environment.items():
            value = str(resolve(v, names))
            if env.setdefault(k, value) != value:
                raise TemplateError(
                    f"functions disagree on environment variable {k}: the local engine "
                    "runs them in one process, so per-function values must be equal"
                )
    return env


def _import_handler(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise TemplateError(f"handler {path} cannot be imported ({exc})") from None


def table_definition(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }


def _reset_caches() -> None:
    from snn import handlers, stores
    from snn.handlers import predict

    handlers.reset()
    predict.reset()
    stores.reset_clients()
    stores.S3Store.forget_cached()


__all__ = ["SESSION_HOOKS", "EmbeddedStack", "status_change_event", "table_definition"]
