"""The emulated DynamoDB: one request at a time, and the run record read without the HTTP detour.

moto's tables are plain dictionaries: a read of the run record that meets the Loss stage's write
of a cost fails with "dictionary changed size during iteration". In Lambda nothing runs
concurrently within a container; the local engine runs handlers, the interpreter and its
follower in threads of one process, so its requests are made one at a time.

Every stage reads the run record (its precondition), so GetItem is by far the most frequent
DynamoDB request of a run. It is answered from moto's backend on botocore's `before-call`, as the
S3 object requests are (`s3_requests`): the item is moto's, projection included; what is skipped
is signing the request, moto parsing it back, and both sides serialising the answer. Every other
request takes moto's normal path.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.responses import DynamoHandler, ProjectionExpressionParser

_lock = threading.RLock()


def serialise() -> Callable[[], None]:
    """Make the emulated DynamoDB answer one request at a time; returns the undo."""
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def one_at_a_time(self: Any) -> Any:
        with _lock:
            return original(self)

    DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]

    def restore() -> None:
        DynamoHandler.call_action = original  # type: ignore[method-assign]

    return restore


class ItemRequests:
    """Serves GetItem from moto's DynamoDB backend of one account and region."""

    PARAMS = "snn_dynamodb_params"

    def __init__(self, account: str, region: str) -> None:
        self.backend = dynamodb_backends[account][region]
        self.served = 0

    def install(self, session: Any) -> Callable[[], None]:
        # On the service's events, not GetItem's: botocore calls the handlers of the more
        # specific event first, and the first answer ends the call, so a handler of
        # GetItem's own would hide the request from the service-wide ones (`snn bill`'s meter).
        hooks = (
            ("provide-client-params.dynamodb", self.keep_params),
            ("before-call.dynamodb", self.on_before_call),
        )
        for event, handler in hooks:
            session.events.register(event, handler, unique_id=f"{event}-{id(self)}")

        def uninstall() -> None:
            for event, _ in hooks:
                session.events.unregister(event, unique_id=f"{event}-{id(self)}")

        return uninstall

    def keep_params(self, params: dict[str, Any], model: Any, context: dict, **_: Any) -> None:
        if model.name == "GetItem":
            context[self.PARAMS] = dict(params)

    def on_before_call(self, model: Any, context: dict, **_: Any) -> tuple[Any, dict] | None:
        if model.name != "GetItem":
            return None
        params = context.get(self.PARAMS)
        if params is None or params.get("AttributesToGet"):
            return None
        try:
            with _lock:
                parser = ProjectionExpressionParser(
                    params.get("ProjectionExpression"), params.get("ExpressionAttributeNames") or {}
                )
                item = self.backend.get_item(params["TableName"], params["Key"], parser.parse())
                answer = item.to_json(root_attr_name="Item") if item else {}
        except JsonRESTError:
            return None  # a request moto refuses: let its normal path answer with the error
        self.served += 1
        from botocore.awsrequest import AWSResponse

        metadata = {
            "HTTPStatusCode": 200,
            "RequestId": uuid.uuid4().hex,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }
        return AWSResponse("", 200, {}, None), {**answer, "ResponseMetadata": metadata}
