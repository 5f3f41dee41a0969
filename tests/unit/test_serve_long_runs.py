"""`snn serve` over a long run (500,000 epochs): what one more live page costs in memory
(measured with tracemalloc, not time), the cap on live pages open at once, and the runs page that
counts the costs without parsing them."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import threading
import tracemalloc
import types
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from snn.serve import app as app_module
from snn.serve import runs as runs_module
from snn.serve.app import create_app
from tests.unit import serve_fakes as fakes

LONG = 500_000


def run_apart(coroutine: Any) -> Any:
    """asyncio.run(coroutine()) in a thread of its own: the test's thread may hold an event loop
    that another test (a browser's driver) left running."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coroutine())))
    thread.start()
    thread.join()
    assert result, "the coroutine raised (see the thread's exception above)"
    return result[0]


def long_costs(n: int = LONG) -> list[float]:
    return [0.7 * math.exp(-e / 90_000) + 1e-3 * math.sin(e) for e in range(n)]


def long_running(runs: Path, name: str = "long") -> list[float]:
    costs = long_costs()
    fakes.in_progress(runs, name, epoch=LONG, costs=costs, epochs=2 * LONG)
    return costs


class Request:
    """One GET to the application, driven by hand as a server drives it: its status, its body's
    size, when the first chunk came, and a client that leaves when told."""

    def __init__(self, app: Any, path: str) -> None:
        self.status: int | None = None
        self.body = b""
        self.first = asyncio.Event()
        self.gone = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.task = asyncio.ensure_future(self._run(app, scope))

    async def _run(self, app: Any, scope: dict[str, Any]) -> None:
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                if not self.first.is_set():
                    self.body += message.get("body", b"")  # the first chunk only
                if message.get("body") or not message.get("more_body"):
                    self.first.set()

        try:
            await app(scope, receive, send)
        finally:
            self.first.set()

    async def close(self) -> None:
        self.gone.set()
        await self.task


def first_event(request: Request) -> dict[str, Any]:
    kind, data = request.body.decode().split("\n")[:2]
    assert kind == "event: progress"
    return json.loads(data.removeprefix("data: "))


@pytest.mark.slow
def test_one_more_live_page_costs_little_memory_on_a_long_run(tmp_path: Path) -> None:
    """Ten more live pages on a run of 500,000 costs: each holds its position and last state,
    not a copy of the run (the whole run parsed is over 15 MB)."""
    costs = long_running(tmp_path)
    app = create_app(tmp_path)

    async def measure() -> tuple[int, int, list[Request]]:
        first = Request(app, "/api/runs/long/events")
        await first.first.wait()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        more = [Request(app, "/api/runs/long/events") for _ in range(10)]
        await asyncio.gather(*(r.first.wait() for r in more))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        app.state.server.stopping = True
        for request in [first, *more]:
            await request.close()
        return before, after, [first, *more]

    tracemalloc.start()
    try:
        before, after, requests = run_apart(measure)
    finally:
        tracemalloc.stop()
    assert all(r.status == 200 for r in requests)
    per_page = (after - before) / 10
    assert per_page < 512 * 1024, f"{per_page / 2**20:.1f} MB per live page"
    from snn.serve.views import LIVE_POINTS

    update = first_event(requests[-1])
    assert update["epoch"] == LONG and update["epochs"] == 2 * LONG
    step = update["costs_step"]
    assert len(update["costs"]) <= LIVE_POINTS + 1 and step == math.ceil(2 * LONG / LIVE_POINTS)
    assert update["costs"] == costs[::step]  # every step-th epoch's cost, exactly


def test_the_live_costs_are_thinned_on_the_epochs_grid_as_they_come(tmp_path: Path) -> None:
    """A run planned for 10,000 epochs sends every 5th epoch's cost: each once, on the grid,
    whatever the epochs done at each poll."""
    folder = fakes.in_progress(tmp_path, "r", epoch=7, costs=long_costs(7), epochs=10_000)
    server = app_module.Server(tmp_path, None, None)
    got: dict[int, float] = {}
    sent = 0
    for done in (7, 8, 13, 13, 31):
        update = fakes.progress("r", epoch=done, costs=long_costs(done), epochs=10_000)
        fakes.write_progress(folder, update)
        payload = server.live(server.runs.get("r"), sent)
        step = payload["costs_step"]
        for i, cost in enumerate(payload["costs"]):
            epoch = payload["costs_from"] + i * step
            assert epoch not in got
            got[epoch] = cost
        sent = payload["epoch"]
    assert step == 5
    assert got == {e: c for e, c in enumerate(long_costs(31)) if e % 5 == 0}


def test_live_pages_are_capped_with_a_clear_503(tmp_path: Path) -> None:
    fakes.in_progress(tmp_path, "going")
    app = create_app(tmp_path, max_streams=2)

    async def scenario() -> tuple[list[Request], Request, Request]:
        open_ = [Request(app, "/api/runs/going/events") for _ in range(2)]
        await asyncio.gather(*(r.first.wait() for r in open_))
        refused = Request(app, "/api/runs/going/events")
        await refused.task
        await open_[0].close()  # one page closes: its place is given back
        again = Request(app, "/api/runs/going/events")
        await again.first.wait()
        app.state.server.stopping = True
        for request in (open_[1], again):
            await request.close()
        return open_, refused, again

    open_, refused, again = run_apart(scenario)
    assert [r.status for r in open_] == [200, 200]
    assert refused.status == 503
    message = json.loads(refused.body)["error"]
    assert message.startswith("2 live pages are open, the most this server follows at once")
    assert again.status == 200 and first_event(again)["name"] == "going"


@pytest.mark.slow
def test_the_runs_page_counts_the_costs_without_parsing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    costs = long_running(tmp_path, "going")
    fakes.finished(tmp_path, "done", costs=[*costs[:-1], float("nan")])
    size = sum(f.stat().st_size for f in tmp_path.rglob("*.json"))
    parsed: list[int] = []

    def loads(data: Any, **kwargs: Any) -> Any:
        parsed.append(len(data))
        return json.loads(data, **kwargs)

    monkeypatch.setattr(runs_module, "json", types.SimpleNamespace(loads=loads))
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")
    rows = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert (rows["going"]["epoch"], rows["going"]["final_cost"]) == (LONG, costs[-1])
    assert (rows["done"]["epoch"], rows["done"]["final_cost"]) == (LONG, None)
    assert size > 2 * LONG * 10
    assert sum(parsed) < size / 100, f"{sum(parsed):,} of {size:,} bytes parsed"
    parsed.clear()
    client.get("/api/runs")  # the same files again: nothing read anew
    assert parsed == []


@pytest.mark.parametrize(
    "text",
    [
        '{"costs": [0.5, NaN, 0.25], "epochs": 3}',
        '{"costs": [], "validation_costs": [1e-3,\n 2E+1, null]}',
        '{"error": "\\"costs\\": [1, 2]", "costs": [1, -Infinity]}',
        '{"nested": {"costs": [1, 2]}, "run_id": "x"}',
        '{"costs": ["a", "b"]}',
        '{"costs": [[1], 2]}',
        '{"costs": [1, 2], "costs": [3]}',
    ],
)
def test_a_file_read_without_its_costs_says_what_the_whole_file_says(text: str) -> None:
    from snn.serve.runs import Skipped, parse_json

    def same(a: Any, b: Any) -> bool:  # null and NaN alike: both a cost that was not finite
        return a == b or all(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b))

    brief = parse_json(text.encode(), "x.json", whole=False)
    whole = parse_json(text.encode(), "x.json", whole=True)
    assert brief.keys() == whole.keys()
    for key, value in whole.items():
        if isinstance(brief[key], Skipped):
            assert brief[key].count == len(value)
            last = float(value[-1]) if len(value) else None
            assert same(brief[key].last, last)
        elif key in ("costs", "validation_costs") and not isinstance(value, list):
            assert all(same(float(a), float(b)) for a, b in zip(value, brief[key], strict=True))
        else:
            assert brief[key] == value


def test_a_new_version_of_a_file_is_parsed_once_for_every_reader_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight live pages poll a run whose progress.json was just rewritten: one of them parses
    it, the others wait for that copy (eight copies at once is what a long run cannot afford)."""
    import threading

    from snn.serve.runs import Runs

    fakes.in_progress(tmp_path, "going", epoch=20_000, costs=long_costs(20_000), epochs=40_000)
    parses: list[int] = []

    def loads(data: Any, **kwargs: Any) -> Any:
        parses.append(len(data))
        return json.loads(data, **kwargs)

    monkeypatch.setattr(runs_module, "json", types.SimpleNamespace(loads=loads))
    runs, start = Runs(tmp_path), threading.Barrier(8)
    got: list[Any] = []

    def poll() -> None:
        start.wait()
        got.append(runs.get("going"))

    pollers = [threading.Thread(target=poll) for _ in range(8)]
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    assert len(parses) == 1
    assert len({id(run.progress) for run in got}) == 1  # one copy, shared
    assert got[0].epoch == 20_000
