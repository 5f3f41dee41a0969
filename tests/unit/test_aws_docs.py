"""docs/aws.md against template.yaml: the Security section lists exactly what the template grants
each function, and the rest names what a user needs (the runtime, the env files, the function
URL's permissions, the parameters and their defaults, the rule)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from snn.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "aws.md").read_text(encoding="utf-8")
TEMPLATE = load_yaml(ROOT / "template.yaml")
RESOURCES = TEMPLATE["Resources"]
SECURITY = DOC[DOC.index("## Security") :]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def where(value: Any, condition: dict[str, Any] | None) -> str:
    """A statement's resource as the docs write it."""
    if value == {"Fn::GetAtt": ["RunsTable", "Arn"]}:
        return "the table"
    if value == {"Fn::GetAtt": ["DataBucket", "Arn"]}:
        prefixes = as_list((condition or {})["StringLike"]["s3:prefix"])
        return "the bucket, listing only " + ", ".join(f"`{p}`" for p in prefixes)
    text = value["Fn::Sub"]
    if text.startswith("${DataBucket.Arn}/"):
        return f"`{text.removeprefix('${DataBucket.Arn}/')}`"
    match = re.search(r":(stateMachine|execution):\$\{AWS::StackName\}-training(:\*)?$", text)
    if match:
        return "the state machine" if match[1] == "stateMachine" else "its executions"
    raise AssertionError(f"the docs have no words for {text}")


def template_rows() -> list[tuple[str, str, str]]:
    rows = []
    for name, res in RESOURCES.items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        for policy in res["Properties"]["Policies"]:
            for statement in policy["Statement"]:
                actions = ", ".join(f"`{a}`" for a in as_list(statement["Action"]))
                on = ", ".join(
                    where(r, statement.get("Condition")) for r in as_list(statement["Resource"])
                )
                rows.append((name, actions, on))
    return rows


def doc_rows() -> list[tuple[str, str, str]]:
    table = SECURITY[SECURITY.index("| function | actions | on |") :]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        function, actions, on = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((function, actions, on))
    return rows


def test_security_lists_each_functions_permissions_line_for_line() -> None:
    assert doc_rows() == template_rows()


def test_security_names_the_rest_of_what_the_template_grants() -> None:
    bucket = RESOURCES["DataBucket"]["Properties"]
    assert (
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]["SSEAlgorithm"]
        == "AES256"
    )
    assert "SSE-S3, AES256" in SECURITY and "without TLS" in SECURITY
    assert RESOURCES["RunsTable"]["Properties"]["SSESpecification"] == {"SSEEnabled": False}
    assert "AWS owned key" in SECURITY and "point-in-time recovery" in SECURITY
    # every function role also gets SAM's logging policy; no X-Ray
    assert "AWSLambdaBasicExecutionRole" in SECURITY and "Tracing: Disabled" in SECURITY
    assert "/aws/lambda/<function name>" in SECURITY and "`LogRetentionDays`" in SECURITY
    # the state machine may invoke the functions of training, named in the docs
    machine = RESOURCES["TrainingStateMachine"]["Properties"]
    invoked = [p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in machine["Policies"]]
    named = re.search(r"the ten functions of training \(([^)]*)\)", SECURITY)
    assert named and len(invoked) == 10
    assert [f"{n}Function" for n in re.split(r",\s+", named[1])] == invoked
    # the rule and its permission
    rule = RESOURCES["ExecutionStatusRule"]["Properties"]
    statuses = rule["EventPattern"]["detail"]["status"]
    assert f"{', '.join(statuses[:-1])} or {statuses[-1]}" in SECURITY
    permission = RESOURCES["ExecutionFailedInvokePermission"]["Properties"]
    assert permission["Principal"] in SECURITY and "`SourceArn`" in SECURITY
    assert RESOURCES["PredictFunction"]["Properties"]["FunctionUrlConfig"] == {
        "AuthType": "AWS_IAM"
    }
    assert "`AuthType: AWS_IAM`, no CORS" in SECURITY


def test_the_function_url_needs_both_permissions() -> None:
    for action in ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction"):
        assert f'"Action": "{action}"' in DOC
    assert "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html" in DOC


@pytest.mark.parametrize("parameter", ["ScratchRetentionDays", "LogRetentionDays"])
def test_parameters_and_their_defaults(parameter: str) -> None:
    default = TEMPLATE["Parameters"][parameter]["Default"]
    assert f"| `{parameter}` | {default} |" in DOC


def test_pythons_and_env_files() -> None:
    runtime = TEMPLATE["Globals"]["Function"]["Runtime"]
    assert f"the `{runtime}` runtime on arm64" in DOC
    assert "3.11 or later" in DOC
    for name in ("env.aws.json", "env.emulator.json"):
        assert f"--env-vars events/{name}" in DOC
    assert "snn bill --params parameters.json --epochs 2500" in DOC
    assert "at most 40 iterations at once" in DOC and "ceil(S / 40) waves" in DOC
