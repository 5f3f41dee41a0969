"""`snn serve` over run folders made by `snn train` on every engine: the direct engine, the local
engine, and the AWS engine on an emulated stack. Each run is listed with its engine, its page's
numbers are its metrics.json's, its neurons are inspected, and its model classifies a picture as
`snn predict --json` does."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from snn.cli import main
from snn.serve.app import create_app
from tests.helpers import ROOT, deployed, network

pytestmark = [
    pytest.mark.slow,  # three runs, one per engine
    pytest.mark.xdist_group("embedded"),
    # the stack of outputs the AWS engine reads: moto stores the placeholder without a model
    pytest.mark.filterwarnings("ignore:Tried to parse AWS.*WaitConditionHandle"),
]

EPOCHS = 3
ENGINES = ("direct", "local", "aws")


def train(engine: str, runs: Path, params: Path, data: Path, *extra: str) -> None:
    argv = ["train", "--engine", engine, "--params", str(params), "--data", str(data)]
    argv += ["--out", str(runs / engine), "--run-id", f"served-{engine}", "--quiet"]
    argv += ["--template", str(ROOT / "template.yaml"), *extra]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three run folders, one per engine, of the same network on the same synthetic data."""

    from snn.data import synthetic_images, write_h5_pair
    from snn.engines.local import EmbeddedStack
    from snn.engines.local.embedded import EMULATOR_ENV

    tmp = tmp_path_factory.mktemp("serve-engines")
    data = write_h5_pair(tmp / "data", *synthetic_images())
    params = tmp / "p.json"
    params.write_text(network([3, 1], epochs=EPOCHS, neurons_per_task=2).to_json())
    runs = tmp / "runs"
    train("direct", runs, params, data)
    train("local", runs, params, data)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in EMULATOR_ENV.items():
            mp.setenv(key, value)
        with EmbeddedStack(ROOT / "template.yaml") as embedded:
            train("aws", runs, params, data, "--stack", deployed(embedded, "snn"))
    return runs, data


@pytest.fixture
def client(runs: tuple[Path, Path]) -> TestClient:
    folder, data = runs
    app = create_app(folder, str(data), ROOT / "statemachine" / "training.asl.json")
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_of_every_engine_is_served(
    client: TestClient,
    runs: tuple[Path, Path],
    engine: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = runs[0] / engine
    metrics = json.loads((folder / "metrics.json").read_text())
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed[engine]["engine"] == engine and listed[engine]["status"] == "finished"

    run = client.get(f"/api/runs/{engine}").json()
    assert run["costs"] == metrics["costs"] and len(run["costs"]) == EPOCHS
    assert run["test_accuracy"] == metrics["test_accuracy"]
    executions = run["executions"]
    if engine == "direct":
        assert executions == []  # no state machine
    else:
        assert executions and all(e["status"] == "SUCCEEDED" for e in executions)

    inspection = client.get(f"/api/runs/{engine}/inspection")
    assert inspection.status_code == 200, inspection.text
    layers = inspection.json()["layers"]
    assert [layer["neurons"] for layer in layers] == [3, 1]

    picture = tmp_path / "picture.png"
    pixels = np.random.default_rng(3).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(picture)
    capsys.readouterr()
    assert main(["predict", "--json", "--model", str(folder), str(picture)]) == 0
    (expected,) = json.loads(capsys.readouterr().out)
    answer = client.post(f"/api/runs/{engine}/predict", content=picture.read_bytes()).json()
    assert (answer["label"], answer["probability"]) == (expected["label"], expected["probability"])


def test_the_engines_runs_are_the_same_run(runs: tuple[Path, Path]) -> None:
    """The same network on the same data: the same costs and the same model, whichever engine."""
    folder = runs[0]
    costs = {e: json.loads((folder / e / "metrics.json").read_text())["costs"] for e in ENGINES}
    assert costs["direct"] == costs["local"] == costs["aws"]
    models = {e: np.load(io.BytesIO((folder / e / "model.npz").read_bytes())) for e in ENGINES}
    for name in models["direct"].files:
        assert np.array_equal(models["direct"][name], models["local"][name])
        assert np.array_equal(models["direct"][name], models["aws"][name])
