"""`snn serve`'s application through the framework's test client: every page and endpoint, the
run names it refuses, the uploads it refuses, and that it never writes into a run folder."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from snn import predict
from snn.cli import main
from snn.inspection import forward_layers, layers, neuron_rows, read_history, weight_pictures
from snn.serve.app import HERE, create_app
from tests.unit import serve_fakes as fakes

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/", "/predict", "/runs/done", "/runs/done/live", "/runs/going/live"]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    fakes.finished(runs, "done")
    fakes.in_progress(runs, "going")
    return runs


@pytest.fixture
def client(runs: Path, synthetic_dir: Path) -> TestClient:
    app = create_app(runs, str(synthetic_dir), ROOT / "statemachine" / "training.asl.json")
    return TestClient(app, base_url="http://127.0.0.1:8000")


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_every_page_is_served_with_a_strict_content_policy(client: TestClient) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text):
            assert client.get(asset).status_code == 200, asset


def test_every_asset_is_the_apps_own() -> None:
    """No page, script or style sheet refers to anything outside the app (no CDN)."""
    files = [*(HERE / "pages").iterdir(), *(HERE / "static").iterdir()]
    assert {p.suffix for p in files} <= {".html", ".js", ".css", ".svg"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        others = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)
        assert set(others) <= {"http://www.w3.org"}, (path.name, others)
        assert "@import" not in text and "url(http" not in text


def test_the_runs_are_listed_newest_first_with_their_status(client: TestClient, runs: Path) -> None:
    fakes.in_progress(runs, "stale", updated_at=fakes.iso(0), resumable=True)
    fakes.in_progress(runs, "broke", status="failed", error="Loss: shapes differ")
    (runs / "not-a-run").mkdir()
    (runs / ".done.tmp").mkdir()
    (runs / "stray.txt").write_text("x")
    (runs / "linked").symlink_to(runs / "done")
    bad = runs / "garbled"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    listed = client.get("/api/runs").json()["runs"]
    by_name = {r["name"]: r for r in listed}
    assert set(by_name) == {"done", "going", "stale", "broke", "garbled"}
    assert listed[0]["name"] in ("garbled", "broke", "stale")
    assert by_name["done"] == {
        **by_name["done"],
        "status": "finished",
        "engine": "local",
        "network": "48-3-1",
        "epoch": 12,
        "epochs": 12,
        "final_cost": fakes.COSTS[-1],
        "train_accuracy": 0.75,
        "test_accuracy": 0.5,
        "has_model": True,
    }
    assert (by_name["going"]["status"], by_name["going"]["epoch"]) == ("running", 3)
    assert by_name["going"]["network"] == "48-3-1"  # no model yet: progress.json's inputs
    assert not by_name["going"]["has_model"]
    assert (by_name["stale"]["status"], by_name["stale"]["resumable"]) == ("interrupted", True)
    assert (by_name["broke"]["status"], by_name["broke"]["error"]) == (
        "failed",
        "Loss: shapes differ",
    )
    assert by_name["garbled"]["status"] == "unreadable"
    assert "not valid JSON" in by_name["garbled"]["error"]


def test_a_run_in_progress_whose_process_is_gone_is_interrupted(
    client: TestClient, runs: Path
) -> None:
    fakes.in_progress(runs, "killed", pid=2**22 + 12345)  # above the kernel's pid limit
    assert client.get("/api/runs/killed").json()["status"] == "interrupted"


def test_a_run_gives_its_curve_results_parameters_and_executions(client: TestClient) -> None:
    run = client.get("/api/runs/done").json()
    assert run["costs"] == fakes.COSTS
    assert run["parameters"] == fakes.PARAMETERS
    assert run["confusion_matrix"]["false_negative"] == 4
    assert run["executions"][0]["history_events"] == 1234
    going = client.get("/api/runs/going").json()
    assert going["costs"] == fakes.COSTS[:3] and going["status"] == "running"
    assert run["validation_costs"] is None  # a run with no validation set


def test_a_run_with_a_validation_set_gives_both_curves_and_why_it_stopped(
    client: TestClient, runs: Path
) -> None:
    why = "early stopping at epoch 5: the validation cost has not improved for 2 epochs"
    validation = [0.7, 0.6, 0.55, 0.56, 0.57, 0.58]
    fakes.finished(runs, "held-out", validation_costs=validation, model_epoch=3,
                   stopped_early=why)  # fmt: skip
    run = client.get("/api/runs/held-out").json()
    assert run["validation_costs"] == validation
    assert (run["model_epoch"], run["stopped_early"]) == (3, why)


def test_non_finite_values_of_an_old_run_are_null_not_invalid_json(
    client: TestClient, runs: Path
) -> None:
    fakes.finished(runs, "diverged", costs=[0.69, float("inf"), float("nan")])
    response = client.get("/api/runs/diverged")
    run = json.loads(response.text, parse_constant=pytest.fail)  # strict JSON
    assert run["costs"][1] is None and run["final_cost"] is None


def test_the_inspection_is_what_snn_inspect_computes(
    client: TestClient, runs: Path, synthetic_dir: Path
) -> None:
    from snn.data import load_dataset

    got = client.get("/api/runs/done/inspection").json()
    model = predict.load_model(runs / "done")
    train_x = load_dataset(synthetic_dir).train_x
    epochs, history, _ = read_history(runs / "done" / "neurons.npz", [3, 1])
    expected = layers(model.weights, model.activations, train_x, history)
    assert [layer["number"] for layer in got["layers"]] == [1, 2]
    assert got["examples"] == 40 and got["image_size"] == fakes.SIZE
    assert got["sampled"] == [0, 5, 11]
    for shown, layer in zip(got["layers"], expected, strict=True):
        rows = json.loads(json.dumps(neuron_rows(layer, list(range(layer.neurons)), epochs)))
        assert shown["rows"] == rows
        Z = forward_layers(model.weights, model.activations, train_x)[layer.number - 1][0]
        assert (
            shown["histograms"]["Z"]["counts"][0]
            == np.histogram(Z[0], bins=np.histogram_bin_edges(Z, bins=50))[0].tolist()
        )
        assert (
            shown["gradients"]["dW_norm"][0] == history[layer.number - 1]["dW_norm"][:, 0].tolist()
        )


def test_layer_one_weights_as_pictures(client: TestClient, runs: Path) -> None:
    response = client.get("/api/runs/done/weights/2.png")
    assert response.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)))
    W1 = fakes.weights()[0][0]
    assert np.array_equal(got, np.rint(weight_pictures(W1[[2]], fakes.SIZE)[0] * 255))
    assert client.get("/api/runs/done/weights/3.png").status_code == 404
    assert client.get("/api/runs/going/weights/0.png").status_code == 409  # no model yet


def test_inspection_needs_the_data_the_model_takes(runs: Path, tmp_path: Path) -> None:
    from snn.data import synthetic_images, write_h5_pair

    other = write_h5_pair(tmp_path / "five", *synthetic_images(size=5))
    client = TestClient(create_app(runs, str(other)), base_url="http://127.0.0.1")
    response = client.get("/api/runs/done/inspection")
    assert response.status_code == 409 and "the model takes 48" in response.json()["error"]
    assert client.get("/api/machine").status_code == 404  # no definition given


@pytest.mark.parametrize(
    "name",
    [
        "%2e%2e",
        "%2E",
        ".done",
        "nope",
        "a b",
        "x" * 200,
        "...",
        "..%2f..%2fetc",
        "linked",
        "stray.txt",
    ],
)
def test_bad_run_names_are_refused_everywhere(client: TestClient, runs: Path, name: str) -> None:
    (runs / "linked").symlink_to(runs / "done")
    (runs / "stray.txt").write_text("x")
    for path in (
        f"/runs/{name}",
        f"/runs/{name}/live",
        f"/api/runs/{name}",
        f"/api/runs/{name}/inspection",
        f"/api/runs/{name}/weights/0.png",
        f"/api/runs/{name}/events",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/api/runs/{name}/predict", content=b"x").status_code in (404, 405)


def test_no_request_reads_outside_the_runs_folder(client: TestClient, runs: Path) -> None:
    secret = runs.parent / "secret.json"
    secret.write_text('{"run_id": "secret"}')
    for path in (
        "/api/runs/../secret.json",
        "/api/runs/%2e%2e/secret.json",
        "/api/runs/..%2Fsecret.json",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2Fapp.py",
        "/runs/%2e%2e%2fsecret.json",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "secret" not in response.text and "import" not in response.text
    outside = runs / "done" / "metrics.json"
    outside.unlink()
    outside.symlink_to(secret)  # a link in a run folder is not followed
    assert client.get("/api/runs/done").json()["status"] == "unreadable"


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "../x", "x\x00", 7])
def test_the_run_name_rule(runs: Path, name: object) -> None:
    from snn.serve.runs import RunError, Runs

    with pytest.raises(RunError):
        Runs(runs).folder(name)  # type: ignore[arg-type]
    assert Runs(runs).folder("done") == runs / "done"


def test_another_host_name_is_refused(client: TestClient) -> None:
    """A web page elsewhere cannot reach the server under its own name (DNS rebinding)."""
    assert client.get("/api/runs", headers={"Host": "attacker.example"}).status_code == 400


def test_predict_gives_what_snn_predict_json_gives(
    client: TestClient, runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "picture.png"
    pixels = np.random.default_rng(5).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    picture.write_bytes(png(pixels))
    assert main(["predict", "--json", "--model", str(runs / "done"), str(picture)]) == 0
    (cli,) = json.loads(capsys.readouterr().out)
    response = client.post("/api/runs/done/predict", content=picture.read_bytes())
    assert response.status_code == 200
    got = response.json()
    assert (got["label"], got["probability"]) == (cli["label"], cli["probability"])
    seen = Image.open(io.BytesIO(__import__("base64").b64decode(got["input"].split(",")[1])))
    x = predict.load_image(picture, fakes.SIZE)
    assert seen.size == (fakes.SIZE, fakes.SIZE)
    assert np.array_equal(np.asarray(seen) / 255.0, x.reshape(fakes.SIZE, fakes.SIZE, 3))


def test_oversized_uploads_are_refused_unread(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = png(np.zeros((8, 8, 3), dtype=np.uint8))
    monkeypatch.setattr(predict, "MAX_PICTURE_BYTES", len(data) - 1)
    client = TestClient(create_app(runs), base_url="http://127.0.0.1")
    declared = client.post("/api/runs/done/predict", content=data)
    assert declared.status_code == 413
    assert declared.json()["error"] == f"the picture is over the limit of {len(data) - 1:,} bytes"

    def chunks():  # no Content-Length: counted as it arrives
        yield data[:50]
        yield data[50:]

    assert client.post("/api/runs/done/predict", content=chunks()).status_code == 413


def test_a_non_picture_and_an_empty_body_are_refused(client: TestClient) -> None:
    response = client.post("/api/runs/done/predict", content=b"%PDF-1.4 not a picture")
    assert response.status_code == 422
    assert response.json()["error"] == "the picture: not a picture Pillow can read"
    assert client.post("/api/runs/done/predict", content=b"").status_code == 400
    huge = client.post("/api/runs/done/predict", content=_png_claiming(60_000, 60_000))
    assert huge.status_code == 422 and "decompression bomb" in huge.json()["error"]


def test_predict_needs_a_usable_model(client: TestClient, runs: Path) -> None:
    assert client.post("/api/runs/going/predict", content=b"x").status_code == 409
    weights = fakes.weights()
    weights[1][0][0, 0] = np.nan
    from snn.report import model_bytes

    (runs / "done" / "model.npz").write_bytes(model_bytes(weights))
    picture = png(np.zeros((4, 4, 3), dtype=np.uint8))
    response = client.post("/api/runs/done/predict", content=picture)
    assert response.status_code == 409 and "W2 holds NaN" in response.json()["error"]


def test_nothing_is_ever_written_into_the_runs(client: TestClient, runs: Path) -> None:
    before = fakes.snapshot(runs)
    for path in PAGES:
        client.get(path)
    for path in ("/api/runs", "/api/runs/done", "/api/runs/done/inspection", "/api/machine"):
        assert client.get(path).status_code == 200, path
    client.get("/api/runs/done/weights/0.png")
    client.get("/api/runs/done/events")
    client.post("/api/runs/done/predict", content=png(np.zeros((9, 9, 3), dtype=np.uint8)))
    assert fakes.snapshot(runs) == before


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
