"""Static checks of template.yaml against the code, the events, the state machine definition and
the build files: what each function may do, the rule on failed executions, storage lifetime,
logs, the runtime and its layer."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snn.template import Template, TemplateError, load_yaml
from tests.helpers import STAGES as _STAGES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The stages of the maths (one Lambda function and one handler module each), and the functions
# the state machine never invokes, with what invokes them instead.
STAGES = list(_STAGES)
OUTSIDE_STATE_MACHINE = {"predict": "its function URL", "execution_failed": "ExecutionStatusRule"}
HANDLER = re.compile(r"^snn\.handlers\.(?P<module>[a-z_][a-z0-9_]*)\.handler$")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# Actions no function needs: SAM's S3 and DynamoDB policy templates bring them.
NEVER_GRANTED = re.compile(
    r"s3:\*|s3:.*(Acl|Lifecycle|Policy|Tagging|Version).*|"
    r"dynamodb:\*|dynamodb:(Scan|Batch.*|DeleteItem|.*Table.*)"
)
# Commit alone queries the table: an epoch's batch losses, at its end.
QUERIES = {"CommitFunction"}


def load_template() -> dict[str, Any]:
    return load_yaml(TEMPLATE)


TEMPLATE_DATA = load_template()
RESOURCES: dict[str, Any] = TEMPLATE_DATA["Resources"]
GLOBALS: dict[str, Any] = TEMPLATE_DATA["Globals"]["Function"]


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v.get("Properties", {}) for k, v in RESOURCES.items() if v["Type"] == kind}


FUNCTIONS = of_type("AWS::Serverless::Function")


def module_of(properties: dict[str, Any]) -> str:
    handler = properties.get("Handler", "")
    match = HANDLER.match(handler)
    assert match, f"Handler {handler!r} is not snn.handlers.<module>.handler"
    return match["module"]


def function_of(module: str) -> str:
    (function_id,) = [f for f, p in FUNCTIONS.items() if module_of(p) == module]
    return function_id


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


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(function_id: str) -> set[str]:
    return {a for s in statements(FUNCTIONS[function_id]["Policies"]) for a in as_list(s["Action"])}


# --- functions, handlers, events --------------------------------------------------------------


def test_one_function_per_stage() -> None:
    modules = sorted(module_of(p) for p in FUNCTIONS.values())
    assert modules == sorted(STAGES + list(OUTSIDE_STATE_MACHINE))


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


def test_substitutions_are_function_arns_or_the_partition() -> None:
    _, machine = the_one("AWS::Serverless::StateMachine")
    for name, value in machine["DefinitionSubstitutions"].items():
        if name == "Partition":
            assert value == {"Ref": "AWS::Partition"}
            continue
        target, attribute = value["Fn::GetAtt"]
        assert target in FUNCTIONS, f"{name} refers to {target}, not a function"
        assert attribute == "Arn"
        assert name == f"{target}Arn"


def test_the_local_engine_resolves_the_partition() -> None:
    template = Template.load(TEMPLATE)
    refs = {fid: f"arn:aws:lambda:us-east-1:123456789012:function:{fid}" for fid in FUNCTIONS}
    definition = template.definition({**refs, "AWS::Partition": "aws"})
    assert "${" not in definition and '"arn:aws:states:::lambda:invoke"' in definition
    with pytest.raises(TemplateError, match="Partition"):
        template.definition(refs)


def test_state_machine_may_invoke_exactly_the_stage_functions() -> None:
    _, machine = the_one("AWS::Serverless::StateMachine")
    invokable = {
        policy["LambdaInvokePolicy"]["FunctionName"]["Ref"]
        for policy in machine["Policies"]
        if isinstance(policy, dict) and "LambdaInvokePolicy" in policy
    }
    assert invokable == {
        f for f, p in FUNCTIONS.items() if module_of(p) not in OUTSIDE_STATE_MACHINE
    }
    assert [p for p in machine["Policies"] if "LambdaInvokePolicy" not in p] == []


def test_the_template_gives_each_function_its_timeout_and_memory() -> None:
    functions = Template.load(TEMPLATE).functions()
    assert functions["InitFunction"].timeout == GLOBALS["Timeout"]
    assert functions["InitFunction"].memory_mb == GLOBALS["MemorySize"]
    evaluate = FUNCTIONS[function_of("evaluate")]
    assert functions[function_of("evaluate")].timeout == evaluate["Timeout"]
    assert functions[function_of("evaluate")].memory_mb == evaluate["MemorySize"]


# --- failed executions ------------------------------------------------------------------------


def test_failed_executions_of_this_state_machine_reach_their_own_function() -> None:
    sm_id, _ = the_one("AWS::Serverless::StateMachine")
    rule_id, rule = the_one("AWS::Events::Rule")
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "status": ["FAILED", "TIMED_OUT", "ABORTED"],
            "stateMachineArn": [{"Ref": sm_id}],
        },
    }
    target = function_of("execution_failed")
    assert target == "ExecutionFailedFunction"
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": [target, "Arn"]}]
    # EventBridge may invoke it, for this rule only
    (permission,) = of_type("AWS::Lambda::Permission").values()
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": target},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
    }
    # its own role: read and update the run record, nothing else
    (statement,) = statements(FUNCTIONS[target]["Policies"])
    assert sorted(statement["Action"]) == ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    assert statement["Resource"] == {"Fn::GetAtt": ["RunsTable", "Arn"]}
    assert "Events" not in FUNCTIONS[target]


def test_the_local_engine_finds_the_rules_function(tmp_path: Path) -> None:
    template = Template.load(TEMPLATE)
    assert template.execution_status_target() == "ExecutionFailedFunction"
    rule = template.execution_status_rule()
    assert rule.matches("TIMED_OUT") and not rule.matches("SUCCEEDED")

    def variant(change: Any) -> Template:
        raw = load_template()
        change(raw["Resources"])
        return Template(tmp_path / "template.yaml", raw)

    def other_machine(resources: dict[str, Any]) -> None:
        pattern = resources["ExecutionStatusRule"]["Properties"]["EventPattern"]
        pattern["detail"]["stateMachineArn"] = ["arn:aws:states:::stateMachine:other"]

    with pytest.raises(TemplateError, match="executions of TrainingStateMachine alone"):
        variant(other_machine).execution_status_target()
    with pytest.raises(TemplateError, match="found 0"):
        variant(lambda r: r.pop("ExecutionStatusRule")).execution_status_target()


# --- permissions ------------------------------------------------------------------------------


def test_no_policy_statement_has_resource_star() -> None:
    found = list(statements(TEMPLATE_DATA))
    assert found, "expected at least the bucket policy's statement"
    for statement in found:
        resources = statement.get("Resource", [])
        assert "*" not in as_list(resources), f"Resource '*' in {statement}"


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_policies_are_inline_statements_of_needed_actions(logical_id: str) -> None:
    policies = FUNCTIONS[logical_id]["Policies"]
    # no SAM policy template (S3ReadPolicy, S3CrudPolicy, DynamoDBReadPolicy, ...)
    assert [list(p) for p in policies] == [["Statement"]], logical_id
    for statement in statements(policies):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert not NEVER_GRANTED.fullmatch(action), f"{logical_id}: {action}"
            if action == "s3:ListBucket":  # only with the prefixes it lists
                assert set(statement["Condition"]["StringLike"]) == {"s3:prefix"}
    assert "dynamodb:GetItem" in granted(logical_id)  # every function reads the run record
    assert ("dynamodb:Query" in granted(logical_id)) == (logical_id in QUERIES)


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_no_xray_policy_is_attached(logical_id: str) -> None:
    # SAM attaches AWSXrayWriteOnlyAccess (Resource "*") for any Tracing value but Disabled.
    tracing = FUNCTIONS[logical_id].get("Tracing", GLOBALS.get("Tracing"))
    assert tracing in (None, "Disabled")


def test_predict_reads_only_and_its_url_needs_iam_auth() -> None:
    function_id = function_of("predict")
    predict = FUNCTIONS[function_id]
    assert predict["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert "Cors" not in predict["FunctionUrlConfig"]
    assert granted(function_id) == {"s3:GetObject", "dynamodb:GetItem"}
    url = TEMPLATE_DATA["Outputs"][f"{function_id}Url"]["Value"]
    assert url == {"Fn::GetAtt": [f"{function_id}Url", "FunctionUrl"]}


# --- storage and logs -------------------------------------------------------------------------


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


def test_table_is_encrypted_with_the_aws_owned_key() -> None:
    # SSEEnabled true would switch to the AWS managed KMS key, with KMS charges on every request
    _, table = the_one("AWS::DynamoDB::Table")
    assert table["SSESpecification"] == {"SSEEnabled": False}
    assert "KMSMasterKeyId" not in json.dumps(table)


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


def test_only_scratch_expires() -> None:
    # runs/ and uploads/ hold what a live run reads to its end; an expiry counts from each
    # object's creation, so any expiry there could break a long run
    _, bucket = the_one("AWS::S3::Bucket")
    expiring = [
        rule
        for rule in bucket["LifecycleConfiguration"]["Rules"]
        if "ExpirationInDays" in rule or "ExpirationDate" in rule
    ]
    assert len(expiring) == 1
    (rule,) = expiring
    prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix"))
    assert prefix == "scratch/"
    assert rule["ExpirationInDays"] == {"Ref": "ScratchRetentionDays"}
    parameter = TEMPLATE_DATA["Parameters"]["ScratchRetentionDays"]
    assert parameter["Default"] == 30 and parameter["MinValue"] >= 1
    assert "RunRetentionDays" not in TEMPLATE_DATA["Parameters"]


def test_every_function_has_a_log_group_that_expires() -> None:
    groups = {
        props["LogGroupName"]["Fn::Sub"]: props["RetentionInDays"]
        for props in of_type("AWS::Logs::LogGroup").values()
    }
    assert groups == {f"/aws/lambda/${{{f}}}": {"Ref": "LogRetentionDays"} for f in FUNCTIONS}
    parameter = TEMPLATE_DATA["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == 30 and 30 in parameter["AllowedValues"]


# --- runtime, layer, build ---------------------------------------------------------------------


def test_runtime_is_a_supported_python_on_arm64_with_one_layer() -> None:
    assert GLOBALS["Runtime"] in ("python3.12", "python3.13")
    assert GLOBALS["Architectures"] == ["arm64"]
    assert GLOBALS["Layers"] == [{"Ref": "DependenciesLayer"}]
    (layer_id, layer) = the_one("AWS::Serverless::LayerVersion")
    assert layer_id == "DependenciesLayer"
    assert layer["CompatibleRuntimes"] == [GLOBALS["Runtime"]]
    assert layer["CompatibleArchitectures"] == ["arm64"]
    assert RESOURCES[layer_id]["Metadata"] == {
        "BuildMethod": "makefile",
        "BuildArchitecture": "arm64",
    }
    for logical_id, props in FUNCTIONS.items():
        assert "Runtime" not in props and "Layers" not in props, logical_id


def test_the_layer_is_built_from_pinned_wheels_for_the_runtime() -> None:
    version = GLOBALS["Runtime"].removeprefix("python")
    makefile = (ROOT / "layer" / "Makefile").read_text(encoding="utf-8")
    assert "build-DependenciesLayer:" in makefile
    assert f"PYTHON_VERSION := {version}" in makefile
    for flag in ("--only-binary=:all:", "--implementation cp", "_aarch64", '/python"'):
        assert flag in makefile
    assert "check_layer.py" in makefile
    pins = {}
    for line in (ROOT / "layer" / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"not pinned: {line}"
            pins[name.lower()] = pinned
    assert {"numpy", "h5py", "pillow", "aws-lambda-powertools", "threadpoolctl"} <= set(pins)
    assert "boto3" not in pins  # the runtime's
    assert not (ROOT / "src" / "requirements.txt").exists()


def test_each_function_carries_only_the_snn_package() -> None:
    # BuildMethod makefile: src/Makefile copies the package, no dependencies, no Python run
    assert GLOBALS["CodeUri"] == "src/"
    for logical_id in FUNCTIONS:
        assert RESOURCES[logical_id]["Metadata"] == {"BuildMethod": "makefile"}, logical_id
    makefile = (ROOT / "src" / "Makefile").read_text(encoding="utf-8")
    commands = [line.strip() for line in makefile.splitlines() if line.startswith("\t")]
    assert "build-%:" in makefile and 'cp -R snn "$(ARTIFACTS_DIR)/"' in commands
    assert not [c for c in commands if "pip" in c or "python" in c.lower()]


def test_the_local_python_is_not_the_runtime() -> None:
    # The local engine runs on 3.11 and later; Lambda runs the template's runtime.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"


def test_functions_use_one_blas_thread() -> None:
    # Lambda gives a 1,024 MB function about 0.58 of a vCPU: more BLAS threads only spin
    assert GLOBALS["Environment"]["Variables"]["SNN_BLAS_THREADS"] == "1"
    for props in FUNCTIONS.values():
        assert "SNN_BLAS_THREADS" not in props.get("Environment", {}).get("Variables", {})


def test_evaluate_has_time_for_the_widest_network() -> None:
    from snn import epoch
    from snn.parameters import Parameters
    from snn.stages import sampled_epochs

    # the most shards an epoch that fits one execution can have (two layers: the fewest fixed
    # events), and the most sampled epochs any run has
    fixed = epoch.EXECUTION_EVENT_BUDGET - epoch.EXECUTION_FIXED_EVENTS - (24 + 12 * 2)
    shards = fixed // 26
    one = Parameters.from_dict(
        {
            "epochs": 1,
            "layers": 1,
            "activations": {"layer1": "sigmoid"},
            "neurons": {"layer1": 1},
            "learning_rate": 0.1,
        }
    )
    samples = max(len(sampled_epochs(one.with_epochs(e))) for e in range(1, 2000))
    gets = shards * (samples + 2) + 4
    evaluate = FUNCTIONS[function_of("evaluate")]
    vcpu = evaluate["MemorySize"] / 1769  # Lambda: 1,769 MB is one vCPU
    latency = gets / 32 * 0.030  # 32 reads in flight, 30 ms each
    cpu = gets * 0.002 / vcpu  # about 2 ms of CPU per request
    assert evaluate["Timeout"] >= 3 * max(latency, cpu), (shards, samples, latency, cpu)
    assert evaluate["Timeout"] <= 900  # Lambda's maximum
    for number in (f"{shards} shards", f"{samples} of them", f"{gets:,} GETs"):
        assert number in TEMPLATE.read_text(encoding="utf-8"), number  # the comment's arithmetic


# --- the env files of `sam local invoke` ------------------------------------------------------


def test_env_files_for_a_deployed_stack_and_for_an_emulator() -> None:
    events = ROOT / "events"
    assert not (events / "env.json").exists()
    aws = json.loads((events / "env.aws.json").read_text(encoding="utf-8"))
    emulator = json.loads((events / "env.emulator.json").read_text(encoding="utf-8"))
    assert list(aws) == list(emulator) == ["Parameters"]
    assert set(aws["Parameters"]) == {"SNN_BUCKET", "SNN_TABLE"}
    assert set(emulator["Parameters"]) == {"SNN_BUCKET", "SNN_TABLE", "AWS_ENDPOINT_URL"}
    # `sam local invoke --env-vars` sets only variables the template declares; on AWS the
    # endpoint is empty, which boto3 takes as the service's own
    declared = GLOBALS["Environment"]["Variables"]
    assert set(emulator["Parameters"]) <= set(declared)
    assert declared["AWS_ENDPOINT_URL"] == ""
    readme = (events / "README.md").read_text(encoding="utf-8")
    for name in ("env.aws.json", "env.emulator.json"):
        assert f"--env-vars events/{name}" in readme
    assert "env.json" not in readme.replace("env.aws.json", "").replace("env.emulator.json", "")


def test_the_layer_check_accepts_only_wheels_the_runtime_can_load(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_layer", ROOT / "layer" / "check_layer.py")
    assert spec and spec.loader
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    fits = (
        "py3-none-any",
        "cp313-cp313-manylinux_2_28_aarch64",
        "cp311-abi3-manylinux2014_aarch64",
    )
    for tag in fits:
        assert check.tag_problem(tag, "cp313") is None, tag
    for tag in (
        "cp311-cp311-manylinux_2_28_aarch64",  # another Python
        "cp313-cp313-manylinux_2_28_x86_64",  # another machine
        "cp313-cp313-manylinux_2_35_aarch64",  # a newer glibc than Amazon Linux 2023's
        "cp313-cp313-musllinux_1_2_aarch64",
    ):
        assert check.tag_problem(tag, "cp313"), tag
    # a built folder: one wheel that fits, one library for another machine
    (tmp_path / "ok-1.0.dist-info").mkdir()
    (tmp_path / "ok-1.0.dist-info" / "WHEEL").write_text("Tag: py3-none-any\n")
    x86 = bytes([0x7F, 0x45, 0x4C, 0x46, 2, 1]) + bytes(12) + (62).to_bytes(2, "little")
    (tmp_path / "lib.so").write_bytes(x86)
    assert check.problems(tmp_path, "3.13") == ["lib.so: not an AArch64 library"]
