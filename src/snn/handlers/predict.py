"""Predict: classify one picture with a trained run's model (not a stage of training).

Event (events/predict.json): the run and the picture, inline or as an upload in the bucket:
    {"run_id": "sample", "image_base64": "<the file's bytes, base64>"}
    {"run_id": "sample", "image_key": "uploads/<sha256>/<file>"}
Result:
    {"run_id": "sample", "label": "cat", "probability": 0.9703}
    (label: the model's class name; probability: of its positive class, cat)

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

from snn import keys, stages
from snn.errors import EventError
from snn.handlers import Event, handle, logger
from snn.predict import ImageError, Model, ModelError, check_model, classify, load_image, read_model
from snn.stores import MissingObject

# The picture itself, decoded: Lambda takes at most 6 MB of request anyway.
MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_MODELS = 8  # models kept per container

_models: dict[tuple[str, str], Model] = {}
_lock = threading.Lock()


def reset() -> None:
    """Forget the cached models (a new emulated account)."""
    with _lock:
        _models.clear()


def _model(ctx: stages.Context, run_id: str) -> Model:
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
            weights, info = read_model(data, keys.model_key(run_id))
            check_model(weights, activations, keys.model_key(run_id))
        except ModelError as exc:
            raise EventError(str(exc)) from None
        model = Model(weights, activations, classes=tuple(info["classes"]), inputs=info["input"])
        with _lock:
            if len(_models) >= MAX_MODELS:
                _models.clear()
            _models[cache_key] = model
    return model


def _image_bytes(ctx: stages.Context, event: Event) -> bytes:
    inline, key = event.get("image_base64"), event.get("image_key")
    if (inline is None) == (key is None):
        raise EventError("the event needs exactly one of image_base64 and image_key")
    if inline is not None:
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
    keys.check_upload_key("image_key", key)
    try:
        data = ctx.store.get_bytes(key, max_bytes=MAX_IMAGE_BYTES)
    except MissingObject:
        raise EventError(f"no object {key} in the bucket") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise EventError(f"{key} is over the limit of {MAX_IMAGE_BYTES:,} bytes")
    return data


def _predict(ctx: stages.Context, event: Event) -> dict[str, Any]:
    run_id = event["run_id"]
    data = _image_bytes(ctx, event)
    model = _model(ctx, run_id)
    try:
        picture = load_image(data, model.image_size, name="the picture")
    except (ImageError, ModelError) as exc:
        raise EventError(str(exc)) from None
    (result,) = classify(model, [picture])
    return {"run_id": run_id, **result}


def predict(event: Any) -> dict[str, Any]:
    return handle(event, ("run_id",), _predict, optional=("image_base64", "image_key"))


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
        return predict(event)
    try:
        body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8")
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        logger.warning("rejected", reason="the request body is not JSON")
        return _http(400, {"error": "the request body must be a JSON object"})
    try:
        return _http(200, predict(request))
    except EventError as exc:
        return _http(400, {"error": str(exc)})
