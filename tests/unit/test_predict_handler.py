"""The Predict Lambda function on the embedded stack (moto): a run trained through the handlers,
its model read from S3 and its activations from the run record, pictures inline or uploaded."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from snn import keys
from snn import network as nn
from snn.data import load_dataset, preprocess, synthetic_images
from snn.engines.stack import create_run
from snn.errors import EventError
from snn.handlers import predict as predict_handler
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.report import model_bytes
from snn.stores import S3Store
from tests.helpers import ROOT, handler, run_events

RUN = "pictures"


def params() -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": 3,
            "layers": 2,
            "activations": {"layer1": "tanh", "layer2": "sigmoid"},
            "neurons": {"layer1": 3, "layer2": 1},
            "learning_rate": 0.5,  # enough to tell the two classes apart in 3 epochs
            "initialization": "xavier",
            "neurons_per_task": 2,
        }
    )


def train(st: Any, data_dir: Path, run_id: str, evaluate: bool = True) -> None:
    event = {"input": create_run(st, run_id, params(), data_dir), "execution_name": run_id}
    plan = handler("init")(event, None)
    if evaluate:
        run_events(plan)
        handler("evaluate")({"run_id": run_id}, None)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def upload(st: Any, data: bytes, name: str = "picture.png") -> str:
    key = keys.upload_key(hashlib.sha256(data).hexdigest(), name)
    st.s3.put_object(Bucket=st.bucket, Key=key, Body=data)
    return key


@pytest.fixture
def trained(embedded_stack: Any, synthetic_dir: Path) -> Any:
    predict_handler.reset()
    train(embedded_stack.stack, synthetic_dir, RUN)
    return embedded_stack.stack


def expected(st: Any, images: np.ndarray) -> np.ndarray:
    """P(cat) of the run's model by a plain forward pass over the preprocessed pictures."""
    weights = read_weights(st.store.get_bytes(keys.model_key(RUN)))
    return nn.forward(weights, params().activations, preprocess(images))[0]


def test_inline_and_uploaded_pictures_get_the_forward_pass_label(trained: Any) -> None:
    _, _, images, _ = synthetic_images()  # 4 x 4: the model's own input size
    probabilities = expected(trained, images)
    assert {p > 0.5 for p in probabilities} == {True, False}  # both answers occur
    for image, p in zip(images, probabilities, strict=True):
        data = png(image)
        inline = predict_handler.handler(
            {"run_id": RUN, "image_base64": base64.b64encode(data).decode()}, None
        )
        uploaded = predict_handler.handler(
            {"run_id": RUN, "image_key": upload(trained, data)}, None
        )
        assert inline == uploaded
        assert inline["run_id"] == RUN
        assert inline["label"] == ("cat" if p > 0.5 else "non-cat")
        assert inline["probability"] == pytest.approx(p, abs=1e-12)


def test_a_large_picture_is_resized_to_the_model_size(trained: Any) -> None:
    big = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    result = predict_handler.handler(
        {"run_id": RUN, "image_base64": base64.b64encode(png(big)).decode()}, None
    )
    assert result["label"] in ("cat", "non-cat") and 0 < result["probability"] < 1


def test_the_model_is_kept_by_a_warm_container(trained: Any) -> None:
    event = {
        "run_id": RUN,
        "image_base64": base64.b64encode(png(synthetic_images()[2][0])).decode(),
    }
    first = predict_handler.handler(event, None)
    trained.s3.delete_object(Bucket=trained.bucket, Key=keys.model_key(RUN))
    assert predict_handler.handler(event, None) == first
    predict_handler.reset()
    with pytest.raises(EventError, match="no model yet"):
        predict_handler.handler(event, None)


