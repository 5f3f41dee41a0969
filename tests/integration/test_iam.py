"""IAM enforced by the local engine: what a function's policy in template.yaml does not allow
fails the run as it fails on AWS, with the service's own AccessDenied naming the function, the
action and the resource; S3's answer to a missing key depends on s3:ListBucket as on AWS."""

from __future__ import annotations

import contextvars
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snn import epoch
from snn.engines import local
from snn.engines.local import iam
from snn.errors import RunFailed
from snn.stores import MissingObject, S3Store
from snn.template import load_yaml
from tests.helpers import ROOT, grants, network, project_copy, spec, without

pytestmark = pytest.mark.xdist_group("embedded")

TABLE = {"Fn::GetAtt": ["RunsTable", "Arn"]}
SCRATCH = {"Fn::Sub": "${DataBucket.Arn}/scratch/*"}
# Commit's statements before it was granted what the end of an epoch reads and writes
OLD_COMMIT = [
    {
        "Sid": "ListScratch",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": {"Fn::GetAtt": ["DataBucket", "Arn"]},
        "Condition": {"StringLike": {"s3:prefix": "scratch/*"}},
    },
    {"Sid": "DeleteOldEpochs", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": SCRATCH},
    {
        "Sid": "AdvanceRunRecord",
        "Effect": "Allow",
        "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
        "Resource": TABLE,
    },
]


def with_commit_statements(folder: Path, statements: list[dict[str, Any]]) -> Path:
    folder.mkdir()
    template = project_copy(folder)
    raw = load_yaml(template)
    raw["Resources"]["CommitFunction"]["Properties"]["Policies"] = [{"Statement": statements}]
    template.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    return template


def allow(action: str, resource: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


# Each run on Commit's old grants, one more granted each time, ends at the next refusal.
CHAIN = [
    ([], "dynamodb:Query", ":table/"),
    ([allow("dynamodb:Query", TABLE)], "dynamodb:PutItem", ":table/"),
    (
        [allow("dynamodb:Query", TABLE), allow("dynamodb:PutItem", TABLE)],
        "s3:GetObject",
        "/scratch/r/",
    ),
    (
        [
            allow("dynamodb:Query", TABLE),
            allow("dynamodb:PutItem", TABLE),
            allow("s3:GetObject", SCRATCH),
        ],
        "s3:GetObject",
        "/runs/r/data/valid_x.npy",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("granted", "action", "resource"), CHAIN)
def test_commit_on_its_old_grants_fails_a_run_of_mini_batches_and_validation(
    tmp_path: Path, granted: list[dict[str, Any]], action: str, resource: str
) -> None:
    """The end of an epoch of mini-batches with a validation set: Commit queries the batch
    losses, writes the epoch's costs, reads the next W and b and the validation set. On its old
    grants the run fails at the first of those its policy does not allow, as on AWS: the
    AccessDenied is a function error that no Retry of the state machine retries."""
    from snn.data import synthetic_images, write_h5_pair

    data = write_h5_pair(tmp_path / "data", *synthetic_images(m_train=160))
    template = with_commit_statements(tmp_path / "project", OLD_COMMIT + granted)
    p = network([2, 1], epochs=2, batch_size=64, validation=0.2)
    with pytest.raises(RunFailed) as failed:
        local.train(spec(p, data), template)
    message = str(failed.value)
    code = "AccessDenied" if action.startswith("s3:") else "AccessDeniedException"
    kind = "AccessDenied" if action.startswith("s3:") else "ClientError"  # botocore's class
    assert message.startswith(f"run r failed at epoch 0 in Commit (batch 1): {kind}: "), message
    assert f"An error occurred ({code})" in message
    role = "assumed-role/CommitFunctionRole/CommitFunction"
    assert f"{role} is not authorized to perform: {action}" in message
    assert f"{action} on resource: arn:aws:" in message
    assert resource in message.split(" on resource: ", 1)[1]
    definition = json.loads((ROOT / "statemachine" / "training.asl.json").read_text())
    retried = {e for r in _retriers(definition) for e in r["ErrorEquals"]}
    assert not retried & {kind, "States.ALL", "States.TaskFailed"}, retried


def _retriers(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = list(node.get("Retry", []))
        return found + [r for v in node.values() for r in _retriers(v)]
    if isinstance(node, list):
        return [r for v in node for r in _retriers(v)]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.json")), ids=lambda p: p.stem)
def test_every_example_runs_to_its_end_with_enforcement(tmp_path: Path, path: Path) -> None:
    from snn.data import synthetic_images, write_h5_pair
    from snn.parameters import Parameters

    data = write_h5_pair(tmp_path / "data", *synthetic_images(m_train=160))
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["epochs"] = 2
    result = local.train(spec(Parameters.from_dict(raw), data))
    assert len(result.costs) == 2


SAMPLE = [
    ("LossFunction", "dynamodb:PutItem", "Loss", None),
    ("UpdateFunction", "s3:PutObject", "Update", None),
    ("InitFunction", "s3:GetObject", "Init", None),
    ("ContinueAsNewFunction", "states:StartExecution", "ContinueAsNew", None),
    ("TrainingStateMachine", "lambda:InvokeFunction", "Commit", "CommitFunction"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("principal", "action", "stage", "function"), SAMPLE)
def test_a_run_on_a_template_one_action_short_fails_with_access_denied(
    tmp_path: Path,
    synthetic_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    principal: str,
    action: str,
    stage: str,
    function: str | None,
) -> None:
    """A sample of the copies above, run for real: the run fails where the stage is refused,
    and its error names the principal, the action and the resource."""
    (index,) = [
        i
        for name, i, a in grants()
        if name == principal
        and a == action
        and (function is None or load_yaml(ROOT / "template.yaml")["Resources"][name]["Properties"]
             ["Policies"][i]["LambdaInvokePolicy"]["FunctionName"] == {"Ref": function})
    ]  # fmt: skip
    template = without(tmp_path, principal, index, action)
    p = network([3, 1], epochs=2, neurons_per_task=2)
    budget = epoch.EXECUTION_FIXED_EVENTS + epoch.events_per_step(p)
    monkeypatch.setattr(epoch, "EXECUTION_EVENT_BUDGET", budget)  # a hand-over at every step
    with pytest.raises(RunFailed) as failed:
        local.train(spec(p, synthetic_dir), template)
    message = str(failed.value)
    assert f" in {stage}" in message, message
    assert f"/{principal} is not authorized to perform: {action} on resource: arn:" in message


# --- the services' answers ----------------------------------------------------------------------


def as_function(name: str, call: Any) -> Any:
    """`call()` as function `name`'s handler would make it (in an invocation's own context)."""
    return contextvars.Context().run(iam.acting_as(name, lambda _e, _c: call()), None, None)


def test_a_denied_request_gets_the_services_answer(embedded_stack: Any) -> None:
    st = embedded_stack.stack
    st.s3.put_object(Bucket=st.bucket, Key="runs/r/model.npz", Body=b"x")
    # Activation may not read runs/
    with pytest.raises(ClientError) as denied:
        as_function(
            "ActivationFunction",
            lambda: st.s3.get_object(Bucket=st.bucket, Key="runs/r/model.npz"),
        )
    error = denied.value.response["Error"]
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Code"] == "AccessDenied"
    assert error["Message"].startswith(
        "User: arn:aws:sts::123456789012:assumed-role/ActivationFunctionRole/ActivationFunction "
        f"is not authorized to perform: s3:GetObject on resource: arn:aws:s3:::{st.bucket}/runs/"
    )
    # and the store says access denied, not a missing object
    with pytest.raises(ClientError, match="AccessDenied"):
        as_function("ActivationFunction", lambda: S3Store(st.bucket, st.s3).get("runs/r/x.npy"))
    # DynamoDB: Activation may only read items
    with pytest.raises(ClientError) as denied:
        as_function(
            "ActivationFunction",
            lambda: st.dynamodb.put_item(
                TableName=st.table, Item={"run_id": {"S": "r"}, "entry": {"S": "x"}}
            ),
        )
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "dynamodb:PutItem on resource: arn:aws:dynamodb:" in str(denied.value)
    # Step Functions: only ContinueAsNew may start an execution
    with pytest.raises(ClientError) as denied:
        as_function(
            "CommitFunction",
            lambda: st.sfn.start_execution(stateMachineArn=st.state_machine_arn, input="{}"),
        )
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert f"states:StartExecution on resource: {st.state_machine_arn}" in str(denied.value)
    # what a function's policy allows goes through (Predict reads a model)
    body = as_function(
        "PredictFunction", lambda: st.s3.get_object(Bucket=st.bucket, Key="runs/r/model.npz")
    )
    assert body["Body"].read() == b"x"
    assert not [d for d in embedded_stack.iam.denied() if d[0] == "PredictFunction"]


def test_a_missing_key_is_access_denied_unless_the_function_may_list_it(
    embedded_stack: Any,
) -> None:
    st = embedded_stack.stack
    store = S3Store(st.bucket, st.s3)
    # Predict may read models but not list the bucket: S3 says 403 Access Denied, no more
    with pytest.raises(ClientError) as denied:
        as_function(
            "PredictFunction",
            lambda: st.s3.get_object(Bucket=st.bucket, Key="runs/none/model.npz"),
        )
    assert denied.value.response["Error"] == {"Code": "AccessDenied", "Message": "Access Denied"}
    with pytest.raises(MissingObject, match="may not list the bucket"):
        as_function("PredictFunction", lambda: store.get("runs/none/model.npz"))
    # Commit may list scratch/: a missing key there is 404 NoSuchKey
    with pytest.raises(MissingObject, match=r"^no object scratch/none/W\.npy in bucket"):
        as_function("CommitFunction", lambda: store.get("scratch/none/W.npy"))
    # requests outside any function (the engine's own) are not a function's
    with pytest.raises(MissingObject):
        store.get("runs/none/model.npz")
