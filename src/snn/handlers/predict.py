"""Predict: classify one picture with a trained run's model (not a stage of training).

The event names the run and carries the picture, inline or as an upload in the bucket:

    {"run_id": "...", "image_base64": "<the file's bytes, base64>"}
    {"run_id": "...", "image_key": "uploads/<sha256>/<file>"}

and the answer is {"run_id", "label" ("cat" or "non-cat"), "probability" (P(cat))}.

Invoked directly, a bad event raises EventError (a function error). Through the function's URL
the event is an HTTP request whose body is that JSON; the answer is then an HTTP response, 400
for a bad request. A warm container keeps each run's model (models never change).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from typing import Any

from snn import store as keys
from snn.errors import EventError
from snn.handlers import logger, stage_context
from snn.handlers.init import UPLOAD_KEY
from snn.predict import ImageError, Model, ModelError, check_model, classify, load_image
from snn.predict import read_weights as read_model_weights
from snn.store import MissingObject, check_run_id

# The picture itself, decoded: Lambda takes at most 6 MB of request anyway.
MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_MODELS = 8  # models kept per container

_models: dict[tuple[str, str], Model] = {}
_lock = threading.Lock()


def reset() -> None:
    """Forget the cached models (tests that start a new emulated account)."""
    with _lock:
        _models.clear()


def _model(run_id: str) -> Model:
    ctx = stage_context()
    cache_key = (getattr(ctx.store, "bucket", ""), run_id)
    model = _models.get(cache_key)
    if model is None:
        activations = ctx.parameters(run_id).activations  # EventError for an unknown run
        try:
            data = ctx.store.get_bytes(keys.model_key(run_id))
        except MissingObject:
            record = ctx.runs.get(run_id, ("status",)) or {}
            raise EventError(
                f"run {run_id} has no model yet (status {record.get('status')}): it is written "
                "when training ends"
            ) from None
        try:
            weights = read_model_weights(data, keys.model_key(run_id))
            check_model(weights, activations, keys.model_key(run_id))
        except ModelError as exc:
            raise EventError(str(exc)) from None
        model = Model(weights, activations)
        with _lock:
            if len(_models) >= MAX_MODELS:
                _models.clear()
            _models[cache_key] = model
    return model


def _image_bytes(event: dict[str, Any]) -> bytes:
    inline, key = event.get("image_base64"), event.get("image_key")
    if (inline is None) == (key is None):
        raise EventError("the event needs exactly one of image_base64 and image_key")
    if inline is not None:
        if not isinstance(inline, str):
            raise EventError("event field image_base64 must be a base64 string")
        # 4 characters of base64 carry 3 bytes: refuse before decoding anything too large.
        if len(inline) > (MAX_IMAGE_BYTES // 3 + 1) * 4 + 4:
            raise EventError(f"image_base64 is over the limit of {MAX_IMAGE_BYTES:,} bytes")
        try:
            data = base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError):
            raise EventError("image_base64 is not valid base64") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise EventError(
                f"the picture is {len(data):,} bytes, over the limit of {MAX_IMAGE_BYTES:,} bytes"
            )
        return data
    if not isinstance(key, str) or not UPLOAD_KEY.fullmatch(key):
        raise EventError(f"image_key {key!r} is not an upload key uploads/<sha256>/<file>")
    store = stage_context().store
    client = store.client  # type: ignore[attr-defined]
    try:
        body = client.get_object(Bucket=store.bucket, Key=key)["Body"]  # type: ignore[attr-defined]
    except client.exceptions.NoSuchKey:
        raise EventError(f"no object {key} in the bucket") from None
    data = body.read(MAX_IMAGE_BYTES + 1)  # no more than the limit, whatever the object's size
    body.close()
    if len(data) > MAX_IMAGE_BYTES:
        raise EventError(f"{key} is over the limit of {MAX_IMAGE_BYTES:,} bytes")
    return data


def predict(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise EventError(f"the event must be a JSON object, got {type(event).__name__}")
    if "run_id" not in event:
        raise EventError("event is missing run_id")
    run_id = check_run_id(event["run_id"])
    logger.thread_safe_remove_keys(["epoch", "layer", "shard"])  # left by training stages
    logger.thread_safe_append_keys(run_id=run_id)
    data = _image_bytes(event)
    model = _model(run_id)
    try:
        picture = load_image(data, model.image_size, name="the picture")
    except ImageError as exc:
        raise EventError(str(exc)) from None
    (result,) = classify(model, [picture])
    return {"run_id": run_id, **result}


def _is_http(event: Any) -> bool:
    """A function URL's request (payload format 2.0), rather than a direct invocation."""
    return isinstance(event, dict) and "requestContext" in event and "run_id" not in event


def _http(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    if not _is_http(event):
        try:
            return predict(event)
        except EventError as exc:
            logger.warning("rejected", reason=str(exc))
            raise
    try:
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8")
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _http(400, {"error": "the request body must be a JSON object"})
    try:
        return _http(200, predict(request))
    except EventError as exc:
        logger.warning("rejected", reason=str(exc))
        return _http(400, {"error": str(exc)})
