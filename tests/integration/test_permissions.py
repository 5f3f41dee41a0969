"""Least privilege, checked both ways by the local engine's own IAM enforcement
(snn.engines.local.iam): template.yaml's policies as deployed, every request of every function
and of the state machine evaluated as IAM evaluates it.

The runs: every file in examples/ (every optimizer, mini-batches, a validation set, early
stopping; few epochs, on a small synthetic set), a run on an .npz and one on a folder of
pictures, a run handed over to a second execution (ContinueAsNew), a run that Init fails
(RecordFailure through the state machine's Catch), two predictions, a stopped execution
(ExecutionFailed, as the execution-status rule invokes it) and a retried hand-over.

- Every request is allowed: no run is refused anything.
- Every (action, resource) a policy grants is used by some request of its principal.
- Removing any one action from any principal's policy in a copy of template.yaml refuses some
  request the runs made, with an AccessDenied naming the principal and the action (a sample of
  such copies is run for real in test_iam.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from snn import epoch, keys
from snn.engines import local
from snn.engines.local import EmbeddedStack, iam
from snn.engines.local.embedded import EMULATOR_ENV, status_change_event
from snn.engines.stack import create_run, start
from snn.parameters import Parameters
from snn.template import Template
from tests.helpers import PRINCIPALS, ROOT, grants, network, without

pytestmark = pytest.mark.xdist_group("embedded")

TEMPLATE = ROOT / "template.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def parameters(epochs: int) -> Parameters:
    """3-1 with two neurons per task: layer 1 has two shards."""
    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 3, "layer2": 1},
            "learning_rate": 0.05,
            "neurons_per_task": 2,
        }
    )


def example(path: Path) -> Parameters:
    """An examples/ file, shortened: two epochs (three, with patience one, for early
    stopping)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["epochs"] = 2
    if "early_stopping" in raw:
        raw["epochs"], raw["early_stopping"] = 3, {"patience": 1}
    return Parameters.from_dict(raw)


def synthetic_data(folder: Path) -> Path:
    """160 training examples: two mini-batches of 64 beside a validation set of a fifth."""
    from snn.data import synthetic_images, write_h5_pair

    return write_h5_pair(folder, *synthetic_images(m_train=160))


def npz_data(path: Path) -> Path:
    rng = np.random.default_rng(4)
    y = np.arange(60) % 2
    np.savez(path, train_x=rng.normal(size=(60, 6)) + y[:, None], train_y=y)
    return path


