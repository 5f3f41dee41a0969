"""What `snn serve` reads and says: no request reads a file outside --runs (docs/serve.md says
so; checked here by watching every file the process opens), no error repeats what a file holds,
models are read up to a limit, a class name that is not UTF-8 is answered, the network of a run
in progress names its inputs, and the predict page is offered the best model."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from snn import predict
from snn.cli import main
from snn.report import model_bytes
from snn.serve.app import create_app
from tests.unit import serve_fakes as fakes

SECRET = "SECRET-CONTENT"
_WATCHED: list[tuple[str, list[str]]] = []  # (a folder, the files opened in it) while watched


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    """Notes each file opened in a watched folder: where a path leads once its links are
    followed (but the last one, when the file is opened without following it)."""
    if event != "open" or not _WATCHED or isinstance(args[0], int) or args[0] is None:
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
    if flags & getattr(os, "O_NOFOLLOW", 0):
        target = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    else:
        target = os.path.realpath(path)
    for folder, opened in _WATCHED:
        if target == folder or target.startswith(folder + os.sep):
            opened.append(path)


sys.addaudithook(_on_audit)


@pytest.fixture
def opened_in() -> Iterator[Any]:
    """opened_in(folder): the list of files opened in folder from now on, until the test ends."""

    def watch(folder: Path) -> list[str]:
        _WATCHED.append((os.path.realpath(folder), []))
        return _WATCHED[-1][1]

    yield watch
    _WATCHED.clear()


def png(side: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 120, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def linked_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run folders under runs/ whose files (or themselves) are links to a folder beside it."""
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    away = fakes.finished(outside, "away", run_id=f"{SECRET}-run")
    (outside / "secret.json").write_text(json.dumps({"parameters": {"epochs": SECRET}}))
    (outside / "progress.json").write_text(json.dumps(fakes.progress(SECRET)))
    (outside / "resume").mkdir()
    (outside / "resume" / "state.json").write_text(json.dumps({"run_id": SECRET}))
    fakes.finished(runs, "done")
    for name, file, target in (
        ("linked-metrics", "metrics.json", outside / "secret.json"),
        ("linked-model", "model.npz", away / "model.npz"),
        ("linked-neurons", "neurons.npz", away / "neurons.npz"),
    ):
        folder = fakes.finished(runs, name)
        (folder / file).unlink()
        (folder / file).symlink_to(target)
    (runs / "linked-progress").mkdir()
    (runs / "linked-progress" / "progress.json").symlink_to(outside / "progress.json")
    resumed = fakes.in_progress(runs, "linked-resume", status="interrupted")
    (resumed / "resume").symlink_to(outside / "resume", target_is_directory=True)
    (runs / "linked-run").symlink_to(away, target_is_directory=True)
    return runs, outside


def every_request(client: TestClient, names: list[str]) -> list[Any]:
    answers = [client.get(p) for p in ("/", "/predict", "/api/runs")]
    for name in names:
        for path in ("", "/inspection", "/weights/0.png", "/events"):
            answers.append(client.get(f"/api/runs/{name}{path}"))
        answers += [client.get(f"/runs/{name}"), client.get(f"/runs/{name}/live")]
        answers.append(client.post(f"/api/runs/{name}/predict", content=png()))
    return answers


