"""`stages.state_keys`, the list of what a run reads from its committed step on: what it holds,
and, on the direct engine (the same stages on in-memory stores), that every object the stages
read after a commit is in the list at that commit or was written after it. The same check on
the local engine's S3 reads, for every examples/ network, is in
tests/integration/test_resume_state.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snn import keys
from snn.engines import direct
from snn.stages import state_keys
from snn.stores import MemoryRunTable, MemoryStore
from tests.helpers import early_stopping_data, network, spec

EVENT = {
    "run_id": "r",
    "parameters_key": keys.parameters_key("r"),
    "train_key": "uploads/" + "a" * 64 + "/train_catvnoncat.h5",
    "test_key": "uploads/" + "b" * 64 + "/test_catvnoncat.h5",
}


def record(p: Any, step: int, batches: int = 1, best: int | None = None) -> dict[str, Any]:
    return {
        "parameters": p.to_json(),
        "committed_step": step,
        "committed_epoch": step // batches,
        "batches": batches,
        "examples": 40,
        "best_epoch": best,
    }


def test_the_list_of_a_plain_run() -> None:
    p = network([3, 1], epochs=4, neurons_per_task=2)
    got = state_keys("r", record(p, 2), EVENT)
    weights = {keys.matrix_key("r", 2, n, 1, s) for n in "Wb" for s in (0, 1)}
    weights |= {keys.matrix_key("r", 2, n, 2, 0) for n in "Wb"}
    stats = {keys.neuron_stats_key("r", e, 1, s) for e in (0, 1) for s in (0, 1)}
    stats |= {keys.neuron_stats_key("r", e, 2, 0) for e in (0, 1)}
    data = {keys.data_key("r", split, part) for split in ("train", "test") for part in "xy"}
    inputs = {EVENT["parameters_key"], EVENT["train_key"], EVENT["test_key"]}
    assert got == inputs | data | weights | stats


def test_the_optimizers_state_from_the_first_step_on() -> None:
    p = network([2, 1], epochs=4, optimizer={"name": "adam"})
    at_start = state_keys("r", record(p, 0), EVENT)
    later = state_keys("r", record(p, 3), EVENT)
    assert not any("/vW/" in k or "/sW/" in k for k in at_start)  # none before the first step
    assert {keys.matrix_key("r", 3, n, 1, 0) for n in ("vW", "vb", "sW", "sb")} <= later


def test_the_best_epochs_weights_only_with_early_stopping() -> None:
    watched = network([2, 1], epochs=9, validation=0.25, batch_size=8)
    stopping = network(
        [2, 1], epochs=9, validation=0.25, batch_size=8, early_stopping={"patience": 2}
    )
    # epoch 1's: the weights entering epoch 2, step 6 at three batches an epoch
    best = {keys.matrix_key("r", 6, n, layer, 0) for n in "Wb" for layer in (1, 2)}
    assert not best & state_keys("r", record(watched, 9, batches=3, best=1), EVENT)
    assert best <= state_keys("r", record(stopping, 9, batches=3, best=1), EVENT)
    valid = {keys.data_key("r", "valid", part) for part in "xy"}
    assert valid <= state_keys("r", record(watched, 9, batches=3), EVENT)


class RecordingStore(MemoryStore):
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def get(self, key: str) -> Any:
        self.events.append(("get", key))
        return super().get(key)

    get_cached = get

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        self.events.append(("get", key))
        return super().get_bytes(key, max_bytes)

    def put(self, key: str, array: Any) -> None:
        super().put(key, array)
        self.events.append(("put", key))

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.events.append(("put", key))


class RecordingTable(MemoryRunTable):
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def commit(self, run_id: str, step: int, fields: dict[str, Any] | None = None) -> int:
        done = super().commit(run_id, step, fields)
        self.events.append(("commit", self.get(run_id)))
        return done


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 16, "optimizer": {"name": "adam"}},
        {"optimizer": {"name": "momentum"}, "l2": 0.5},
        {"batch_size": 16, "optimizer": {"name": "rmsprop"}, "early_stopping": {"patience": 3}},
    ],
    ids=["adam-mini-batches", "momentum-l2", "rmsprop-early-stopping"],
)
def test_every_read_after_a_commit_is_listed_there(
    fields: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    monkeypatch.setattr(direct, "MemoryStore", lambda: RecordingStore(events))
    monkeypatch.setattr(direct, "MemoryRunTable", lambda: RecordingTable(events))
    p = network(
        [4, 1],
        epochs=6,
        learning_rate=0.01,
        initialization="xavier",
        validation=0.25,
        shuffle_seed=7,
        **fields,
    )
    direct.train(spec(p, early_stopping_data(tmp_path / "data")))
    commits = [(i + 1, r) for i, (kind, r) in enumerate(events) if kind == "commit"]
    assert len(commits) >= 4
    inputs = {"run_id": "r", "parameters_key": keys.parameters_key("r")}  # read by AWS's Init
    for at, rec in commits:
        listed = state_keys("r", rec, inputs)
        written: set[str] = set()
        for kind, key in events[at:]:
            if kind == "put":
                written.add(key)
            elif kind == "get":
                assert key in listed or key in written, (rec["committed_step"], key)
