"""`snn serve` end to end in Chromium: the runs page, a finished run's page (its cost chart has a
point per epoch; hover and zoom work), the predict page (the label and probability of `snn
predict --json`), and a real `snn train` local run watched live: the state machine highlights
the states running, the epochs and the cost curve advance. Each page is photographed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import pytest
from PIL import Image

from snn.cli import main
from snn.data import TEST_FILE
from snn.parameters import Parameters
from tests.helpers import ROOT
from tests.unit import serve_fakes as fakes

pytestmark = pytest.mark.browser

EPOCHS = 30
NETWORK = {  # Adam on mini-batches: a model worth looking at in half a minute
    "epochs": EPOCHS,
    "layers": 2,
    "activations": {"layer1": "relu", "layer2": "sigmoid"},
    "neurons": {"layer1": 7, "layer2": 1},
    "learning_rate": 0.002,
    "neurons_per_task": 7,
    "batch_size": 32,
    "optimizer": {"name": "adam"},
}


def wait_until(page: Any, script: str, timeout: float = 30) -> None:
    """Until the function `script` is true in the page (polled from here: the page's
    Content-Security-Policy forbids the evaluated strings of wait_for_function)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(100)


def points(page: Any, selector: str) -> int:
    return len(page.get_attribute(selector, "points").split())


def test_runs_run_and_predict_pages(
    page: Any,
    serve: Any,
    tmp_path: Path,
    data_dir: Path,
    screenshots: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = tmp_path / "runs"
    params = tmp_path / "network.json"
    params.write_text(json.dumps(NETWORK))
    argv = ["train", "--engine", "direct", "--params", str(params), "--data", str(data_dir)]
    assert main([*argv, "--out", str(runs / "cat-demo"), "--run-id", "cat-demo", "--quiet"]) == 0
    stopped = {"parameters": Parameters.from_dict(NETWORK).to_dict(), "epochs": EPOCHS}
    fakes.in_progress(
        runs, "stopped-early", epoch=4, updated_at=fakes.iso(0), resumable=True, **stopped
    )
    server = serve(runs, data_dir)

    page.goto(server.url + "/")
    page.wait_for_selector("#runs-table tr[data-name='cat-demo']")
    assert page.inner_text("tr[data-name='cat-demo'] .status") == "FINISHED"
    assert "resumable" in page.inner_text("tr[data-name='stopped-early'] .status").lower()
    page.screenshot(path=screenshots / "runs.png")

    page.click("a.run-link:text('cat-demo')")
    page.wait_for_selector("#cost polyline.series")
    assert points(page, "#cost polyline.series") == EPOCHS  # one point per epoch
    assert page.get_attribute("#cost svg.chart", "data-points") == str(EPOCHS)
    assert "adam (beta1 0.9" in page.inner_text("#parameters")
    assert "[object" not in page.inner_text("#parameters")
    box = page.locator("#cost rect.overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tooltip = page.locator("#cost .tooltip")
    assert tooltip.is_visible() and "epoch" in tooltip.inner_text()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 10)  # drag across: zoom in
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 20, steps=5)
    page.mouse.up()
    assert 5 <= points(page, "#cost polyline.series") < EPOCHS
    page.click("#cost button:text('show all')")
    assert points(page, "#cost polyline.series") == EPOCHS
    page.wait_for_selector("#layer1 .pictures img")
    wait_until(page, "() => [...document.images].every((i) => i.complete && i.naturalWidth)")
    assert page.locator("#layer1 .pictures img").count() == 7
    assert page.locator("#layer1 table.neurons tbody tr").count() == 7
    assert page.inner_text("#test-accuracy").endswith("%")
    page.mouse.move(0, 0)
    page.screenshot(path=screenshots / "run.png", full_page=True)

    # a run with a validation set that stops early: both curves, named, and why it stopped
    held_out = tmp_path / "held-out.json"
    held_out.write_text(
        json.dumps({**NETWORK, "validation": 0.2, "early_stopping": {"patience": 2}})
    )
    argv = ["train", "--engine", "direct", "--params", str(held_out), "--data", str(data_dir)]
    assert main([*argv, "--out", str(runs / "held-out"), "--run-id", "held-out", "--quiet"]) == 0
    metrics = json.loads((runs / "held-out" / "metrics.json").read_text())
    assert metrics["stopped_early"], "the validation cost was expected to rise within 30 epochs"
    page.goto(server.url + "/runs/held-out")
    page.wait_for_selector("#cost .legend")
    epochs = len(metrics["costs"])
    assert page.get_attribute("#cost svg.chart", "data-points") == f"{epochs},{epochs}"
    names = page.eval_on_selector_all("#cost .legend text", "ts => ts.map((t) => t.textContent)")
    assert names == ["cost", "validation cost"]
    stopped = f"{metrics['stopped_early']}; the model is epoch {metrics['model_epoch']}'s"
    assert page.inner_text("#stopped-early") == stopped

    with h5py.File(data_dir / TEST_FILE, "r") as h5:  # a non-cat: what the model says
        other = h5["test_set_x"][()][list(h5["test_set_y"][()]).index(0)]
    picture = tmp_path / "test-picture.png"
    Image.fromarray(other).resize((200, 200), Image.Resampling.BICUBIC).save(picture)
    capsys.readouterr()
    assert main(["predict", "--json", "--model", str(runs / "cat-demo"), str(picture)]) == 0
    (expected,) = json.loads(capsys.readouterr().out)

    page.goto(server.url + "/predict?run=cat-demo")
    page.wait_for_selector("#run option[value='cat-demo']", state="attached")
    page.set_input_files("#file", str(picture))
    page.wait_for_selector("#label")
    assert page.inner_text("#label") == expected["label"]
    assert float(page.get_attribute("#probability", "data-probability")) == expected["probability"]
    assert page.inner_text("#probability") == f"{expected['probability']:.4f}"
    wait_until(page, "() => document.getElementById('seen').naturalWidth === 64")
    page.screenshot(path=screenshots / "predict.png", full_page=True)


