"""`snn train --engine aws` against the emulated stack: a CloudFormation stack in moto whose
outputs name the embedded stack's bucket, table and state machine stands in for `sam deploy`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from snn.data import load_dataset
from snn.engines import aws, direct
from snn.errors import SnnError

from .test_local_engine import assert_same_run, three_layers

pytestmark = pytest.mark.filterwarnings(
    # moto creates the stack but does not model this resource; it needs none.
    "ignore:Tried to parse AWS..CloudFormation..WaitConditionHandle:UserWarning"
)


def outputs_stack(name: str, outputs: dict[str, str]) -> None:
    """A CloudFormation stack whose only purpose is its literal outputs."""
    template = {
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    session = boto3.DEFAULT_SESSION
    assert session is not None
    session.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def test_the_aws_engine_runs_on_the_stack_outputs_and_equals_direct(
    embedded_stack: Any, synthetic_dir: Path
) -> None:
    st = embedded_stack.stack
    outputs_stack(
        "snn-emulated",
        {
            "BucketName": st.bucket,
            "TableName": st.table,
            "StateMachineArn": st.state_machine_arn,
        },
    )
    p = three_layers(2, epochs=3)
    got = aws.train(p, synthetic_dir, "over-aws", "snn-emulated", session=boto3.DEFAULT_SESSION)
    want = direct.train(p, load_dataset(synthetic_dir), "over-aws")
    assert_same_run(got, want)  # costs and weights bit for bit
    assert got.engine == "aws"
    assert got.neurons == want.neurons
    (execution,) = got.extra["executions"]
    assert execution["status"] == "SUCCEEDED"
    assert got.extra["lambda_invocations"] > 0 and got.extra["state_transitions"] > 0


def test_connect_needs_the_three_outputs(embedded_stack: Any) -> None:
    st = embedded_stack.stack
    outputs_stack("not-snn", {"BucketName": st.bucket, "Unrelated": "x"})
    with pytest.raises(SnnError, match="has no output\\(s\\) TableName, StateMachineArn"):
        aws.connect("not-snn", boto3.DEFAULT_SESSION)
    with pytest.raises(SnnError, match="cannot read stack 'missing'"):
        aws.connect("missing", boto3.DEFAULT_SESSION)
