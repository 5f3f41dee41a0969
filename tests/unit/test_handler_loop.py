"""The Lambda handlers, called in the order of the state machine by a plain loop (no execution),
give exactly the numbers of the direct engine: the same costs and final weights, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import keys
from snn import network as nn
from snn.engines import direct
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.stores import costs_in_order
from tests.helpers import ROOT, handler, run_events, spec, start_run, three_layers


def train_through_handlers(st: Any, p: Parameters, data_dir: Path, run_id: str):
    """Costs (from the run record) and final weights (model.npz in S3) of a run whose every
    stage is a handler invocation."""
    plan = start_run(st, run_id, p, data_dir)
    run_events(plan)
    handler("evaluate")({"run_id": run_id}, None)
    record = st.runs.get(run_id)
    assert record["status"] == "SUCCEEDED" and record["committed_epoch"] == p.epochs
    model = read_weights(st.store.get_bytes(keys.model_key(run_id)))
    return costs_in_order(record), model


def assert_same_weights(actual: list, expected: list) -> None:
    assert len(actual) == len(expected)
    for (W, b), (W_, b_) in zip(actual, expected, strict=True):
        assert W.dtype == W_.dtype and W.shape == W_.shape and b.shape == b_.shape
        assert W.tobytes() == W_.tobytes() and b.tobytes() == b_.tobytes()


@pytest.mark.slow
def test_seed_parameters_on_the_real_data(embedded_stack: Any, data_dir: Path) -> None:
    p = Parameters.load(ROOT / "parameters.json")
    assert (p.epochs, p.neurons, p.neurons_per_task) == (10, (3, 1), 1)
    costs, weights = train_through_handlers(embedded_stack.stack, p, data_dir, "seed")
    reference = direct.train(spec(p, data_dir, "seed"))
    assert len(costs) == 10
    assert costs == reference.costs  # == on floats: bit for bit
    assert_same_weights(weights, reference.weights)
    assert costs[-1] < costs[0]  # it does learn


def test_three_layers_in_shards_of_two(embedded_stack: Any, synthetic_dir: Path) -> None:
    p = three_layers(neurons_per_task=2, epochs=3)
    assert [len(p.shards(layer)) for layer in (1, 2, 3)] == [3, 2, 1]
    costs, weights = train_through_handlers(embedded_stack.stack, p, synthetic_dir, "three")
    reference = direct.train(spec(p, synthetic_dir, "three"))
    assert costs == reference.costs
    assert_same_weights(weights, reference.weights)
    assert [W.shape for W, _ in weights] == [(5, 48), (3, 5), (1, 3)]
    initial = nn.initialize(p.layer_dims(48), p.seed, p.initialization)
    assert all(not np.array_equal(W, W0) for (W, _), (W0, _) in zip(weights, initial, strict=True))