def test_a_local_run_watched_live(
    page: Any, serve: Any, tmp_path: Path, synthetic_dir: Path, screenshots: Path
) -> None:
    runs = tmp_path / "runs"
    params = tmp_path / "network.json"
    epochs = 40
    network = {  # full batch: one step, one Commit, per epoch
        **{k: v for k, v in NETWORK.items() if k not in ("batch_size", "optimizer")},
        "epochs": epochs,
        "learning_rate": 0.1,
        "neurons": {"layer1": 4, "layer2": 1},
    }
    params.write_text(json.dumps({**network, "neurons_per_task": 2}))
    server = serve(runs, synthetic_dir)
    train = [sys.executable, "-m", "snn.cli", "train", "--engine", "local", "--quiet"]
    out = ["--out", str(runs / "live-demo"), "--run-id", "live-demo"]
    training = subprocess.Popen(
        [*train, "--params", str(params), "--data", str(synthetic_dir), *out],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (runs / "live-demo" / "progress.json").is_file():
            assert training.poll() is None, training.stdout.read()
            assert time.monotonic() < deadline, "the run published no progress.json"
            time.sleep(0.2)

        page.goto(server.url + "/runs/live-demo/live")
        page.wait_for_selector("svg.machine g.node")
        page.wait_for_selector("#epoch")
        first = int(page.get_attribute("#epoch", "data-epoch"))
        seen: set[str] = set()
        photographed = False
        # At least three epochs, and states highlighted: progress.json is rewritten about once a
        # second, at any moment of an epoch, so one copy may catch none running.
        while (epoch := int(page.get_attribute("#epoch", "data-epoch"))) < first + 3 or not seen:
            assert training.poll() is None, "the run ended before it was seen advancing"
            assert time.monotonic() < deadline, f"stuck at epoch {epoch}"
            active = page.eval_on_selector_all(
                "svg.machine g.node.active", "nodes => nodes.map((n) => n.dataset.name)"
            )
            seen.update(active)
            page.wait_for_timeout(100)
        assert seen, "no state was ever highlighted"
        names = set(
            page.eval_on_selector_all("svg.machine g.node", "n => n.map((g) => g.dataset.name)")
        )
        assert seen <= names
        assert points(page, "#cost polyline.series") >= first + 3
        assert page.inner_text("#title .status") == "RUNNING"
        while training.poll() is None and not photographed:  # a picture with a longer curve
            epoch = int(page.get_attribute("#epoch", "data-epoch"))
            if page.locator("svg.machine g.node.active").count() and epoch >= epochs // 3:
                page.screenshot(path=screenshots / "live.png", full_page=True)
                photographed = True
            page.wait_for_timeout(100)

        assert training.wait(timeout=240) == 0, training.stdout.read()
        page.wait_for_selector("body[data-ended='true']", timeout=30_000)
        assert page.inner_text("#title .status") == "FINISHED"
        assert points(page, "#cost polyline.series") == epochs
        assert page.locator("svg.machine g.node.active").count() == 0
        counts = page.text_content("svg.machine g.node[data-name='Commit'] .counts")
        assert counts.startswith(f"×{epochs}")
        if not photographed:
            page.screenshot(path=screenshots / "live.png", full_page=True)
    finally:
        if training.poll() is None:
            training.terminate()
            training.wait(timeout=60)


IN_VIEW = """(table) => {
  // the right edge of its last column, and what of the page shows it: the viewport, narrowed
  // by every box around it that clips or scrolls what overflows it
  const right = Math.max(...[...table.querySelectorAll("tr > :last-child")]
    .map((cell) => cell.getBoundingClientRect().right));
  let shown = document.documentElement.clientWidth;
  for (let box = table.parentElement; box; box = box.parentElement) {
    if (getComputedStyle(box).overflowX === "visible") continue;
    shown = Math.min(shown, box.getBoundingClientRect().left + box.clientLeft + box.clientWidth);
  }
  return [right, shown];
}"""


def cut_tables(page: Any, selector: str) -> list[tuple[str, float, float]]:
    """The tables whose last column is not all in view (hidden past the window's edge or in a
    box that has to be scrolled to see it)."""
    cut = []
    for k, table in enumerate(page.query_selector_all(selector)):
        right, shown = table.evaluate(IN_VIEW)
        if right > shown + 0.5:
            cut.append((f"{selector} #{k}", right, shown))
    return cut


def test_every_table_fits_a_1280_pixel_window_and_the_best_model_is_offered(
    page: Any, serve: Any, tmp_path: Path, synthetic_dir: Path
) -> None:
    """At 1,280 px (the page fixture's width), the live page's States and Executions tables and
    a run's tables (executions, per neuron) show their last column (mean duration, history
    events, the gradients at the last epoch) without scrolling; the predict page offers the
    model with the best test accuracy, not the newest run's."""
    assert page.viewport_size["width"] == 1280
    runs = tmp_path / "runs"
    names = [f"run-20260131-100000-{k:04d}-a1b2c3d4e5f60718293a" for k in range(3)]
    executions = [
        {
            "name": n,
            "status": "SUCCEEDED",
            "history_events": 123_456,
            "first_epoch": 100 * k,
            "last_epoch": 100 * k + 99,
        }
        for k, n in enumerate(names)
    ]
    fakes.finished(runs, "better", test_accuracy=0.9, executions=executions)
    states = {
        name: {"entered": 123_456, "running": 1, "mean_ms": 12_345.678}
        for name in ("Init", "StepsLeft?", "ForwardLinear", "BackwardShards", "ContinueAsNew")
    }
    fakes.in_progress(runs, "going", executions=executions, states=states)
    fakes.finished(runs, "newest", test_accuracy=0.6)
    server = serve(runs, synthetic_dir)

    page.goto(server.url + "/runs/going/live")
    page.wait_for_selector("#states table")
    page.wait_for_selector("#executions table")
    assert page.locator("#executions tbody tr").count() == 4
    assert cut_tables(page, "#states table, #executions table") == []

    page.goto(server.url + "/runs/better")
    page.wait_for_selector("#layer2 table.neurons")
    assert page.locator("table.neurons").count() == 2
    assert cut_tables(page, "table") == []

    page.goto(server.url + "/predict")
    page.wait_for_selector("#run option[value='newest']", state="attached")
    assert page.eval_on_selector("#run", "s => s.value") == "better"
    page.goto(server.url + "/predict?run=newest")  # a run asked for is preselected
    page.wait_for_selector("#run option[value='newest']", state="attached")
    assert page.eval_on_selector("#run", "s => s.value") == "newest"
