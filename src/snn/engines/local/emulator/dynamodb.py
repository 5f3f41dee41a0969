"""The emulated DynamoDB: one request at a time, and the item requests served without the HTTP
detour.

moto's tables are plain dictionaries: a read of the run record that meets the Loss stage's write
of a cost fails with "dictionary changed size during iteration". In Lambda nothing runs
concurrently within a container; the local engine runs handlers, the interpreter and its
follower in threads of one process, so its requests are made one at a time.

The stages' item requests are answered on botocore's `before-call`, as the S3 object requests
are (`s3_requests`); what is skipped is signing the request, moto parsing it back out of a fake
HTTP exchange, and the HTTP response around the answer:

- GetItem (every stage reads the run record, its precondition, so it is by far the most frequent
  request of a run) is answered from moto's backend: the item is moto's, projected as moto
  projects it (`project`: its steps, without converting every attribute for each name asked).
- PutItem, UpdateItem, DeleteItem and Query (Loss records a cost, Commit advances the run, the
  follower reads the costs) are answered by moto's own DynamoDB handler, the very method its
  HTTP path calls, on the request's parameters: its validation, its conditions, its errors
  (ConditionalCheckFailedException included, with the item when asked for) and its JSON, which
  botocore's own parser reads, as it reads moto's HTTP response. The answer is the same; only
  the wire is gone.

Every other request (creating the table, a scan, anything a user adds) takes moto's normal path.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import (  # what Item.project itself calls
    DynamoType,
    Item,
    deserializer,
    find_nested_key,
    merge_dicts,
    serializer,
)
from moto.dynamodb.responses import DynamoHandler, ProjectionExpressionParser

_lock = threading.RLock()
# Answered by moto's DynamoDB handler, as its HTTP path answers them.
HANDLED = frozenset({"PutItem", "UpdateItem", "DeleteItem", "Query"})
SERVED = HANDLED | {"GetItem"}
TARGET = "DynamoDB_20120810"
_LIST_ITEM = re.compile(r"(.+)\[(\d+)\]$")  # as moto's find_nested_key reads a path's first name


def project(item: Item, paths: Sequence[Sequence[str]]) -> dict[str, DynamoType]:
    """The attributes of moto's Item.project (5.2.5), step by step: for each path, the item as
    regular JSON and the path's value found in it, merged into the result. Only the attribute a
    path starts at is converted for it, not the whole item (`find_nested_key` reads no other);
    no Item is made (its size check cannot fail for a part of an item that passed it)."""
    result: dict[str, Any] = {}
    for path in paths:
        listed = _LIST_ITEM.match(path[0])
        name = listed.group(1) if listed else path[0]
        attribute = item.attrs.get(name)
        regular = (
            {}
            if attribute is None
            else {name: deserializer.deserialize(attribute.to_regular_json())}
        )
        merge_dicts(result, find_nested_key(list(path), regular))
    return {name: DynamoType(value) for name, value in serializer.serialize(result)["M"].items()}


@functools.lru_cache(maxsize=256)
def _projection(
    expression: str | None, names: tuple[tuple[str, str], ...]
) -> tuple[tuple[tuple[str, ...], ...], frozenset[str]]:
    """moto's parse of a projection (a pure function of its text and names, cached): the paths,
    and the names it used. A projection moto refuses raises, and is not cached."""
    parser = ProjectionExpressionParser(expression, dict(names))
    paths = parser.parse()
    return tuple(tuple(path) for path in paths), frozenset(parser.expr_attr_names_found)


def _no_auth() -> bool:
    from moto import settings

    return math.isinf(settings.INITIAL_NO_AUTH_ACTION_COUNT)


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
    """Serves the item requests (SERVED) from moto's DynamoDB of one account and region."""

    PARAMS = "snn_dynamodb_params"

    def __init__(self, account: str, region: str) -> None:
        self.account, self.region = account, region
        self.backend = dynamodb_backends[account][region]
        self.served = 0  # GetItem requests answered
        self.handled: dict[str, int] = dict.fromkeys(sorted(HANDLED), 0)

    def install(self, session: Any) -> Callable[[], None]:
        # On the service's events, not each operation's: botocore calls the handlers of the more
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
        if model.name in SERVED:
            context[self.PARAMS] = dict(params)

    def on_before_call(self, model: Any, context: dict, **_: Any) -> tuple[Any, dict] | None:
        params = context.get(self.PARAMS)
        if params is None or model.name not in SERVED:
            return None
        if model.name in HANDLED:
            # (with IAM checks on, moto's handler needs the signed request: its normal path)
            return self._handled(model, params) if _no_auth() else None
        try:
            with _lock:
                answer = self._get_item(params)
        except JsonRESTError:
            answer = None
        if answer is None:  # a request moto refuses: its normal path answers with the error
            return None
        self.served += 1
        from botocore.awsrequest import AWSResponse

        metadata = {
            "HTTPStatusCode": 200,
            "RequestId": uuid.uuid4().hex,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }
        return AWSResponse("", 200, {}, None), {**answer, "ResponseMetadata": metadata}

    def _get_item(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The item, or None for a request that moto's GetItem refuses (or that uses the legacy
        AttributesToGet): the same checks, in moto's words (responses.DynamoHandler.get_item)."""
        key, expression = params["Key"], params.get("ProjectionExpression")
        names = params.get("ExpressionAttributeNames")
        if params.get("AttributesToGet") or (names is not None and not (expression and names)):
            return None
        if [k for k, v in key.items() if not next(iter(v.values()))]:
            return None
        table = self.backend.get_table(params["TableName"])
        if not all(k in table.attribute_keys for k in key):
            return None
        paths, found = _projection(expression, tuple((names or {}).items()))
        if set(names or ()) - found:  # a name not used: refused
            return None
        item = self.backend.get_item(params["TableName"], key)
        if not item:
            return {}
        attrs = project(item, paths) if paths else item.attrs
        return Item.to_json(SimpleNamespace(attrs=attrs), root_attr_name="Item")

    def _handled(self, model: Any, params: dict[str, Any]) -> tuple[Any, dict]:
        """moto's handler method for the operation, on a copy of the parameters (as its HTTP
        path parses them back out of the request), and its response read by botocore's parser
        (as botocore reads it off the wire), errors included."""
        from botocore.awsrequest import AWSResponse
        from botocore.parsers import create_parser

        handler = DynamoHandler()
        handler.current_account, handler.region, handler.partition = (
            self.account,
            self.region,
            "aws",
        )
        handler.headers = {"X-Amz-Target": f"{TARGET}.{model.name}"}
        handler.querystring, handler.uri_match, handler.method = {}, {}, "POST"
        handler.response_headers = {"server": "amazon.com"}
        handler.params = copy.deepcopy(params)
        with _lock:  # one at a time, as `serialise` makes moto's path
            status, headers, body = handler.call_action()
        self.handled[model.name] += 1
        response = AWSResponse("", int(status), headers, None)
        wire = {
            "status_code": response.status_code,
            "headers": response.headers,
            "body": body.encode() if isinstance(body, str) else body,
            "context": {"operation_name": model.name},
        }
        parser = create_parser(model.service_model.protocol)
        parsed = parser.parse(wire, model.output_shape)
        if response.status_code >= 300:  # the error's modelled fields, as botocore adds them
            code = parsed.get("Error", {}).get("Code")
            shape = model.service_model.shape_for_error_code(code) if code else None
            if shape is not None:
                parsed.update(parser.parse(wire, shape))
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = 0
        return response, parsed
