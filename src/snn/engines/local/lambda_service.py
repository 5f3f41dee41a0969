"""The Lambda service of the embedded stack: every invoke the state machine makes is served
in-process, by calling the function's handler with a Lambda-like context, and answered as the
Lambda service answers (a function error for an exception).

It can also fail invocations on purpose (`fault_rate`), as the Lambda service can fail them: half
before the handler runs, half after it has written its outputs (the response is lost). The state
machine's Retry must recover from both.

What AWS enforces and moto does not is enforced here: a payload or result over 256 KB fails the
*execution* with States.DataLimitExceeded, which no Catch can catch (`on_data_limit`); an
invocation whose working set is over its function's memory fails with Runtime.OutOfMemory, and
one whose files are over its ephemeral storage with the OSError of a full /tmp, as Lambda fails
them (`check_resources`; no Retry of the state machine covers either).

A handler runs as in a container of its own: in a context of its own (`contextvars`), not in the
context of the interpreter's Invoke request that it answers. Nothing a handler sets in its
context outlives the invocation, and its requests do not each copy the caller's botocore context
(botocore copies the current one at every request).
"""

from __future__ import annotations

import contextvars
import io
import json
import random
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from snn.engines.history import MAX_PAYLOAD_BYTES

REGION = "us-east-1"
ACCOUNT = "123456789012"


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


# Called with (run_id or None, message) when a payload or result is over the limit.
DataLimitHandler = Callable[[str | None, str], None]
# Called with (function, event) before a handler runs: (error type, message) of what Lambda
# would end the invocation with for want of memory or storage, or None.
ResourceCheck = Callable[[str, Any], tuple[str, str] | None]


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
        self.seconds: Counter[str] = Counter()  # time spent in each function's handler
        self.fault_rate = fault_rate
        self.faults: Counter[str] = Counter()
        self.on_data_limit: DataLimitHandler | None = None
        self.check_resources: ResourceCheck | None = None
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

    def _inject(self, phase: str) -> None:
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

    def invoke(self, name: str, event: Any) -> tuple[bytes, str | None]:
        """Run function `name`'s handler on `event`: (the JSON result, None), or (the error
        document, "Unhandled") for an exception, as the Lambda service reports them."""
        handler = self.handlers.get(name)
        if handler is None:
            return _error("ResourceNotFoundException", f"no function {name}"), "Unhandled"
        context = LambdaContext(name, timeout_seconds=self.timeouts.get(name, 120))
        with self._lock:
            self.invocations[name] += 1
            self.in_flight += 1
        started = time.perf_counter()
        try:
            refused = self.check_resources(name, event) if self.check_resources else None
            if refused is not None:  # Lambda would end the invocation half-way
                return _error(*refused), "Unhandled"
            result = contextvars.Context().run(handler, event, context)
            return json.dumps(result, allow_nan=False).encode(), None
        except Exception as exc:  # the Lambda runtime reports any exception as a function error
            return _error(type(exc).__name__, str(exc), exc), "Unhandled"
        finally:
            with self._lock:
                self.in_flight -= 1
                self.seconds[name] += time.perf_counter() - started

    def mean_ms(self) -> dict[str, float]:
        """Each function's mean handler time so far, in milliseconds."""
        with self._lock:
            return {
                name: round(1000 * self.seconds[name] / n, 3)
                for name, n in self.invocations.items()
                if n
            }

    def on_before_call(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        """botocore's before-call for lambda.Invoke: the answer, without any HTTP."""
        name = invoked_function(params)
        body = params.get("body") or b"{}"
        if isinstance(body, str):
            body = body.encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            return self._over_limit(body, f"the input of {name} is {len(body)} bytes")
        fault = self._fault()
        if fault == "before_handler":
            self._inject(fault)
        payload, function_error = self.invoke(name, json.loads(body))
        if fault == "after_handler":
            self._inject(fault)
        if len(payload) > MAX_PAYLOAD_BYTES:
            return self._over_limit(body, f"the result of {name} is {len(payload)} bytes")
        return _answer(payload, function_error)

    def _over_limit(self, body: bytes, what: str) -> tuple[Any, dict[str, Any]]:
        message = f"{what}, over the {MAX_PAYLOAD_BYTES}-byte limit of a state's payload"
        run_id = None
        try:
            request = json.loads(body)
            run_id = request.get("run_id") if isinstance(request, dict) else None
        except ValueError:
            pass
        if self.on_data_limit:
            self.on_data_limit(run_id if isinstance(run_id, str) else None, message)
        return _answer(_error("States.DataLimitExceeded", message), "Unhandled")


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