def test_a_model_that_is_not_one_is_refused(trained: Any) -> None:
    data = png(synthetic_images()[2][0])
    good = trained.store.get_bytes(keys.model_key(RUN))
    for bad in (b"not a zip file", good[: len(good) // 2]):
        trained.store.put_bytes(keys.model_key(RUN), bad)
        predict_handler.reset()
        with pytest.raises(EventError, match=r"runs/pictures/model\.npz"):
            predict_handler.handler(inline(data), None)
    # a model whose weights hold NaN (as a diverged run's would) answers no picture
    weights = read_weights(good)
    weights[0] = (np.full_like(weights[0][0], np.nan), weights[0][1])
    trained.store.put_bytes(keys.model_key(RUN), model_bytes(weights))
    predict_handler.reset()
    with pytest.raises(EventError, match=r"W1 holds NaN or infinite values"):
        predict_handler.handler(inline(data), None)
    trained.store.put_bytes(keys.model_key(RUN), good)
    predict_handler.reset()
    assert predict_handler.handler(inline(data), None)["run_id"] == RUN


def inline(data: bytes, run_id: str = RUN) -> dict[str, Any]:
    return {"run_id": run_id, "image_base64": base64.b64encode(data).decode()}


def test_bad_events_are_refused(trained: Any, synthetic_dir: Path) -> None:
    good = png(synthetic_images()[2][0])
    train(trained, synthetic_dir, "untrained", evaluate=False)
    big = b"\x00" * (predict_handler.MAX_IMAGE_BYTES + 1)
    cases = {
        "bad run id": ({"run_id": "../x", "image_base64": "AA=="}, "invalid run_id"),
        "unknown run": (inline(good, "nobody"), "unknown run"),
        "run without a model": (inline(good, "untrained"), r"no model yet \(status RUNNING\)"),
        "oversize payload": (inline(big), "over the limit of 6,291,456 bytes"),
        "not base64": ({"run_id": RUN, "image_base64": "%%%"}, "not valid base64"),
        "base64 of a number": ({"run_id": RUN, "image_base64": 7}, "image_base64 must be str"),
        "not a picture": (inline(b"hello, world"), "not a picture"),
        "truncated picture": (inline(png(np.zeros((64, 64, 3), np.uint8))[:60]), "picture"),
        "no picture": ({"run_id": RUN}, "exactly one of image_base64 and image_key"),
        "two pictures": (
            {**inline(good), "image_key": upload(trained, good)},
            "exactly one of",
        ),
        "key outside uploads": ({"run_id": RUN, "image_key": keys.model_key(RUN)}, "upload key"),
        "key with ..": ({"run_id": RUN, "image_key": "uploads/../runs/x"}, "upload key"),
        "missing upload": (
            {"run_id": RUN, "image_key": keys.upload_key("0" * 64, "gone.png")},
            "no object",
        ),
        "no run id": ({"image_base64": "AA=="}, "missing run_id"),
        "not an object": (["x"], "JSON object"),
    }
    for name, (event, message) in cases.items():
        with pytest.raises(EventError, match=message):
            predict_handler.handler(event, None)
        assert name


def test_an_oversize_upload_is_refused_without_reading_it_all(
    trained: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = predict_handler.MAX_IMAGE_BYTES
    key = upload(trained, b"\x89PNG" + b"\x00" * limit)
    reads: list[tuple[int | None, int]] = []
    get_bytes = S3Store.get_bytes

    def spy(self: S3Store, key: str, max_bytes: int | None = None) -> bytes:
        data = get_bytes(self, key, max_bytes)
        reads.append((max_bytes, len(data)))
        return data

    monkeypatch.setattr(S3Store, "get_bytes", spy)
    with pytest.raises(EventError, match=f"{key} is over the limit of 6,291,456 bytes"):
        predict_handler.handler({"run_id": RUN, "image_key": key}, None)
    assert reads == [(limit, limit + 1)]  # one byte over tells; the other 3 are never read


def url_request(body: Any, encoded: bool = False) -> dict[str, Any]:
    """A function URL's event (payload format 2.0), as Lambda passes it."""
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "version": "2.0",
        "rawPath": "/",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": base64.b64encode(text.encode()).decode() if encoded else text,
        "isBase64Encoded": encoded,
    }


def test_the_function_url_answers_in_http(trained: Any) -> None:
    data = png(synthetic_images()[2][0])
    direct = predict_handler.handler(inline(data), None)
    for encoded in (False, True):
        response = predict_handler.handler(url_request(inline(data), encoded), None)
        assert response["statusCode"] == 200
        assert json.loads(response["body"]) == direct
    bad = predict_handler.handler(url_request(inline(data, "nobody")), None)
    assert bad["statusCode"] == 400 and "unknown run" in json.loads(bad["body"])["error"]
    garbled = predict_handler.handler(url_request("{not json"), None)
    assert garbled["statusCode"] == 400


def test_the_sample_event_is_well_formed() -> None:
    event = json.loads((ROOT / "events" / "predict.json").read_text())
    assert set(event) == {"run_id", "image_base64"}
    with Image.open(io.BytesIO(base64.b64decode(event["image_base64"]))) as image:
        assert image.format == "PNG"


def test_the_synthetic_run_has_4x4_inputs(synthetic_dir: Path) -> None:
    assert load_dataset(synthetic_dir).n_x == 4 * 4 * 3
