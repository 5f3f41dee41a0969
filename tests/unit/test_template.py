"""Static checks of template.yaml against the code, the events and the state machine definition."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snn.template import load_yaml
from tests.unit.handler_steps import OUTSIDE_TRAINING as _OUTSIDE_TRAINING
from tests.unit.handler_steps import STAGES as _STAGES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The stages of the maths (one Lambda function and one handler module each), and the functions
# outside training.
STAGES = list(_STAGES)
OUTSIDE_TRAINING = list(_OUTSIDE_TRAINING)
HANDLER = re.compile(r"^snn\.handlers\.(?P<module>[a-z_][a-z0-9_]*)\.handler$")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def load_template() -> dict[str, Any]:
    return load_yaml(TEMPLATE)


TEMPLATE_DATA = load_template()
RESOURCES: dict[str, Any] = TEMPLATE_DATA["Resources"]


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v.get("Properties", {}) for k, v in RESOURCES.items() if v["Type"] == kind}


FUNCTIONS = of_type("AWS::Serverless::Function")


def module_of(properties: dict[str, Any]) -> str:
    handler = properties.get("Handler", "")
    match = HANDLER.match(handler)
    assert match, f"Handler {handler!r} is not snn.handlers.<module>.handler"
    return match["module"]


def the_one(kind: str) -> tuple[str, dict[str, Any]]:
    found = of_type(kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.items()))


def statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM policy statement written anywhere in the template."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Statement":
                yield from value if isinstance(value, list) else [value]
            yield from statements(value)
    elif isinstance(node, list):
        for item in node:
            yield from statements(item)


def test_one_function_per_stage() -> None:
    modules = sorted(module_of(p) for p in FUNCTIONS.values())
    assert modules == sorted(STAGES + OUTSIDE_TRAINING)


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_handler_is_an_expected_stage(logical_id: str) -> None:
    assert module_of(FUNCTIONS[logical_id]) in STAGES + OUTSIDE_TRAINING


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_handler_module_exists(logical_id: str) -> None:
    path = ROOT / "src" / "snn" / "handlers" / f"{module_of(FUNCTIONS[logical_id])}.py"
    assert path.is_file(), f"{logical_id}: no handler module {path.relative_to(ROOT)}"


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_event_file_exists(logical_id: str) -> None:
    path = ROOT / "events" / f"{module_of(FUNCTIONS[logical_id])}.json"
    assert path.is_file(), f"{logical_id}: no event file {path.relative_to(ROOT)}"
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_definition_substitutions_match_placeholders() -> None:
    _, machine = the_one("AWS::Serverless::StateMachine")
    definition = (ROOT / machine["DefinitionUri"]).read_text(encoding="utf-8")
    placeholders = set(PLACEHOLDER.findall(definition))
    substitutions = set(machine.get("DefinitionSubstitutions", {}))
    assert placeholders - substitutions == set(), "placeholders without a substitution"
    assert substitutions - placeholders == set(), "substitutions the definition never uses"


def test_substitutions_are_function_arns() -> None:
    _, machine = the_one("AWS::Serverless::StateMachine")
    for name, value in machine["DefinitionSubstitutions"].items():
        target, attribute = value["Fn::GetAtt"]
        assert target in FUNCTIONS, f"{name} refers to {target}, not a function"
        assert attribute == "Arn"
        assert name == f"{target}Arn"


def test_state_machine_may_invoke_every_function() -> None:
    _, machine = the_one("AWS::Serverless::StateMachine")
    invokable = {
        policy["LambdaInvokePolicy"]["FunctionName"]["Ref"]
        for policy in machine["Policies"]
        if isinstance(policy, dict) and "LambdaInvokePolicy" in policy
    }
    assert invokable == {f for f, p in FUNCTIONS.items() if module_of(p) not in OUTSIDE_TRAINING}


def test_no_policy_statement_has_resource_star() -> None:
    found = list(statements(TEMPLATE_DATA))
    assert found, "expected at least the bucket policy's statement"
    for statement in found:
        resources = statement.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        assert "*" not in resources, f"Resource '*' in {statement}"


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_xray_policy_is_attached(logical_id: str) -> None:
    # SAM attaches AWSXrayWriteOnlyAccess (Resource "*") for any Tracing value but Disabled.
    tracing = FUNCTIONS[logical_id].get(
        "Tracing", TEMPLATE_DATA.get("Globals", {}).get("Function", {}).get("Tracing")
    )
    assert tracing in (None, "Disabled")


def test_table_is_keyed_by_run_id_and_entry() -> None:
    _, table = the_one("AWS::DynamoDB::Table")
    assert table["KeySchema"] == [
        {"AttributeName": "run_id", "KeyType": "HASH"},
        {"AttributeName": "entry", "KeyType": "RANGE"},
    ]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "run_id", "AttributeType": "S"},
        {"AttributeName": "entry", "AttributeType": "S"},
    ]


def test_bucket_is_encrypted_and_not_public() -> None:
    _, bucket = the_one("AWS::S3::Bucket")
    rules = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    algorithms = {rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in rules}
    assert algorithms and algorithms <= {"AES256", "aws:kms"}
    block = bucket["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }


def test_predict_reads_only_and_its_url_needs_iam_auth() -> None:
    (function_id,) = [f for f, p in FUNCTIONS.items() if module_of(p) == "predict"]
    predict = FUNCTIONS[function_id]
    assert predict["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert "Cors" not in predict["FunctionUrlConfig"]
    policies = sorted(next(iter(p)) for p in predict["Policies"])
    assert policies == ["DynamoDBReadPolicy", "S3ReadPolicy"]
    url = TEMPLATE_DATA["Outputs"][f"{function_id}Url"]["Value"]
    assert url == {"Fn::GetAtt": [f"{function_id}Url", "FunctionUrl"]}
