"""`snn train --engine aws` against the emulated stack: a CloudFormation stack in moto whose
outputs name the embedded stack's bucket, table and state machine stands in for `sam deploy`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from snn.engines import aws, direct
from snn.engines.local import EmbeddedStack
from snn.errors import RunFailed, SnnError
from snn.handlers import commit
from tests.helpers import (
    assert_same_run,
    deployed,
    outputs_stack,
    spec,
    three_layers,
    tiny_parameters,
    with_handler,
)

pytestmark = [
    pytest.mark.xdist_group("embedded"),
    # moto creates the stack but does not model this resource; it needs none.
    pytest.mark.filterwarnings(
        "ignore:Tried to parse AWS..CloudFormation..WaitConditionHandle:UserWarning"
    ),
]


@pytest.mark.slow
def test_the_aws_engine_runs_on_the_stack_outputs_and_equals_direct(
    embedded_stack: Any, synthetic_dir: Path
) -> None:
    stack = deployed(embedded_stack)
    p = three_layers(2, epochs=3)
    reported: list[tuple[int, float]] = []
    got = aws.train(
        spec(p, synthetic_dir, "over-aws", on_epoch=lambda e, c: reported.append((e, c))),
        stack,
        session=boto3.DEFAULT_SESSION,
    )
    want = direct.train(spec(p, synthetic_dir, "over-aws"))
    assert_same_run(got, want)  # costs and weights bit for bit
    assert got.engine == "aws"
    assert got.neurons == want.neurons
    assert reported == list(enumerate(want.costs))
    (execution,) = got.extra["executions"]
    assert execution["status"] == "SUCCEEDED" and execution["name"] == "over-aws"
    assert got.extra["lambda_invocations"] > 0 and got.extra["state_transitions"] > 0
    # the run id is taken: a second start is refused before anything is written
    with pytest.raises(SnnError, match="run over-aws already exists in table"):
        aws.train(spec(p, synthetic_dir, "over-aws"), stack, session=boto3.DEFAULT_SESSION)


def test_connect_needs_the_three_outputs(embedded_stack: Any) -> None:
    st = embedded_stack.stack
    outputs_stack("not-snn", {"BucketName": st.bucket, "Unrelated": "x"})
    with pytest.raises(SnnError, match="has no output\\(s\\) TableName, StateMachineArn"):
        aws.connect("not-snn", boto3.DEFAULT_SESSION)
    with pytest.raises(SnnError, match="cannot read stack 'missing'"):
        aws.connect("missing", boto3.DEFAULT_SESSION)


@pytest.mark.slow  # the AWS engine polls every 2 s
def test_a_failed_run_resumes_on_the_deployed_stack(
    aws_env: None, tmp_path: Path, synthetic_dir: Path
) -> None:
    """Commit fails for good at epoch 2; once it is fixed (a new version of the function),
    `aws.resume` carries the run on in a new execution, and it ends bit for bit as the direct
    engine's run."""
    template = with_handler(tmp_path, "commit", "tests.faulty_handlers.commit_fails_at_epoch_2")
    p = tiny_parameters(epochs=4)
    session = boto3.DEFAULT_SESSION
    with EmbeddedStack(template) as embedded:
        stack = deployed(embedded)
        with pytest.raises(RunFailed) as failure:
            aws.train(spec(p, synthetic_dir, "r"), stack, session=session)
        message = str(failure.value)
        assert message.startswith("run r failed at epoch 2 in Commit: StageBroke:"), message
        assert message.endswith(
            f"; resume it with: snn train --engine aws --stack {stack} --region us-east-1 "
            "--resume r"
        )
        assert aws.saved_run(stack, "r", session) == (
            p,
            direct.train(spec(p, synthetic_dir, "r")).costs[:2],
        )

        embedded.lambdas.handlers["CommitFunction"] = commit.handler  # the fix, deployed
        reported: list[int] = []
        got = aws.resume(
            spec(p, Path("."), "r", on_epoch=lambda e, c: reported.append(e)), stack, session
        )
        assert_same_run(got, direct.train(spec(p, synthetic_dir, "r")))
        (execution,) = got.extra["executions"]
        assert execution["name"].startswith("r-r") and execution["first_epoch"] == 2
        assert reported == [2, 3]
        with pytest.raises(SnnError, match="run r has finished: nothing to resume"):
            aws.resume(spec(p, Path("."), "r"), stack, session)
        with pytest.raises(SnnError, match="unknown run 'nobody'"):
            aws.resume(spec(p, Path("."), "nobody"), stack, session)


def test_resuming_a_running_run_follows_it_to_its_end(
    embedded_stack: Any, synthetic_dir: Path
) -> None:
    """A run still running (its follower stopped, say) is not started again: resume follows the
    execution that carries it to its end."""
    from snn.engines.stack import create_run, start

    stack = deployed(embedded_stack)
    st = embedded_stack.stack
    p = tiny_parameters(epochs=6)
    start(st, create_run(st, "busy", p, synthetic_dir), "busy")
    deadline = time.monotonic() + 60
    while (st.runs.get("busy", ("execution",)) or {}).get("execution") != "busy":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    reported: list[int] = []
    got = aws.resume(
        spec(p, Path("."), "busy", on_epoch=lambda e, c: reported.append(e)),
        stack,
        boto3.DEFAULT_SESSION,
    )
    assert_same_run(got, direct.train(spec(p, synthetic_dir, "busy")))
    assert [e["name"] for e in got.extra["executions"]] == ["busy"]
    listed = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
    assert [e["name"] for e in listed] == ["busy"]  # nothing started
    assert reported and reported == list(range(reported[0], 6))  # every epoch after, once
