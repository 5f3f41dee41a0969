"""The embedded local engine: the real state machine and the real handlers, on one machine, with
no AWS account and no Docker.

- template.yaml says what to stand up: the bucket, the table (its own key schema), the functions
  (Handler, Environment) and the state machine (DefinitionUri + DefinitionSubstitutions).
- moto emulates S3, DynamoDB and Step Functions in memory; its Step Functions interpreter runs
  the definition from statemachine/ as it is.
- Every Lambda invoke the interpreter makes is served in-process: a handler on botocore's public
  `before-call.lambda.Invoke` event calls the function's handler with a Lambda-like context and
  answers as the Lambda service would (a function error for an exception).
- The handlers' S3 object requests are served by moto's S3 backend directly, on `before-call.s3`
  (see object_requests): the objects are moto's, the emulated HTTP exchange is skipped.
- What AWS enforces and moto does not is enforced here: 256 KB per state input/output and per
  Lambda payload, and the 25,000-event history of a Standard execution.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import os
import random
import shutil
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from snn.engines import OnEpoch, stack
from snn.engines.object_requests import ObjectRequests
from snn.errors import RunFailed, SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.template import Template, TemplateError, resolve

# The emulator version the engine was written and verified against (see tests/unit/test_moto.py).
MOTO_VERSION = "5.2.5"
REGION = "us-east-1"
ACCOUNT = "123456789012"
# CloudFormation's pseudo parameters, as they resolve in the emulated account.
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}

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


@dataclass
class LambdaContext:
    """What the Lambda runtime passes a handler as its second argument."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: int = 120
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoked_function(params: dict[str, Any]) -> str:
    """The function's name in a serialised Lambda Invoke request (a name, or an ARN with or
    without a qualifier, URL-encoded in the path)."""
    name = unquote(params["url_path"]).split("/functions/", 1)[1].split("/invocations")[0]
    return name.rsplit(":function:", 1)[-1].split(":", 1)[0]