def test_no_request_reads_a_file_outside_the_runs_folder(
    tmp_path: Path, synthetic_dir: Path, opened_in: Any
) -> None:
    """docs/serve.md: "No request reads a file outside --runs" (but the application's own
    pages, the state machine definition and the --data set): links in a run folder, a linked
    run folder, `..`, absolute paths and encoded slashes."""
    runs, outside = linked_runs(tmp_path)
    client = TestClient(create_app(runs, str(synthetic_dir)), base_url="http://127.0.0.1")
    opened = opened_in(outside)
    open(runs / "linked-metrics" / "metrics.json").close()  # the watch sees a link followed
    assert opened == [str(runs / "linked-metrics" / "metrics.json")]
    opened.clear()
    names = ["done", "linked-metrics", "linked-model", "linked-neurons", "linked-progress"]
    names += ["linked-resume", "linked-run", "..", "%2E%2E", "..%2Foutside%2Faway"]
    names += [str(outside / "away").replace("/", "%2F"), "%2F..%2Foutside", "..%5Coutside"]
    answers = every_request(client, names)
    for path in (
        f"/api/runs/..{outside}/away",
        f"/api/runs/{'%2E%2E%2F' * 8}{str(outside).lstrip('/').replace('/', '%2F')}%2Faway",
        f"/static/{'..%2F' * 8}{str(outside / 'secret.json').lstrip('/')}",
        f"/static/%2e%2e/%2e%2e/%2e%2e{outside}/secret.json",
        f"/{outside}/secret.json",
    ):
        answers.append(client.get(path))
    assert opened == [], opened
    for answer in answers:
        assert SECRET not in answer.text, (answer.url, answer.text[:200])
    assert client.get("/api/runs/done").json()["status"] == "finished"  # the run beside: read