def pictures(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(5)
    for split, count in (("train", 12), ("test", 4)):
        for label in ("cat", "not-a-cat"):
            target = folder / split / label
            target.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(target / f"{k:02d}.png")
    return folder


def bad_labels(data: Path, folder: Path) -> Path:
    """`data` with one training label that is not 0 or 1: Init refuses it."""
    folder.mkdir()
    for name in ("train_catvnoncat.h5", "test_catvnoncat.h5"):
        (folder / name).write_bytes((data / name).read_bytes())
    with h5py.File(folder / "train_catvnoncat.h5", "r+") as h5:
        labels = h5["train_set_y"][()]
        labels[0] = 7
        del h5["train_set_y"]
        h5["train_set_y"] = labels
    return folder


class StartedBefore:
    """AWS's answers to a retried hand-over whose first attempt started the next execution,
    which has ended since: StartExecution says ExecutionAlreadyExists, DescribeExecution shows
    the execution and its input. For the executions named in `inputs` only; every other request
    goes to the emulator."""

    def __init__(self) -> None:
        self.inputs: dict[str, str] = {}

    def install(self, session: Any) -> None:
        events = session.events
        events.register("before-call.stepfunctions.StartExecution", self._start, "perm-start")
        events.register("before-call.stepfunctions.DescribeExecution", self._describe, "perm-desc")

    def _start(self, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        if body.get("name") not in self.inputs:
            return None
        from botocore.awsrequest import AWSResponse

        error = {"Code": "ExecutionAlreadyExists", "Message": "Execution Already Exists"}
        return AWSResponse("", 400, {}, None), {"Error": error, "ResponseMetadata": {}}

    def _describe(self, params: dict[str, Any], **_: Any) -> Any:
        arn = json.loads(params["body"])["executionArn"]
        name = arn.rsplit(":", 1)[-1]
        if name not in self.inputs:
            return None
        from botocore.awsrequest import AWSResponse

        machine = arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
        described = {
            "executionArn": arn,
            "stateMachineArn": machine,
            "name": name,
            "status": "SUCCEEDED",
            "input": self.inputs[name],
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }
        return AWSResponse("", 200, {}, None), described


def finish(embedded: EmbeddedStack, run_id: str, timeout: float = 180.0) -> str:
    """Wait until the run has ended and no execution of the stack runs; its final status."""
    st = embedded.stack
    assert st is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = st.sfn.list_executions(
            stateMachineArn=st.state_machine_arn, statusFilter="RUNNING"
        )["executions"]
        record = st.runs.get(run_id)
        if not running and record and record["status"] != "RUNNING":
            return str(record["status"])
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end within {timeout} s")


def ended(embedded: EmbeddedStack, arn: str, timeout: float = 180.0) -> str:
    """Wait until the execution has ended; its status."""
    st = embedded.stack
    assert st is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = str(st.sfn.describe_execution(executionArn=arn)["status"])
        if status != "RUNNING":
            return status
        time.sleep(0.2)
    raise AssertionError(f"{arn} did not end within {timeout} s")


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def invoke(embedded: EmbeddedStack, function: str, event: dict[str, Any]) -> Any:
    assert embedded.lambdas is not None
    payload, error = embedded.lambdas.invoke(function, event)
    assert error is None, payload
    return json.loads(payload)


class Recorded:
    """What the runs asked for: the engine's decisions, and the policies they were made by."""

    def __init__(self, enforcer: iam.Enforcer) -> None:
        self.policies = enforcer.policies
        self.decisions = dict(enforcer.decisions)
        self.message = enforcer.message

    def requests(self, principal: str) -> list[iam.Request]:
        return [r for (p, r), ok in self.decisions.items() if p == principal and ok]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    folder = tmp_path_factory.mktemp("perm")
    data = synthetic_data(folder / "data")
    p = parameters(epochs=4)
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stack:
        for k, v in EMULATOR_ENV.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        # two steps (full batch: epochs) per execution: the run is handed over (ContinueAsNew)
        budget = epoch.EXECUTION_FIXED_EVENTS + 2 * epoch.events_per_step(p)
        mp.setattr(epoch, "EXECUTION_EVENT_BUDGET", budget)
        started_before = StartedBefore()
        local.SESSION_HOOKS.append(started_before.install)
        stack.callback(local.SESSION_HOOKS.remove, started_before.install)
        embedded = stack.enter_context(EmbeddedStack(TEMPLATE))
        st, enforcer = embedded.stack, embedded.iam
        assert st is not None and enforcer is not None

        # a run of 4 epochs in two executions: every stage, Commit deleting old epochs
        event = create_run(st, "perm", p, data)
        start(st, event, name="perm")
        assert finish(embedded, "perm") == "SUCCEEDED"
        executions = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
        assert len(executions) == 2, executions

        # every example (mini-batches, validation, early stopping, each optimizer), an .npz
        # and a folder of pictures
        runs = [(f"ex-{path.stem}", example(path), data) for path in EXAMPLES]
        runs.append(("npz", network([3, 1], batch_size=16), npz_data(folder / "v.npz")))
        runs.append(("pics", network([3, 1], image_size=8), pictures(folder / "pics")))
        for run_id, q, source in runs:
            start(st, create_run(st, run_id, q, source), name=run_id)
            assert finish(embedded, run_id) == "SUCCEEDED", st.runs.get(run_id)

        # a run that Init fails: the state machine's Catch invokes RecordFailure (which finds
        # no run record: the execution fails)
        failing = create_run(st, "perm-failed", p, bad_labels(data, folder / "bad"))
        arn = start(st, failing, name="perm-failed")
        assert ended(embedded, arn) == "FAILED"
        assert embedded.lambdas is not None
        assert embedded.lambdas.invocations["RecordFailureFunction"] == 1

        # RecordFailure, on a run that a stage failed in
        failing = create_run(st, "perm-caught", p, data)
        invoke(embedded, "InitFunction", {"input": failing, "execution_name": "perm-caught"})
        failure = {"run_id": "perm-caught", "error": "States.TaskFailed", "cause": "a test"}
        failure["execution_name"] = "perm-caught"
        invoke(embedded, "RecordFailureFunction", failure)
        assert st.runs.get("perm-caught")["status"] == "FAILED"

        # Predict: a picture in the event, and one uploaded to the bucket
        picture = png()
        key = f"uploads/{hashlib.sha256(picture).hexdigest()}/cat.png"
        st.s3.put_object(Bucket=st.bucket, Key=key, Body=picture)
        invoke(embedded, "PredictFunction", {"run_id": "perm", "image_key": key})
        encoded = base64.b64encode(picture).decode()
        invoke(embedded, "PredictFunction", {"run_id": "perm", "image_base64": encoded})

        # ExecutionFailed, as the execution-status rule invokes it for a stopped execution
        stopped = create_run(st, "perm-stopped", p, data)
        invoke(embedded, "InitFunction", {"input": stopped, "execution_name": "perm-stopped"})
        description = {
            "executionArn": st.execution_arn("perm-stopped"),
            "name": "perm-stopped",
            "status": "ABORTED",
            "input": json.dumps(stopped),
        }
        invoke(
            embedded,
            embedded.template.execution_status_target(),
            status_change_event(st, description),
        )
        assert st.runs.get("perm-stopped")["status"] == "FAILED"

        # ContinueAsNew retried after its first attempt started the next execution, which has
        # ended since: StartExecution answers ExecutionAlreadyExists, and the function looks
        # at that execution (DescribeExecution) before it takes it as its own
        handed = create_run(st, "perm-handed", p, data)
        invoke(embedded, "InitFunction", {"input": handed, "execution_name": "perm-handed"})
        successor = keys.execution_name("perm-handed", 0)
        started_before.inputs[successor] = json.dumps(handed, sort_keys=True)
        continued = {
            "run_id": "perm-handed",
            "epoch": 0,
            "batch": 0,
            "execution_name": "perm-handed",
            "state_machine_arn": st.state_machine_arn,
            "execution_input": handed,
        }
        assert invoke(embedded, "ContinueAsNewFunction", continued) == {"execution_name": successor}
        assert st.runs.get("perm-handed")["execution"] == successor

        yield Recorded(enforcer)


@pytest.mark.slow
def test_every_request_is_allowed(recorded: Recorded) -> None:
    refused = [f"{p}: {r}" for (p, r), ok in recorded.decisions.items() if not ok]
    assert not refused, refused


@pytest.mark.slow
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_grant_is_used(recorded: Recorded, principal: str) -> None:
    made = recorded.requests(principal)
    assert made, f"{principal} made no request in the test runs"
    unused = []
    for statement in recorded.policies.statements[principal]:
        for action in iam._as_list(statement["Action"]):
            for resource in iam._as_list(statement["Resource"]):
                narrow = iam.Compiled({**statement, "Action": action, "Resource": resource}, "")
                if not any(narrow.matches(r) for r in made):
                    unused.append(f"{action} on {resource}")
    assert not unused, f"{principal}: granted but never used: {unused}"


# --- one action less ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("principal", "index", "action"), grants())
def test_removing_any_action_refuses_a_request(
    recorded: Recorded, tmp_path: Path, principal: str, index: int, action: str
) -> None:
    """The engine's evaluation, on the policies of a copy of template.yaml one action short,
    of every request the runs made: some are refused, all of that action."""
    resolver = recorded.policies.resolver
    assert resolver is not None
    reduced = iam.Policies.from_template(
        Template.load(without(tmp_path, principal, index, action)),
        resolver.refs,
        resolver.attributes,
    )
    compiled = reduced.compiled[principal]
    refused = [r for r in recorded.requests(principal) if not iam.decide(compiled, r)[0]]
    assert refused, f"{principal} without {action}: every request still allowed"
    assert {r.action for r in refused} == {action}
    message = recorded.message(principal, refused[0])
    assert f"/{principal} is not authorized to perform: {action} on resource" in message
