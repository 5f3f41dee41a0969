"""Property-based tests of every handler's event validation: whatever an event holds, a handler
either accepts it or refuses it with EventError (never another exception) and writes nothing;
and a run id that is accepted can never reach outside its run's keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn import keys
from snn.engines.stack import create_run
from snn.errors import EventError
from snn.handlers import read_event
from tests.helpers import Snapshot, epoch_events, handler, init_event, network

pytestmark = pytest.mark.xdist_group("embedded")

# Any JSON value, with the troublesome ones made likely.
TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "..", "../x", "r/x", "r\n", "a b", "r", "x" * 61, "runs/r", "\x00"]),
)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63),
        st.floats(allow_nan=False),
        TEXT,
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(TEXT, JSON, max_size=6) | JSON)
def test_read_event_accepts_only_what_it_can_vouch_for(event: Any) -> None:
    try:
        fields = read_event(event, "run_id", "epoch", optional=("layer", "shard"))
    except EventError:
        return
    assert keys.RUN_ID_PATTERN.fullmatch(fields["run_id"])
    assert "/" not in fields["run_id"] and ".." not in fields["run_id"]
    for name in ("epoch", "layer", "shard"):
        if name in fields:
            assert type(fields[name]) is int and fields[name] >= 0


@given(TEXT, st.integers(-5, 10**10), st.integers(-5, 10**4), st.integers(-5, 10**6))
def test_a_key_is_made_of_validated_parts_or_not_at_all(
    run_id: str, step: int, layer: int, shard: int
) -> None:
    try:
        key = keys.matrix_key(run_id, step, "W", layer, shard)
    except EventError:
        return
    assert key.startswith(f"scratch/{run_id}/step/")
    assert key.count("/") == 6 and ".." not in key and "\n" not in key


# --- every handler, on a live (emulated) run ---------------------------------------------------


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A run at epoch 0 on the embedded stack, with one valid event per handler."""
    from snn.data import synthetic_images, write_h5_pair
    from snn.engines.local import EmbeddedStack
    from tests.helpers import ROOT

    data = write_h5_pair(tmp_path_factory.mktemp("data"), *synthetic_images())
    with EmbeddedStack(ROOT / "template.yaml") as embedded:
        stack = embedded.stack
        # ContinueAsNew starts executions: of a state machine that does nothing, here.
        noop = stack.sfn.create_state_machine(
            name="noop",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/noop",
        )["stateMachineArn"]
        execution_input = create_run(stack, "r", network([2, 1]), Path(data))
        init = init_event({**execution_input, "execution_name": "r"})
        plan = handler("init")(init, None)
        valid: dict[str, Any] = {"init": init}
        for stage, event in epoch_events(plan, 0):
            valid.setdefault(stage, event)
        valid["evaluate"] = {"run_id": "r"}
        valid["record_failure"] = {"run_id": "r", "execution_name": "r", "error": "E", "cause": "C"}
        valid["continue_as_new"] = {
            "run_id": "r",
            "epoch": 0,
            "execution_name": "r",
            "state_machine_arn": noop,
            "execution_input": execution_input,
        }
        valid["predict"] = {"run_id": "r", "image_base64": ""}
        yield stack, valid


MUTATIONS = st.one_of(
    st.tuples(st.just("set"), TEXT, JSON),
    st.tuples(st.just("drop"), TEXT, st.none()),
)


def mutate(event: dict[str, Any], changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    out = json.loads(json.dumps(event))
    names = sorted(out)
    for how, name, value in changes:
        target = names[hash(name) % len(names)] if names and name not in out else name
        if how == "drop":
            out.pop(target, None)
        else:
            out[target] = value
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "init",
        "forward_linear",
        "activation",
        "loss",
        "backward",
        "update",
        "commit",
        "evaluate",
        "continue_as_new",
        "predict",
        "record_failure",  # last: once it is accepted, the run has failed
    ],
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_a_handler_refuses_a_bad_event_with_event_error_and_writes_nothing(
    live_run: Any, name: str, changes: list[tuple[str, str, Any]]
) -> None:
    stack, valid = live_run
    event = mutate(valid[name], changes)
    if event == valid[name]:
        return
    snap = Snapshot(stack)
    before = snap()
    try:
        handler(name)(event, None)
    except EventError:
        assert snap() == before, f"{name} refused {event} but wrote something"
        return
    # Accepted: the mutation left a valid event (another shard, an extra field): nothing to
    # check but that no other exception escaped.
