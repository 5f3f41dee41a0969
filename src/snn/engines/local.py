"""The embedded local engine: the real state machine and the real handlers, on one machine, with
no AWS account and no Docker.

- template.yaml says what to stand up: the bucket, the table (its own key schema), the functions
  (Handler, Environment) and the state machine (DefinitionUri + DefinitionSubstitutions).
- moto emulates S3, DynamoDB and Step Functions in memory; its Step Functions interpreter runs
  the definition from statemachine/ as it is.
- Every Lambda invoke the interpreter makes is served in-process: a handler on botocore's public
  `before-call.lambda.Invoke` event calls the function's handler with a Lambda-like context and
  answers as the Lambda service would (a function error for an exception).
- What AWS enforces and moto does not is enforced here: 256 KB per state input/output and per
  Lambda payload, and the 25,000-event history of a Standard execution.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from snn.engines import OnEpoch, stack
from snn.errors import RunFailed, SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.template import Template, TemplateError, resolve

REGION = "us-east-1"
ACCOUNT = "123456789012"

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


class LambdaService:
    """Serves the interpreter's Lambda invokes by calling the handlers in-process."""

    def __init__(self, handlers: dict[str, Any], timeouts: dict[str, int]) -> None:
        self.handlers = handlers
        self.timeouts = timeouts
        self.invocations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_before_call(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        name = unquote(params["url_path"]).split("/functions/", 1)[1].split("/invocations")[0]
        name = name.rsplit(":function:", 1)[-1].split(":", 1)[0]
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
        context = LambdaContext(name, timeout_seconds=self.timeouts.get(name, 120))
        try:
            result = handler(json.loads(body), context)
            payload, function_error = json.dumps(result).encode(), None
        except Exception as exc:  # the Lambda runtime reports any exception as a function error
            with self._lock:
                self.errors[type(exc).__name__] += 1
            payload, function_error = _error(type(exc).__name__, str(exc), exc), "Unhandled"
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


class EmbeddedStack:
    """The stack of template.yaml, stood up in moto for the duration of a `with` block."""

    def __init__(self, template_path: str | Path = "template.yaml") -> None:
        self.template = Template.load(template_path)
        self.suffix = uuid.uuid4().hex[:8]
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        self.lambdas: LambdaService | None = None
        self.stack: stack.Stack | None = None

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
        try:
            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._mock.start()
            _reset_caches()
            session = (
                boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
            )
            s3, dynamodb, sfn = (
                session.client(s, region_name=REGION) for s in ("s3", "dynamodb", "stepfunctions")
            )
            s3.create_bucket(Bucket=names[bucket_id])
            dynamodb.create_table(TableName=names[table_id], **_table_definition(table_props))
            definition = self.template.definition({**arns, **names})
            arn = sfn.create_state_machine(
                name=f"{sm_id}-{self.suffix}",
                definition=definition,
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{sm_id}Role",
                type="STANDARD",
            )["stateMachineArn"]
            self.lambdas = LambdaService(handlers, {fid: 120 for fid in functions})
            session.events.register("before-call.lambda.Invoke", self.lambdas.on_before_call)
            self._session = session
            self.stack = stack.Stack(names[bucket_id], names[table_id], arn, s3, dynamodb, sfn)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lambdas is not None:
            self._session.events.unregister(
                "before-call.lambda.Invoke", self.lambdas.on_before_call
            )
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
    """Stops the execution, as AWS fails it, once its history passes the Standard quota.

    Reading a long history is not free in the emulator (it is serialised whole), so it is
    counted every few seconds; the whole history is checked again when the execution ends."""

    def __init__(self, st: stack.Stack, execution_arn: str, every_seconds: float = 5.0) -> None:
        self.st, self.execution_arn, self.every = st, execution_arn, every_seconds
        self.exceeded = 0
        self._next = time.monotonic() + every_seconds

    def check(self) -> None:
        if time.monotonic() < self._next or self.exceeded:
            return
        self._next = time.monotonic() + self.every
        length = stack.history_length(self.st, self.execution_arn)
        if length > stack.MAX_HISTORY_EVENTS:
            self.exceeded = length
            self.st.sfn.stop_execution(executionArn=self.execution_arn)


# --- the engine -----------------------------------------------------------------------------------


def train(
    p: Parameters,
    data_dir: Path,
    run_id: str,
    on_epoch: OnEpoch | None = None,
    template_path: str | Path = "template.yaml",
) -> RunResult:
    start = time.perf_counter()
    with EmbeddedStack(template_path) as embedded:
        st = embedded.stack
        assert st is not None and embedded.lambdas is not None
        event = stack.upload_inputs(st, run_id, p, data_dir)
        execution_arn = stack.start(st, event, name=run_id)

        quota = QuotaGuard(st, execution_arn)
        description = stack.follow(st, run_id, execution_arn, on_epoch, check=quota.check)
        events = stack.history(st, execution_arn)
        if len(events) > stack.MAX_HISTORY_EVENTS:
            quota.exceeded = len(events)
        if quota.exceeded:
            cause = (
                f"execution history reached {quota.exceeded} events, over the quota of "
                f"{stack.MAX_HISTORY_EVENTS} events of a Standard execution"
            )
            st.runs.update(run_id, {"status": "FAILED", "error": "States.Runtime", "cause": cause})
            raise RunFailed(f"run {run_id} failed: States.Runtime: {cause}")
        if description["status"] != "SUCCEEDED":
            raise stack.failure_cause(st, run_id, description)
        oversized = stack.oversized_payload(events)
        if oversized:
            raise RunFailed(f"run {run_id} failed: States.DataLimitExceeded: {oversized}")
        extra = stack.run_summary(st, run_id, description, events)
        extra["lambda_invocations_served"] = sum(embedded.lambdas.invocations.values())
        return stack.collect(st, run_id, "local", time.perf_counter() - start, extra)


__all__ = ["EmbeddedStack", "SnnError", "train"]
