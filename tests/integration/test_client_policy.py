"""The client's IAM policy (docs/client-policy.json, shown in docs/aws.md) against every request
`snn train --engine aws` makes of the emulated stack, evaluated as IAM evaluates them: each is
allowed, and each (action, resource) the policy grants is used."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from snn.engines import aws
from snn.engines.local import ACCOUNT, REGION, iam
from snn.engines.stack import create_run, start
from snn.stores.clients import invoked_as
from tests.helpers import ROOT, deployed, network, spec

pytestmark = [
    pytest.mark.xdist_group("embedded"),
    pytest.mark.filterwarnings(
        "ignore:Tried to parse AWS..CloudFormation..WaitConditionHandle:UserWarning"
    ),
]

POLICY = ROOT / "docs" / "client-policy.json"


def policy_for(names: dict[str, str]) -> list[dict[str, Any]]:
    text = POLICY.read_text(encoding="utf-8")
    for placeholder, value in names.items():
        text = text.replace(f"<{placeholder}>", value)
    assert "<" not in text, text
    return json.loads(text)["Statement"]


@contextmanager
def recording(session: Any, record: Any) -> Iterator[None]:
    session.events.register("provide-client-params", record, unique_id="client-policy")
    try:
        yield
    finally:
        session.events.unregister("provide-client-params", unique_id="client-policy")


def test_the_docs_show_the_policy() -> None:
    doc = (ROOT / "docs" / "aws.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Permissions the snn client needs") :]
    shown = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    assert shown is not None
    assert json.loads(shown[1]) == json.loads(POLICY.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_every_request_of_the_aws_engine_is_allowed_and_every_grant_used(
    embedded_stack: Any, tmp_path: Path
) -> None:
    from snn.data import synthetic_images, write_h5_pair

    st = embedded_stack.stack
    machine = st.state_machine_arn.rsplit(":", 1)[1]
    stack = deployed(embedded_stack, machine.removesuffix("-training"))
    made: list[iam.Request] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        # the client's own requests: not a function's, nor the state machine's invokes
        if invoked_as.get() is None and service != "lambda":
            made.extend(iam.as_iam(service, model.name, params, REGION, ACCOUNT))

    session = boto3.DEFAULT_SESSION
    data = write_h5_pair(tmp_path / "data", *synthetic_images(m_train=160))
    p = network([2, 1], epochs=3, batch_size=64, validation=0.2)
    with recording(session, record):
        aws.train(spec(p, data, "client"), stack, session=session)
    # a run whose execution was stopped before its end, resumed by the client
    start(st, create_run(st, "again", p, data), "again")
    deadline = time.monotonic() + 60
    while (st.runs.get("again", ("execution",)) or {}).get("execution") != "again":
        assert time.monotonic() < deadline, "Init never took the run on"
        time.sleep(0.02)
    st.sfn.stop_execution(executionArn=st.execution_arn("again"))
    with recording(session, record):
        aws.resume(spec(p, Path("."), "again"), stack, session)

    names = {
        "region": REGION,
        "account": ACCOUNT,
        "stack": stack,
        "bucket": st.bucket,
        "table": st.table,
    }
    statements = policy_for(names)
    compiled = [iam.Compiled(s, "the client policy") for s in statements]
    refused = [str(r) for r in made if not iam.decide(compiled, r)[0]]
    assert made and not refused, refused
    unused = []
    for statement in statements:
        for action in iam._as_list(statement["Action"]):
            for resource in iam._as_list(statement["Resource"]):
                narrow = iam.Compiled({**statement, "Action": action, "Resource": resource}, "")
                if not any(narrow.matches(r) for r in made):
                    unused.append(f"{action} on {resource}")
    assert not unused, f"granted but never used: {unused}"