class LambdaService:
    """Serves the interpreter's Lambda invokes by calling the handlers in-process."""

    def __init__(
        self,
        handlers: dict[str, Any],
        timeouts: dict[str, int],
        fault_rate: float = 0.0,
        fault_seed: int = 0,
    ) -> None:
        self.handlers = handlers
        self.timeouts = timeouts
        self.invocations: Counter[str] = Counter()
        # Fault injection: a fraction of invocations fail as the Lambda service can fail them,
        # half before the handler runs, half after it has written its outputs (the response is
        # lost). The state machine's Retry must recover from both.
        self.fault_rate = fault_rate
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(fault_seed)
        self._lock = threading.Lock()
        self.in_flight = 0

    def _fault(self) -> str | None:
        with self._lock:
            roll = self._rng.random()
        if roll < self.fault_rate / 2:
            return "before_handler"
        if roll < self.fault_rate:
            return "after_handler"
        return None

    def _inject(self, phase: str, name: str) -> None:
        from botocore.exceptions import ClientError

        with self._lock:
            self.faults[phase] += 1
        raise ClientError(
            {
                "Error": {"Code": "ServiceException", "Message": f"injected fault ({phase})"},
                "ResponseMetadata": {"HTTPStatusCode": 500, "RequestId": str(uuid.uuid4())},
            },
            "Invoke",
        )

    def on_before_call(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        name = invoked_function(params)
        body = params.get("body") or b"{}"
        if isinstance(body, str):
            body = body.encode()
        with self._lock:
            self.invocations[name] += 1
        if len(body) > stack.MAX_PAYLOAD_BYTES:
            return self._answer(
                _error("States.DataLimitExceeded", f"payload to {name} is {len(body)} bytes"),
                "Unhandled",
            )
        handler = self.handlers.get(name)
        if handler is None:
            return self._answer(
                _error("ResourceNotFoundException", f"no function {name}"), "Unhandled"
            )
        fault = self._fault()
        if fault == "before_handler":
            self._inject(fault, name)
        context = LambdaContext(name, timeout_seconds=self.timeouts.get(name, 120))
        with self._lock:
            self.in_flight += 1
        try:
            result = handler(json.loads(body), context)
            payload, function_error = json.dumps(result).encode(), None
        except Exception as exc:  # the Lambda runtime reports any exception as a function error
            payload, function_error = _error(type(exc).__name__, str(exc), exc), "Unhandled"
        finally:
            with self._lock:
                self.in_flight -= 1
        if fault == "after_handler":
            self._inject(fault, name)
        if len(payload) > stack.MAX_PAYLOAD_BYTES:
            payload = _error(
                "States.DataLimitExceeded",
                f"result of {name} is {len(payload)} "
                f"bytes, over the {stack.MAX_PAYLOAD_BYTES}-byte limit",
            )
            function_error = "Unhandled"
        return self._answer(payload, function_error)

    @staticmethod
    def _answer(payload: bytes, function_error: str | None) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse
        from botocore.response import StreamingBody

        parsed: dict[str, Any] = {
            "StatusCode": 200,
            "ExecutedVersion": "$LATEST",
            "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
            "ResponseMetadata": {
                "HTTPStatusCode": 200,
                "RequestId": str(uuid.uuid4()),
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        }
        if function_error:
            parsed["FunctionError"] = function_error
        return AWSResponse("", 200, {}, None), parsed


def _error(kind: str, message: str, exc: BaseException | None = None) -> bytes:
    trace = traceback.format_tb(exc.__traceback__) if exc else []
    return json.dumps({"errorMessage": message, "errorType": kind, "stackTrace": trace}).encode()


# Called with the emulator's boto3 session as soon as it exists, before any client is made from
# it: a way to observe every request of a run (`snn cost` meters them).
SESSION_HOOKS: list[Callable[[Any], None]] = []


class EmbeddedStack:
    """The stack of template.yaml, stood up in moto for the duration of a `with` block."""

    def __init__(
        self, template_path: str | Path = "template.yaml", fault_rate: float = 0.0
    ) -> None:
        self.template = Template.load(template_path)
        self.fault_rate = fault_rate
        self.suffix = uuid.uuid4().hex[:8]
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        self.lambdas: LambdaService | None = None
        self.objects: ObjectRequests | None = None
        self.stack: stack.Stack | None = None
        self._outside_before: set[int] = set()

    # --- standing the stack up ------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        import boto3
        from moto import mock_aws

        functions = self.template.functions()
        bucket_id, _ = self.template.one("AWS::S3::Bucket")
        table_id, table_props = self.template.one("AWS::DynamoDB::Table")
        sm_id, _ = self.template.state_machine()
        names = {bucket_id: f"snn-local-{self.suffix}", table_id: f"snn-local-runs-{self.suffix}"}
        arns = {fid: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fid}" for fid in functions}
        function_env = self._function_environment(functions, names)
        handlers = {fid: _import_handler(f.handler) for fid, f in functions.items()}

        self._set_env({**EMULATOR_ENV, **function_env}, clear=CLEARED_ENV)
        # The interpreter logs every aborted or failed state at length; the engine reports
        # failures from the execution history instead.
        self._interpreter_log = logging.getLogger("moto.stepfunctions")
        self._interpreter_log_level = self._interpreter_log.level
        self._interpreter_log.setLevel(logging.CRITICAL)
        try:
            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._mock.start()
            _reset_caches()
            session = (
                boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
            )
            for hook in SESSION_HOOKS:
                hook(session)
            s3, dynamodb, sfn = (
                session.client(s, region_name=REGION) for s in ("s3", "dynamodb", "stepfunctions")
            )
            s3.create_bucket(Bucket=names[bucket_id])
            dynamodb.create_table(TableName=names[table_id], **_table_definition(table_props))
            definition = self.template.definition({**arns, **names, **PSEUDO_PARAMETERS})
            arn = sfn.create_state_machine(
                name=f"{sm_id}-{self.suffix}",
                definition=definition,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{sm_id}Role",
                type="STANDARD",
            )["stateMachineArn"]
            self.lambdas = LambdaService(handlers, {fid: 120 for fid in functions}, self.fault_rate)
            session.events.register("before-call.lambda.Invoke", self.lambdas.on_before_call)
            self._session = session
            self.objects = _object_requests(session)
            self._restore_interpreter = _share_interpreter_clients()
            self.stack = stack.Stack(
                names[bucket_id], names[table_id], arn, s3, dynamodb, sfn, self.history
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """An execution's history from the emulator's backend: the same events that
        GetExecutionHistory returns, without serialising a long history for every read."""
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        backend = stepfunctions_parser_backends[ACCOUNT][REGION]
        return list(backend.get_execution_history(execution_arn)["events"])

    def compact(self) -> None:
        """Keep the emulator's memory bounded over a long run. moto keeps, for its dashboard,
        every S3 object ever written (deleted ones too, undisposed), every version of every
        DynamoDB item, every ACL and every interpreter thread that has finished. Deleted objects
        are disposed of and forgotten, the rest dropped. Reads and prunes moto's bookkeeping,
        so it is pinned to the moto version it was written for (tests/unit/test_moto.py)."""
        import moto

        if moto.__version__ != MOTO_VERSION:
            return
        from moto.s3.models import FakeKey, s3_backends
        from moto.stepfunctions.parser.utils import TMP_THREADS

        # A key is tracked a moment before it enters its bucket, so a key is disposed of only
        # if it was already out of every bucket at the previous compaction (a deleted key never
        # returns: writing the name again makes a new key). list() copies are atomic.
        tracked = FakeKey.instances_tracked
        candidates = list(tracked)
        buckets = list(s3_backends[ACCOUNT]["aws"].buckets.values())
        live = {
            id(key)
            for bucket in buckets
            for versions in list(dict.values(bucket.keys))
            for key in versions
        }
        outside = {id(key) for key in candidates if id(key) not in live}
        doomed = outside & self._outside_before
        self._outside_before = outside - doomed
        if doomed:
            for key in candidates:
                if id(key) in doomed:
                    key.dispose()
            tracked[:] = [key for key in tracked if id(key) not in doomed]
        TMP_THREADS[:] = [t for t in list(TMP_THREADS) if t.is_alive()]
        # Each update of the run record and each object's ACL adds tracked instances too (the
        # record's copies grow with its costs); nothing needs disposing: tables and keys hold
        # the live ones.
        from moto.dynamodb.models.dynamo_type import Item
        from moto.s3.models import FakeAcl, FakeGrant, FakeGrantee

        for model in (Item, FakeAcl, FakeGrant, FakeGrantee):
            model.instances_tracked.clear()  # type: ignore[attr-defined]

    def forget_execution(self, execution_arn: str) -> None:
        """Drop a succeeded execution, once summarised, from the emulator: a long run's
        histories would otherwise all stay in memory (AWS keeps them for 90 days)."""
        import moto

        if moto.__version__ != MOTO_VERSION:
            return
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        backend = stepfunctions_parser_backends[ACCOUNT][REGION]
        for machine in backend.state_machines:
            machine.executions[:] = [
                e
                for e in machine.executions
                if not (e.exec_arn == execution_arn and e.exec_status == "SUCCEEDED")
            ]

    def __exit__(self, *exc: object) -> None:
        restore = getattr(self, "_restore_interpreter", None)
        if restore:
            restore()
            self._restore_interpreter = None
        if self.objects is not None:
            self.objects.uninstall(self._session)
            self.objects = None
        if self.lambdas is not None:
            self._session.events.unregister(
                "before-call.lambda.Invoke", self.lambdas.on_before_call
            )
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        _reset_caches()
        if hasattr(self, "_interpreter_log"):
            self._interpreter_log.setLevel(self._interpreter_log_level)
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}

    def _set_env(self, values: dict[str, str], clear: tuple[str, ...]) -> None:
        for k in (*values, *clear):
            self._saved_env.setdefault(k, os.environ.get(k))
        for k in clear:
            os.environ.pop(k, None)
        os.environ.update(values)

    def _function_environment(self, functions: dict[str, Any], names: dict[str, str]) -> dict:
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


def _share_interpreter_clients() -> Callable[[], None]:
    """Two narrow patches of moto's interpreter where it wastes time, applied only to the moto
    version they were written for (tests/unit/test_moto.py fails loudly when it changes):

    - it builds a new boto3 client for every Lambda task (about 4 ms, a tenth of a task's cost
      here), where the Step Functions service keeps its connections: tasks share one client;
    - it parses every JSONPath string again at every use (in its JSONPath helpers and in
      ResultPath): parsing, a pure function of the string, is cached.

    Returns the function that undoes them."""
    import moto
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.utils import json_path

    if moto.__version__ != MOTO_VERSION:
        return lambda: None
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


def _object_requests(session: Any) -> ObjectRequests | None:
    """S3 object requests served by moto's S3 backend directly (see object_requests), with the
    moto version it was written for; with another, they take moto's HTTP path."""
    import moto

    if moto.__version__ != MOTO_VERSION or os.environ.get("SNN_LOCAL_S3") == "http":
        return None
    objects = ObjectRequests(ACCOUNT)
    objects.install(session)
    return objects


def _import_handler(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise TemplateError(f"handler {path} cannot be imported ({exc})") from None


def _table_definition(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }


def _reset_caches() -> None:
    from snn import handlers, store

    handlers.reset()
    store.reset_clients()


class QuotaGuard:
    """Stops the execution, as AWS fails it, once its history passes the Standard quota (and
    keeps the emulator compact while it watches).

    Reading a history copies it whole, so it is read only when it could be over the quota: an
    invocation of a Lambda task adds at most EVENTS_PER_INVOCATION events (task, iteration and
    map events), so the invocations served since the execution started bound its length. It
    is also read every `every_read` seconds, for loops that invoke no Lambda, and the whole
    history is checked again when the execution ends."""

    EVENTS_PER_INVOCATION = 16

    def __init__(
        self,
        embedded: EmbeddedStack,
        execution_arn: str,
        every_seconds: float = 1.0,
        every_read: float = 30.0,
    ) -> None:
        assert embedded.stack is not None and embedded.lambdas is not None
        self.embedded, self.st = embedded, embedded.stack
        self.execution_arn, self.every, self.every_read = execution_arn, every_seconds, every_read
        self.exceeded = 0
        self._served_before = self._served()
        now = time.monotonic()
        self._next, self._next_read = now + every_seconds, now + every_read

    def _served(self) -> int:
        assert self.embedded.lambdas is not None
        return sum(self.embedded.lambdas.invocations.values())

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next or self.exceeded:
            return
        self._next = now + self.every
        self.embedded.compact()
        bound = (self._served() - self._served_before + 1) * self.EVENTS_PER_INVOCATION
        if bound <= stack.MAX_HISTORY_EVENTS and now < self._next_read:
            return
        self._next_read = now + self.every_read
        length = stack.history_length(self.st, self.execution_arn)
        if length > stack.MAX_HISTORY_EVENTS:
            self.exceeded = length
            self.st.sfn.stop_execution(executionArn=self.execution_arn)


# --- the engine -----------------------------------------------------------------------------------

RESUME_FILE = "state.json"
# How often the run is polled for progress: each poll is three requests to the emulator, which
# shares the process (and its GIL) with the interpreter and the handlers.
FOLLOW_SECONDS = 1.0


class RunInterrupted(SnnError):
    exit_code = 130


def train(
    p: Parameters,
    data_dir: Path,
    run_id: str,
    on_epoch: OnEpoch | None = None,
    template_path: str | Path = "template.yaml",
    fault_rate: float = 0.0,
    resume_dir: Path | None = None,
) -> RunResult:
    """Train on the embedded stack. If the run fails or is interrupted, what a later process
    needs to resume it is saved in `resume_dir` (see `resume`)."""
    start = time.perf_counter()
    with EmbeddedStack(template_path, fault_rate) as embedded:
        st = embedded.stack
        assert st is not None
        event = stack.upload_inputs(st, run_id, p, data_dir)
        arn = stack.start(st, event, name=run_id)
        return _follow(embedded, run_id, event, arn, on_epoch, resume_dir, 0, start)


def resume(
    resume_dir: Path,
    on_epoch: OnEpoch | None = None,
    template_path: str | Path = "template.yaml",
    fault_rate: float = 0.0,
) -> RunResult:
    """Carry on a run saved by a failed or interrupted `train`, from its last committed epoch,
    in a new process: the same objects and record are put back into a new embedded stack and a
    new execution starts. The result is the uninterrupted run's, bit for bit."""
    start = time.perf_counter()
    state = _load_state(resume_dir)
    run_id = state["run_id"]
    with EmbeddedStack(template_path, fault_rate) as embedded:
        st = embedded.stack
        assert st is not None
        for key, data in _saved_objects(resume_dir):
            st.objects.put_bytes(key, data)
        st.runs.create(run_id, state["record"])
        st.runs.update(run_id, {"status": "RUNNING"})
        committed = int(state["record"]["committed_epoch"])
        name = f"{run_id}-r{int(time.time())}"
        arn = stack.start(st, state["execution_input"], name=name)
        return _follow(
            embedded,
            run_id,
            state["execution_input"],
            arn,
            on_epoch,
            resume_dir,
            committed,
            start,
            state.get("summary"),
        )


def _follow(
    embedded: EmbeddedStack,
    run_id: str,
    event: dict[str, str],
    arn: str,
    on_epoch: OnEpoch | None,
    resume_dir: Path | None,
    reported: int,
    start: float,
    prior: dict[str, Any] | None = None,
) -> RunResult:
    """Follow the run to its end; `prior` accounts for executions of earlier processes."""
    st, lambdas = embedded.stack, embedded.lambdas
    assert st is not None and lambdas is not None
    guards: list[QuotaGuard] = []
    executions: list[stack.Execution] = []

    def guard(execution_arn: str) -> Any:
        guards.append(QuotaGuard(embedded, execution_arn))
        return guards[-1].check

    try:
        stack.follow_run(
            st,
            run_id,
            arn,
            on_epoch,
            guard=guard,
            reported=reported,
            executions=executions,
            ended=embedded.forget_execution,
            poll_seconds=FOLLOW_SECONDS,
        )
    except KeyboardInterrupt:
        _stop_all(embedded)
        where = _save_state(embedded, run_id, event, resume_dir, prior, executions)
        raise RunInterrupted(f"run {run_id} interrupted{where}") from None

    too_long = max([ex.stats["history_events"] for ex in executions] + [g.exceeded for g in guards])
    if too_long > stack.MAX_HISTORY_EVENTS:
        cause = (
            f"execution history reached {too_long} events, over the quota of "
            f"{stack.MAX_HISTORY_EVENTS} events of a Standard execution"
        )
        st.runs.update(run_id, {"status": "FAILED", "error": "States.Runtime", "cause": cause})
        where = _save_state(embedded, run_id, event, resume_dir, prior, executions)
        raise RunFailed(f"run {run_id} failed: States.Runtime: {cause}{where}")
    last = executions[-1]
    if not last.succeeded:
        failure = stack.failure_cause(st, run_id, last.description)
        where = _save_state(embedded, run_id, event, resume_dir, prior, executions)
        raise RunFailed(f"{failure}{where}")
    for ex in executions:
        if ex.stats["oversized"]:
            raise RunFailed(
                f"run {run_id} failed: States.DataLimitExceeded: {ex.stats['oversized']}"
            )
    extra = _merge_summaries(prior, stack.run_summary(executions))
    extra["lambda_invocations_served"] = sum(lambdas.invocations.values())
    extra["injected_faults"] = dict(lambdas.faults)
    return stack.collect(st, run_id, "local", time.perf_counter() - start, extra)


def _stop_all(embedded: EmbeddedStack, quiet_seconds: float = 0.5, timeout: float = 60) -> None:
    """Stop every running execution and wait until no handler is still at work."""
    st, lambdas = embedded.stack, embedded.lambdas
    assert st is not None and lambdas is not None
    for ex in st.sfn.list_executions(stateMachineArn=st.state_machine_arn, statusFilter="RUNNING")[
        "executions"
    ]:
        st.sfn.stop_execution(executionArn=ex["executionArn"])
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if lambdas.in_flight:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_seconds:
            return
        time.sleep(0.05)


def _merge_summaries(prior: dict[str, Any] | None, later: dict[str, Any]) -> dict[str, Any]:
    if not prior:
        return later
    merged = {k: prior.get(k, 0) + v for k, v in later.items() if k != "executions"}
    merged["executions"] = prior["executions"] + later["executions"]
    return merged


def _all_executions(embedded: EmbeddedStack, known: list[stack.Execution]) -> list[stack.Execution]:
    """The run's executions: those already summarised, then any other the emulator still holds
    (the one that was stopped or failed), oldest first."""
    st = embedded.stack
    assert st is not None
    names = {ex.description["name"] for ex in known}
    listed = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
    listed.sort(key=lambda e: e["startDate"])
    return known + [
        stack.Execution.of(
            st.sfn.describe_execution(executionArn=e["executionArn"]),
            stack.history(st, e["executionArn"]),
        )
        for e in listed
        if e["name"] not in names
    ]


def _save_state(
    embedded: EmbeddedStack,
    run_id: str,
    event: dict[str, str],
    resume_dir: Path | None,
    prior: dict[str, Any] | None = None,
    known: list[stack.Execution] | None = None,
) -> str:
    """Save what `resume` needs: the run record, the execution input, and the objects a new
    execution reads (parameters, inputs, the committed epoch's weights, neuron statistics).
    Returns the sentence that tells the user how to resume."""
    st = embedded.stack
    assert st is not None
    if resume_dir is None:
        return ""
    from snn import store as keys

    record = st.runs.get(run_id)
    if record is None:
        return ""
    committed = int(record["committed_epoch"])
    prefixes = [
        keys.parameters_key(run_id),
        event["train_key"],
        event["test_key"],
        keys.epoch_prefix(run_id, committed),
        f"{keys.run_prefix(run_id)}neurons/",
    ]
    tmp = resume_dir.with_name(resume_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "objects").mkdir(parents=True)
    for prefix in prefixes:
        for page in st.s3.get_paginator("list_objects_v2").paginate(
            Bucket=st.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.startswith(keys.epoch_prefix(run_id, committed)) and not any(
                    f"/{name}/" in key for name in ("W", "b")
                ):
                    continue  # of the committed epoch only the weights are needed
                target = tmp / "objects" / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(st.objects.get_bytes(key))
    state = {
        "version": 1,
        "engine": "local",
        "run_id": run_id,
        "execution_input": event,
        "record": record,
        "summary": _merge_summaries(
            prior, stack.run_summary(_all_executions(embedded, known or []))
        ),
    }
    (tmp / RESUME_FILE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(resume_dir, ignore_errors=True)
    tmp.rename(resume_dir)
    return f" at epoch {committed}; resume it with: snn train --resume {resume_dir.parent}"


def _load_state(resume_dir: Path) -> dict[str, Any]:
    path = resume_dir / RESUME_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise SnnError(f"{resume_dir.parent}: no resumable run there (no {path})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SnnError(f"{path}: cannot be read ({exc})") from None
    if state.get("version") != 1 or state.get("engine") != "local":
        raise SnnError(f"{path}: not a saved local run")
    if state["record"].get("status") == "SUCCEEDED":
        raise SnnError(f"run {state['run_id']} has finished: nothing to resume")
    return state


def saved_run(resume_dir: Path) -> tuple[str, int, int]:
    """The run saved in `resume_dir`: its id, committed epoch and total epochs."""
    state = _load_state(resume_dir)
    epochs = Parameters.from_json(state["record"]["parameters"]).epochs
    return state["run_id"], int(state["record"]["committed_epoch"]), epochs


def _saved_objects(resume_dir: Path) -> list[tuple[str, bytes]]:
    root = resume_dir / "objects"
    return [
        (path.relative_to(root).as_posix(), path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


__all__ = ["EmbeddedStack", "RunInterrupted", "resume", "saved_run", "train"]
