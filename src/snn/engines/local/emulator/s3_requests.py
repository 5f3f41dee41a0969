"""S3 object requests of the local engine, served by moto's S3 backend without the HTTP detour.

Every S3 request of a run still goes through a boto3 client (the handlers' code is the code that
runs on AWS) and every object is still stored in moto's S3, under its key, as the bytes the
handler wrote. What is skipped is the part of the emulation that models the wire: botocore
signing the request and moto parsing it back out of a fake HTTP exchange, then rendering an XML
response for botocore to parse again. That detour cost about 2 ms a request, a third of the
engine's time, for a network whose epoch makes some 40 requests.

The four object operations the stages use are served on botocore's `before-call.s3` event, as
the Lambda service is (see `lambda_service`): PutObject, GetObject, ListObjectsV2 and
DeleteObjects. Every other S3 request (creating the bucket, anything a user adds) takes moto's
normal path. Answers have the shape the real service's parsed responses have, errors included
(a missing key is a 404 NoSuchKey, which botocore raises as `client.exceptions.NoSuchKey`),
with one omission: no ETag, which nothing here reads and which would cost an MD5 of every
matrix written.

It reads moto's backend, behind the emulator's version gate. `SNN_LOCAL_S3=http` turns it off
(every request then takes moto's HTTP path), to compare the two.
"""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from moto.s3.exceptions import MissingBucket
from moto.s3.models import s3_backends

SERVED = frozenset({"PutObject", "GetObject", "ListObjectsV2", "DeleteObjects"})


class ObjectRequests:
    """Serves S3 object requests from moto's S3 backend of one account."""

    API_PARAMS = "snn_api_params"

    def __init__(self, account: str, partition: str = "aws") -> None:
        self.backend = s3_backends[account][partition]
        self.served: dict[str, int] = dict.fromkeys(SERVED, 0)
        self._lock = threading.Lock()  # handlers run side by side in Map states

    def install(self, session: Any) -> None:
        for event, handler in self._hooks():
            session.events.register(event, handler, unique_id=f"{event}-{id(self)}")

    def uninstall(self, session: Any) -> None:
        for event, _ in self._hooks():
            session.events.unregister(event, unique_id=f"{event}-{id(self)}")

    def _hooks(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("provide-client-params.s3", self.keep_params),
            ("before-call.s3", self.on_before_call),
        )

    def keep_params(self, params: dict[str, Any], model: Any, context: dict, **_: Any) -> None:
        """The request's parameters as the caller gave them (before-call sees only the
        serialised request)."""
        if model.name in SERVED:
            context[self.API_PARAMS] = dict(params)

    def on_before_call(self, model: Any, context: dict, **_: Any) -> tuple[Any, dict] | None:
        params = context.get(self.API_PARAMS)
        if params is None or model.name not in SERVED:
            return None
        with self._lock:
            self.served[model.name] += 1
        try:
            return getattr(self, f"_{model.name}")(params)
        except MissingBucket:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist")

    # --- the operations --------------------------------------------------------------------------

    def _PutObject(self, params: dict[str, Any]) -> tuple[Any, dict]:
        body = params.get("Body", b"")
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        key = self.backend.put_object(params["Bucket"], params["Key"], bytes(body))
        answer: dict[str, Any] = {}
        if key.encryption:
            answer["ServerSideEncryption"] = key.encryption
        return _ok(answer)

    def _GetObject(self, params: dict[str, Any]) -> tuple[Any, dict]:
        from botocore.response import StreamingBody

        key = self.backend.get_object(params["Bucket"], params["Key"])
        if key is None:
            return _error(404, "NoSuchKey", "The specified key does not exist.", params["Key"])
        value = key.value
        answer = {
            "Body": StreamingBody(io.BytesIO(value), len(value)),
            "ContentLength": len(value),
            "LastModified": _when(key.last_modified),
            "ContentType": "binary/octet-stream",
        }
        if key.encryption:
            answer["ServerSideEncryption"] = key.encryption
        return _ok(answer)

    def _ListObjectsV2(self, params: dict[str, Any]) -> tuple[Any, dict]:
        """Keys under a prefix in key order, up to MaxKeys a page (no delimiter: the stages
        list flat prefixes)."""
        if params.get("Delimiter"):
            raise NotImplementedError("ListObjectsV2 with a delimiter")
        bucket = self.backend.get_bucket(params["Bucket"])
        prefix = params.get("Prefix", "")
        after = params.get("ContinuationToken") or params.get("StartAfter") or ""
        limit = min(int(params.get("MaxKeys", 1000)), 1000)
        names = sorted(k for k in list(bucket.keys.keys()) if k.startswith(prefix) and k > after)
        page, more = names[:limit], len(names) > limit
        contents = []
        for name in page:
            key = bucket.keys.get(name)
            if key is None:  # deleted meanwhile
                continue
            contents.append(
                {
                    "Key": name,
                    "Size": key.size,
                    "LastModified": _when(key.last_modified),
                    "StorageClass": "STANDARD",
                }
            )
        answer: dict[str, Any] = {
            "IsTruncated": more,
            "Name": params["Bucket"],
            "Prefix": prefix,
            "MaxKeys": limit,
            "KeyCount": len(contents),
        }
        if contents:
            answer["Contents"] = contents
        if more:
            answer["NextContinuationToken"] = page[-1]
        return _ok(answer)

    def _DeleteObjects(self, params: dict[str, Any]) -> tuple[Any, dict]:
        objects = params["Delete"]["Objects"]
        deleted, errors = self.backend.delete_objects(params["Bucket"], objects)
        answer: dict[str, Any] = {}
        if not params["Delete"].get("Quiet"):
            answer["Deleted"] = [{"Key": name} for name, *_ in deleted]
        if errors:
            answer["Errors"] = [{"Key": name, "Code": "AccessDenied"} for name in errors]
        return _ok(answer)


def object_exists(account: str, bucket: str, key: str, partition: str = "aws") -> bool:
    """Whether the bucket holds the key (for S3's answer to a caller that may not list it)."""
    try:
        return s3_backends[account][partition].get_object(bucket, key) is not None
    except MissingBucket:
        return False


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _metadata(status: int) -> dict[str, Any]:
    return {
        "HTTPStatusCode": status,
        "RequestId": uuid.uuid4().hex,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }


def _ok(answer: dict[str, Any]) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    return AWSResponse("", 200, {}, None), {**answer, "ResponseMetadata": _metadata(200)}


def _error(status: int, code: str, message: str, key: str | None = None) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    error = {"Code": code, "Message": message, **({"Key": key} if key else {})}
    return AWSResponse("", status, {}, None), {
        "Error": error,
        "ResponseMetadata": _metadata(status),
    }