def test_a_linked_file_is_refused_in_one_line_that_does_not_repeat_it(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    runs, _ = linked_runs(tmp_path)
    client = TestClient(create_app(runs, str(synthetic_dir)), base_url="http://127.0.0.1")
    run = client.get("/api/runs/linked-metrics").json()
    assert run["status"] == "unreadable" and "metrics.json: cannot be opened" in run["error"]
    for path in ("/api/runs/linked-metrics/inspection", "/api/runs/linked-model/inspection"):
        answer = client.get(path)
        assert answer.status_code == 409 and "\n" not in answer.json()["error"], path
    answer = client.post("/api/runs/linked-metrics/predict", content=png())
    assert answer.status_code == 409
    assert answer.json()["error"].startswith("run linked-metrics cannot be read: metrics.json")
    neurons = client.get("/api/runs/linked-neurons/inspection").json()
    assert neurons["epochs"] == [] and neurons["history_note"].startswith("neurons.npz: cannot")
    assert all(layer["gradients"] is None for layer in neurons["layers"])


def test_no_error_repeats_what_a_run_file_holds(tmp_path: Path, synthetic_dir: Path) -> None:
    runs = tmp_path / "runs"
    bad_json = fakes.finished(runs, "bad-json")
    (bad_json / "metrics.json").write_text('{"run_id": "' + SECRET + '", oops}')
    not_utf8 = fakes.finished(runs, "not-utf8")
    (not_utf8 / "metrics.json").write_bytes(b'{"run_id": "\xff' + SECRET.encode() + b'"}')
    bad_parameters = fakes.finished(runs, "bad-parameters")
    metrics = json.loads((bad_parameters / "metrics.json").read_text())
    metrics["parameters"]["neurons"]["layer1"] = SECRET
    (bad_parameters / "metrics.json").write_text(json.dumps(metrics))
    client = TestClient(create_app(runs, str(synthetic_dir)), base_url="http://127.0.0.1")
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed["bad-json"]["error"] == "metrics.json: not valid JSON (at line 1 column 30)"
    assert listed["not-utf8"]["error"] == "metrics.json: not UTF-8 text"
    answer = client.post("/api/runs/bad-parameters/predict", content=png())
    assert answer.status_code == 409
    expected = 'run bad-parameters: its metrics.json has no valid "parameters"'
    assert answer.json()["error"] == expected
    for row in listed.values():
        assert SECRET not in (row["error"] or "")
    for answer in every_request(client, list(listed)):
        assert answer.status_code < 400 or SECRET not in answer.text, answer.url


def test_models_are_read_up_to_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import snn.npz

    runs = tmp_path / "runs"
    folder = fakes.finished(runs, "done")
    client = TestClient(create_app(runs), base_url="http://127.0.0.1")
    limit = snn.npz.MAX_NPZ_BYTES
    monkeypatch.setattr(snn.npz, "MAX_NPZ_BYTES", 100)
    monkeypatch.setattr("snn.serve.views.ZIP_SLACK", 0)
    answer = client.post("/api/runs/done/predict", content=png())
    assert answer.status_code == 409 and "model.npz is over" in answer.json()["error"]
    # snn predict's own reader: a metrics.json beside a model is read up to a limit too
    monkeypatch.setattr(snn.npz, "MAX_NPZ_BYTES", limit)
    monkeypatch.setattr(predict, "MAX_METRICS_BYTES", 64)
    assert main(["predict", "--model", str(folder), str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("metrics.json: over the limit of 64 bytes") and "\n" not in error


def test_a_class_name_that_is_not_utf8_is_answered(tmp_path: Path) -> None:
    """A folder of pictures named in bytes that are not UTF-8 (os.listdir gives them as lone
    surrogates): predict answers with those bytes shown as \\xNN, not a 500."""
    runs = tmp_path / "runs"
    folder = fakes.finished(runs, "odd")
    # Latin-1 bytes, as an old camera names folders
    classes = [os.fsdecode(b"autres-\xe9t\xe9"), os.fsdecode(b"chats-\xe9t\xe9")]
    info = {"classes": classes, "input": {"kind": "image", "size": fakes.SIZE}}
    (folder / "model.npz").write_bytes(model_bytes(fakes.weights(), info))
    client = TestClient(
        create_app(runs), base_url="http://127.0.0.1", raise_server_exceptions=False
    )
    answer = client.post("/api/runs/odd/predict", content=png())
    assert answer.status_code == 200
    label = answer.json()["label"]
    assert label in ("autres-\\xe9t\\xe9", "chats-\\xe9t\\xe9")
    (expected,) = predict.classify(predict.load_model(folder), [predict.load_image(png(), 4)])
    assert label == expected["label"].encode("utf-8", "surrogateescape").decode(
        "utf-8", "backslashreplace"
    )


@pytest.mark.slow
def test_a_run_in_progress_names_its_inputs(
    tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """progress.json says how many values an example has, so the runs page gives the whole
    network (48-3-1) before the model exists, as after."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**fakes.PARAMETERS, "epochs": 2}))
    out = tmp_path / "runs" / "trained"
    argv = ["train", "--engine", "direct", "--params", str(params), "--quiet"]
    assert main([*argv, "--data", str(synthetic_dir), "--out", str(out)]) == 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress["inputs"] == fakes.SIZE * fakes.SIZE * 3
    going = tmp_path / "runs" / "going"
    fakes.write_progress(going, {**fakes.progress("going"), "inputs": progress["inputs"]})
    client = TestClient(create_app(tmp_path / "runs"), base_url="http://127.0.0.1")
    rows = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert rows["trained"]["network"] == rows["going"]["network"] == "48-3-1"
    assert rows["going"]["status"] == "running" and not rows["going"]["has_model"]


def test_the_best_model_is_offered_first(tmp_path: Path) -> None:
    """The finished run whose model has the best test accuracy, not the newest run."""
    runs = tmp_path / "runs"
    fakes.finished(runs, "good", test_accuracy=0.8)
    fakes.finished(runs, "better", test_accuracy=0.9)
    fakes.finished(runs, "newest", test_accuracy=0.6)
    half = fakes.in_progress(runs, "half-trained", status="interrupted")
    (half / "model.npz").write_bytes(model_bytes(fakes.weights()))
    for age, name in enumerate(["newest", "half-trained", "good", "better"]):
        for file in (runs / name).iterdir():
            os.utime(file, (1e9 - age * 100, 1e9 - age * 100))
    client = TestClient(create_app(runs), base_url="http://127.0.0.1")
    listed = client.get("/api/runs").json()
    assert [r["name"] for r in listed["runs"]][:2] == ["newest", "half-trained"]
    assert listed["best"] == "better"
    fakes.finished(runs, "tie", test_accuracy=0.9)  # the newest of equals
    assert client.get("/api/runs").json()["best"] == "tie"
