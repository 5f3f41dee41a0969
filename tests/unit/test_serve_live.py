"""`snn serve` for a run as it goes: the event stream that follows progress.json, the state
machine drawn from its definition, and the command that starts the server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from snn.cli import main
from snn.serve import app as app_module
from snn.serve.app import create_app
from snn.serve.machine import graph, read_graph
from tests.unit import serve_fakes as fakes

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "statemachine" / "training.asl.json"


def events(client: TestClient, name: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a run's stream, read to its end."""
    found = []
    with client.stream("GET", f"/api/runs/{name}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((kind, json.loads(line.removeprefix("data: "))))
    return found


def test_a_finished_run_streams_once_and_ends(tmp_path: Path) -> None:
    fakes.finished(tmp_path, "done")
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")
    (progress, last), (end, _) = events(client, "done")
    assert (progress, end) == ("progress", "end")
    assert last["status"] == "finished" and last["costs"] == fakes.COSTS
    assert last["active"] == [] and last["costs_from"] == 0


def test_the_stream_follows_progress_json_until_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run advances by three epochs, then succeeds: the stream sends each new state once, the
    costs as they come (never one twice), then ends."""
    monkeypatch.setattr(app_module, "POLL_SECONDS", 0.02)
    folder = fakes.in_progress(tmp_path, "going", epoch=2)
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")

    def run() -> None:
        for epoch in (3, 4, 5):
            time.sleep(0.15)
            active = ["BackwardLayers", "BackwardShards", "Backward"][: epoch - 2]
            fakes.write_progress(folder, fakes.progress("going", epoch=epoch, active=active))
        time.sleep(0.15)
        # the results before the last progress, as a finished run folder holds them (it appears
        # whole): a poll between the two must not see a run that stopped
        (folder / "metrics.json").write_text(
            json.dumps({"run_id": "going", "costs": fakes.COSTS[:5]})
        )
        fakes.write_progress(folder, fakes.progress("going", status="succeeded", epoch=5))

    writer = threading.Thread(target=run)
    writer.start()
    try:
        stream = events(client, "going")
    finally:
        writer.join()
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}
    updates = [data for kind, data in stream if kind == "progress"]
    assert [u["epoch"] for u in updates[:4]] == [2, 3, 4, 5]
    assert updates[0]["active"] == ["ForwardLayers", "ForwardShards", "ForwardLinear"]
    assert updates[3]["active"] == ["BackwardLayers", "BackwardShards", "Backward"]
    assert updates[1]["states"]["ForwardLinear"] == {"entered": 10, "running": 1, "mean_ms": 8.25}
    costs: list[float] = []
    for u in updates:
        assert u["costs_from"] == len(costs) or u["costs_from"] == 0
        costs = costs[: u["costs_from"]] + u["costs"]
    assert costs == fakes.COSTS[:5]  # each cost once, in order
    assert updates[-1]["status"] == "finished" and updates[-1]["active"] == []


def test_a_run_killed_mid_way_ends_the_stream_as_interrupted(tmp_path: Path) -> None:
    fakes.in_progress(tmp_path, "killed", updated_at=fakes.iso(time.time() - 3600))
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")
    (_, last), (end, _) = events(client, "killed")
    assert end == "end" and last["status"] == "interrupted" and last["active"] == []


# --- the state machine ------------------------------------------------------------------------


def states_of(machine: dict[str, Any], parent: str = "") -> dict[str, dict[str, Any]]:
    found = {}
    for name, state in machine["States"].items():
        path = f"{parent}/{name}" if parent else name
        found[path] = state
        inner = state.get("ItemProcessor") or state.get("Iterator")
        for sub in [inner] if inner else state.get("Branches", []):
            found.update(states_of(sub, path))
    return found


def test_the_graph_is_the_definition() -> None:
    """Every state of the file is drawn once, in its container, and every transition (Next,
    Default, Choices, Catch) is an arrow: nothing is added, nothing left out."""
    definition = json.loads(DEFINITION.read_text())
    drawn = read_graph(DEFINITION)
    states = states_of(definition)
    nodes = {n["path"]: n for n in drawn["nodes"]}
    assert list(nodes) == list(states) or set(nodes) == set(states)
    assert len(drawn["nodes"]) == len(states)
    for path, node in nodes.items():
        assert node["type"] == states[path]["Type"]
        assert node["container"] == (states[path]["Type"] in ("Map", "Parallel"))
        if "/" in path:  # inside its container
            box = nodes[path.rsplit("/", 1)[0]]
            assert box["x"] < node["x"] and node["x"] + node["w"] < box["x"] + box["w"]
            assert box["y"] < node["y"] and node["y"] + node["h"] < box["y"] + box["h"]
        assert node["x"] >= 0 and node["x"] + node["w"] <= drawn["width"]
        assert node["y"] >= 0 and node["y"] + node["h"] <= drawn["height"]
    expected = []
    for path, state in states.items():
        parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        expected += [(path, parent + t) for t in targets if t]
    # one arrow per source and target: a Choice's rules that lead to one state share it
    assert sorted((e["from"], e["to"]) for e in drawn["edges"]) == sorted(set(expected))
    labels = {e["to"]: e["label"] for e in drawn["edges"] if e["from"] == "StepsLeft?"}
    assert labels["Evaluate"] == "stopped == true or step >= steps"
    assert drawn["start"] == definition["StartAt"]


def test_siblings_never_overlap() -> None:
    nodes = read_graph(DEFINITION)["nodes"]
    for a in nodes:
        for b in nodes:
            siblings = a["path"].rsplit("/", 1)[:-1] == b["path"].rsplit("/", 1)[:-1]
            if a is b or not siblings:
                continue
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, (a["path"], b["path"])


def test_the_loop_runs_back_and_the_catches_are_marked() -> None:
    edges = read_graph(DEFINITION)["edges"]
    kinds = {(e["from"], e["to"]): e["kind"] for e in edges}
    definition = json.loads(DEFINITION.read_text())
    loops = [pair for pair, kind in kinds.items() if kind == "loop"]
    assert len(loops) == 1  # the epoch loop: back to the Choice that decides
    assert definition["States"][loops[0][1]]["Type"] == "Choice"
    catches = [pair for pair, kind in kinds.items() if kind == "catch"]
    assert catches and all(definition["States"][a].get("Catch") for a, _ in catches)


def test_a_renamed_state_is_drawn_under_its_new_name() -> None:
    definition = json.loads(DEFINITION.read_text())
    text = json.dumps(definition).replace('"Loss"', '"CrossEntropy"')
    names = {n["name"] for n in graph(json.loads(text))["nodes"]}
    assert "CrossEntropy" in names and "Loss" not in names


def test_a_broken_definition_is_one_line(tmp_path: Path) -> None:
    from snn.serve.machine import DefinitionError

    bad = tmp_path / "bad.json"
    bad.write_text('{"StartAt": "A", "States": {"A": {"Next": "B"}}}')
    with pytest.raises(DefinitionError, match="not a state machine definition"):
        read_graph(bad)


# --- the command ---------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--runs", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"snn: error: cannot listen on 127.0.0.1:{port}: ") and "\n" not in err
    assert main(["serve", "--port", "70000"]) == 2
    assert "a port is 0 to 65535" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["serve", "--runs", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_the_server_says_where_it_listens_and_answers(tmp_path: Path, host: str) -> None:
    """On its own printed URL, whichever loopback address it was given."""
    fakes.finished(tmp_path / "runs", "done")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "snn.cli", "serve", "--runs", str(tmp_path / "runs")]
    server = subprocess.Popen(
        [*command, "--port", "0", "--host", host],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        first = server.stdout.readline()
        second = server.stdout.readline()
        assert first.startswith(f"snn serve: http://{host}:")
        assert second.strip() == f"listening on {host} only: no other machine can connect"
        url = first.split()[2]
        import urllib.error
        import urllib.request

        with urllib.request.urlopen(url + "api/runs", timeout=10) as response:
            assert json.loads(response.read())["runs"][0]["name"] == "done"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        other = urllib.request.Request(url + "api/runs", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(other, timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=10)
