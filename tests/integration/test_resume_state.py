"""The resume state is derived from what the stages read: `stages.state_keys` lists every object
a run reads from its committed step on, and the local engine's resume manifest is that list.
Here a run of every examples/ network on the local engine records each object the stages read
(an S3 GetObject, or a read a warm function answers from its memory, which a new process makes
again) and each one they write; at every point where a resume state can be taken (the run's
start, and each commit), every object read after it is in the list at that point, or was written
after it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snn import keys
from snn.data import synthetic_images, write_h5_pair
from snn.engines import local
from snn.engines.local.lambda_service import LambdaService
from snn.parameters import Parameters
from snn.stages import state_keys
from snn.stages.lifecycle import DATA_FIELDS
from snn.stores import DynamoRunTable, S3Store
from tests.helpers import ROOT, early_stopping_data, early_stopping_network, spec

pytestmark = pytest.mark.xdist_group("embedded")

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.json"))
EPOCHS = 3


@dataclass
class Recorder:
    """What the stages read and write, and when each step was committed, in one order."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_stage: threading.local = field(default_factory=threading.local)

    def note(self, kind: str, what: Any) -> None:
        if kind == "commit" or getattr(self.in_stage, "on", False):
            with self.lock:
                self.events.append((kind, what))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Every read and write of the stages (the handlers the in-process Lambda service runs; not
    the engine's own reads), and every commit, recorded in order."""
    rec = Recorder()
    invoke, get_bytes, get_cached, get_many, put_bytes, commit = (
        LambdaService.invoke,
        S3Store.get_bytes,
        S3Store.get_cached,
        S3Store.get_many,
        S3Store.put_bytes,
        DynamoRunTable.commit,
    )

    def in_stage(self: LambdaService, name: str, event: Any) -> Any:
        rec.in_stage.on = True
        try:
            return invoke(self, name, event)
        finally:
            rec.in_stage.on = False

    def reading(self: S3Store, key: str, *args: Any, **kwargs: Any) -> Any:
        rec.note("get", key)
        return get_bytes(self, key, *args, **kwargs)

    def reading_cached(self: S3Store, key: str) -> Any:
        rec.note("get", key)  # a new process reads it again
        return get_cached(self, key)

    def reading_many(self: S3Store, many: list[str]) -> Any:
        for key in many:  # read in other threads, which are the stage's
            rec.note("get", key)
        return get_many(self, many)

    def writing(self: S3Store, key: str, data: bytes) -> None:
        put_bytes(self, key, data)
        rec.note("put", key)

    def committing(self: DynamoRunTable, run_id: str, step: int, fields: Any = None) -> int:
        done = commit(self, run_id, step, fields)
        rec.note("commit", self.get(run_id))
        return done

    monkeypatch.setattr(LambdaService, "invoke", in_stage)
    monkeypatch.setattr(S3Store, "get_bytes", reading)
    monkeypatch.setattr(S3Store, "get_cached", reading_cached)
    monkeypatch.setattr(S3Store, "get_many", reading_many)
    monkeypatch.setattr(S3Store, "put_bytes", writing)
    monkeypatch.setattr(DynamoRunTable, "commit", committing)
    S3Store.forget_cached()
    return rec


def unlisted_reads(rec: Recorder, run_id: str, event: dict[str, str]) -> dict[int, set[str]]:
    """For each point a resume state can be taken at (the run's start: step 0; each commit: its
    committed step), the objects read after it that are neither in `state_keys` there nor
    written after it (before they were read)."""
    commits = [record for kind, record in rec.events if kind == "commit"]
    assert commits, "no step was committed"
    last = commits[-1]
    start = {**last, "committed_step": 0, "committed_epoch": 0, "best_epoch": None}
    points = [(0, start)]
    points += [(i + 1, r) for i, (kind, r) in enumerate(rec.events) if kind == "commit"]
    out: dict[int, set[str]] = {}
    for at, record in points:
        listed = state_keys(run_id, record, event)
        written: set[str] = set()
        unlisted = set()
        for kind, what in rec.events[at:]:
            if kind == "put":
                written.add(what)
            elif kind == "get" and what not in listed and what not in written:
                unlisted.add(what)
        out[int(record["committed_step"])] = unlisted
    return out


def example(name: str) -> Parameters:
    raw = json.loads((ROOT / "examples" / name).read_text())
    return Parameters.from_dict({**raw, "epochs": EPOCHS})


def check_run(rec: Recorder, p: Parameters, data: Path) -> list[dict[str, Any]]:
    """Train on the local engine, recording; every read is listed. The commits' records."""
    local.train(spec(p, data, "state"), ROOT / "template.yaml")
    commits = [r for kind, r in rec.events if kind == "commit"]
    record = commits[-1]
    event = {
        "run_id": "state",
        "parameters_key": keys.parameters_key("state"),
        **{k: record[k] for k in DATA_FIELDS if k in record},
    }
    reads = {what for kind, what in rec.events if kind == "get"}
    assert keys.model_key("state") not in reads  # Evaluate writes it; nothing reads it
    assert event["parameters_key"] in reads and keys.data_key("state", "test", "x") in reads
    assert {at: found for at, found in unlisted_reads(rec, "state", event).items() if found} == {}
    return commits


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_object_read_after_a_resume_point_is_in_the_resume_state(
    name: str, recorder: Recorder, tmp_path: Path
) -> None:
    data = write_h5_pair(tmp_path / "data", *synthetic_images(m_train=100, m_test=20))
    commits = check_run(recorder, example(name), data)
    assert len(commits) == EPOCHS * int(commits[0]["batches"])


@pytest.mark.slow
def test_the_best_epochs_weights_are_in_the_resume_state_until_evaluate_reads_them(
    recorder: Recorder, tmp_path: Path
) -> None:
    """An early-stopping run whose best epoch is its first: Evaluate reads the weights entering
    the step after it, long after the steps that wrote them; the list holds them from then on."""
    p = early_stopping_network()
    commits = check_run(recorder, p, early_stopping_data(tmp_path / "data"))
    batches = int(commits[0]["batches"])
    assert commits[-1]["best_epoch"] == 0 and commits[-1]["stopped"]
    assert commits[-1]["committed_epoch"] == 4  # three epochs past the best
    best_weights = keys.matrix_key("state", batches, "W", 1, 0)  # entering epoch 1
    last_commit = max(i for i, (kind, _) in enumerate(recorder.events) if kind == "commit")
    assert ("get", best_weights) in recorder.events[last_commit:]  # Evaluate's
