"""Least privilege, checked both ways against what the handlers do.

The policies are template.yaml's as deployed: translated by SAM's own translator into IAM roles,
their intrinsic functions resolved for a stack. The requests are every S3, DynamoDB and Step
Functions request each function makes while the embedded stack trains a run across two
executions (so that ContinueAsNew hands it over), serves two predictions, and fails two runs
(RecordFailure, and ExecutionFailed as the execution-status rule invokes it), each request with
the resource it names (object key, bucket and listed prefix, table, state machine, execution).

- Every request is allowed by the function's policies (IAM's matching of actions, resources
  with wildcards, and StringLike / StringEquals conditions).
- Every (action, resource) a function's policies grant is used by some request of that function:
  nothing is granted that the code never does.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from snn import epoch, keys
from snn.engines import local
from snn.engines.local import ACCOUNT, REGION, EmbeddedStack, LambdaService
from snn.engines.local.embedded import EMULATOR_ENV, status_change_event
from snn.engines.stack import create_run, start
from snn.metering import invocations_reach_thread_pools
from snn.parameters import Parameters
from snn.stores.matrices import S3Store
from snn.template import load_yaml
from tests.helpers import ROOT

samtranslator = pytest.importorskip("samtranslator")

TEMPLATE = ROOT / "template.yaml"
STACK = "snn"  # the stack name the policies are resolved for
# The managed policy SAM gives every function role: CloudWatch Logs only (logs:CreateLogGroup,
# logs:CreateLogStream, logs:PutLogEvents); no S3, DynamoDB or Step Functions action.
LOGS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


# --- the policies as deployed ------------------------------------------------------------------


def translated_template() -> dict[str, Any]:
    """template.yaml through SAM's translator, with the local paths SAM CLI would upload
    replaced by S3 locations (as `sam validate` does)."""
    from samtranslator.translator.transform import transform

    template = load_yaml(TEMPLATE)
    template["Globals"]["Function"]["CodeUri"] = "s3://snn-code/code.zip"
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::LayerVersion":
            res["Properties"]["ContentUri"] = "s3://snn-code/layer.zip"
        if res["Type"] == "AWS::Serverless::StateMachine":
            props = res["Properties"]
            uri = props.pop("DefinitionUri")
            props["Definition"] = json.loads((TEMPLATE.parent / uri).read_text(encoding="utf-8"))

    class NoManagedPolicyNames:
        def load(self) -> dict[str, str]:
            return {}

    return transform(template, {}, NoManagedPolicyNames())


class Resolver:
    """Resolves the intrinsic functions of policies for one stack: its bucket and table names
    (the embedded stack's), its state machine (named after the stack) and pseudo parameters."""

    def __init__(self, resources: dict[str, Any], bucket: str, table: str) -> None:
        self.resources = resources
        self.refs = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": STACK,
        }
        self.attributes: dict[tuple[str, str], str] = {}
        for name, res in resources.items():
            kind = res["Type"]
            if kind == "AWS::S3::Bucket":
                self.refs[name] = bucket
                self.attributes[name, "Arn"] = f"arn:aws:s3:::{bucket}"
            elif kind == "AWS::DynamoDB::Table":
                self.refs[name] = table
                self.attributes[name, "Arn"] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
            elif kind == "AWS::StepFunctions::StateMachine":
                machine = f"{STACK}-training"
                self.refs[name] = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"
                self.attributes[name, "Name"] = machine
            elif kind == "AWS::Lambda::Function":
                self.refs[name] = name
                self.attributes[name, "Arn"] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.refs[value["Ref"]]
        if set(value) == {"Fn::GetAtt"}:
            name, attribute = value["Fn::GetAtt"]
            return self.attributes[name, attribute]
        if set(value) == {"Fn::Sub"}:
            text, names = value["Fn::Sub"], {}
            if isinstance(text, list):
                text, names = text[0], {k: self(v) for k, v in text[1].items()}

            def lookup(token: str) -> str:
                if token in names:
                    return names[token]
                if "." in token:
                    return self.attributes[tuple(token.split(".", 1))]  # type: ignore[index]
                return self.refs[token]

            out, rest = "", text
            while "${" in rest:
                before, _, after = rest.partition("${")
                token, _, rest = after.partition("}")
                out += before + lookup(token)
            return out + rest
        return {k: self(v) for k, v in value.items()}


def function_statements(translated: dict[str, Any], resolve: Resolver) -> dict[str, list[dict]]:
    """Each function's policy statements, resolved, from the role SAM made for it."""
    resources = translated["Resources"]
    out = {}
    for name, res in resources.items():
        if res["Type"] != "AWS::Lambda::Function":
            continue
        role = resources[res["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        assert [resolve(a) for a in role.get("ManagedPolicyArns", [])] == [LOGS_POLICY], name
        out[name] = [
            resolve(statement)
            for policy in role.get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ]
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, case: bool = True) -> bool:
    """IAM's wildcards: * any run of characters (slashes included), ? one character."""
    return fnmatch.fnmatchcase(value, pattern) if case else _like(pattern.lower(), value.lower())


def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            value = context.get(key)
            if value is None:
                return False
            if operator == "StringLike":
                ok = any(_like(w, value) for w in _as_list(wanted))
            elif operator == "StringEquals":
                ok = value in _as_list(wanted)
            else:
                raise AssertionError(f"the test does not evaluate condition {operator}")
            if not ok:
                return False
    return True


def statement_allows(statement: dict[str, Any], request: Request) -> bool:
    return (
        any(_like(a, request.action, case=False) for a in _as_list(statement["Action"]))
        and any(_like(r, request.resource) for r in _as_list(statement["Resource"]))
        and _conditions_hold(statement.get("Condition", {}), request.context)
    )


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    matching = [s for s in statements if statement_allows(s, request)]
    return bool(matching) and all(s["Effect"] == "Allow" for s in matching)


# --- the requests each function makes ---------------------------------------------------------


class Request:
    """One IAM-authorised request: the action, the resource it names, its condition keys."""

    def __init__(self, action: str, resource: str, context: dict[str, str] | None = None) -> None:
        self.action, self.resource, self.context = action, resource, context or {}

    def __repr__(self) -> str:
        extra = f" {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}"


class Recorder:
    """The requests each function makes while it is invoked, on any of its threads."""

    SERVICES = ("s3", "dynamodb", "stepfunctions")

    def __init__(self) -> None:
        self.made: dict[str, list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
        self.local = threading.local()
        self._lock = threading.Lock()

    def install(self, session: Any) -> None:
        for service in self.SERVICES:
            session.events.register(
                f"provide-client-params.{service}", self._params, unique_id=f"perm-{service}"
            )

    def wrap(self, invoke: Any) -> Any:
        """LambdaService.invoke, with the function known to every request it makes. Every
        invocation starts cold: here all functions share one process, and what one function
        read into its warm cache would spare another a request it makes on AWS."""

        def invoke_as(service: LambdaService, name: str, event: Any) -> Any:
            cold_start()
            self.local.function = name
            try:
                return invoke(service, name, event)
            finally:
                self.local.function = None

        return invoke_as

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        function = getattr(self.local, "function", None)
        if function:
            service = model.service_model.service_name
            with self._lock:
                self.made[function].append((service, model.name, dict(params)))

    def requests(self, function: str, machine: str) -> list[Request]:
        """The function's requests as IAM sees them; the embedded state machine's name becomes
        the stack's (`machine`)."""
        out = []
        for service, operation, params in self.made[function]:
            out.extend(_as_iam(service, operation, params, machine))
        return out


def cold_start() -> None:
    """Forget what warm functions keep between invocations: matrices, stores and what they know
    of each run, models."""
    from snn import handlers
    from snn.handlers import predict

    S3Store.forget_cached()
    handlers.reset()
    predict.reset()


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


def _as_iam(service: str, operation: str, params: dict[str, Any], machine: str) -> list[Request]:
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        if operation in ("GetObject", "HeadObject"):
            return [Request("s3:GetObject", f"{bucket}/{params['Key']}")]
        if operation in ("PutObject", "DeleteObject"):
            return [Request(f"s3:{operation}", f"{bucket}/{params['Key']}")]
        if operation == "DeleteObjects":  # authorised as s3:DeleteObject of each key
            keys_ = [o["Key"] for o in params["Delete"]["Objects"]]
            return [Request("s3:DeleteObject", f"{bucket}/{k}") for k in keys_]
        if operation in ("ListObjectsV2", "ListObjects"):
            return [Request("s3:ListBucket", bucket, {"s3:prefix": params.get("Prefix", "")})]
        return [Request(f"s3:{operation}", bucket)]
    if service == "dynamodb":
        table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{params['TableName']}"
        return [Request(f"dynamodb:{operation}", table)]
    arn = params.get("stateMachineArn") or params.get("executionArn") or "*"
    for kind in ("stateMachine", "execution"):
        prefix = f"arn:aws:states:{REGION}:{ACCOUNT}:{kind}:"
        if arn.startswith(prefix):
            rest = arn.removeprefix(prefix).split(":", 1)
            arn = prefix + ":".join([machine, *rest[1:]])
    return [Request(f"states:{operation}", arn)]


# --- the runs ---------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorder, dict]]:
    from snn.data import synthetic_images, write_h5_pair

    data = write_h5_pair(tmp_path_factory.mktemp("perm") / "data", *synthetic_images())
    recorder = Recorder()
    p = parameters(epochs=4)
    with pytest.MonkeyPatch.context() as mp, ExitStack() as stack:
        for k, v in EMULATOR_ENV.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        # two steps (full batch: epochs) per execution: the run is handed over once (ContinueAsNew)
        budget = epoch.EXECUTION_FIXED_EVENTS + 2 * epoch.events_per_step(p)
        mp.setattr(epoch, "EXECUTION_EVENT_BUDGET", budget)
        mp.setattr(LambdaService, "invoke", recorder.wrap(LambdaService.invoke))
        started_before = StartedBefore()
        for hook in (recorder.install, started_before.install):
            local.SESSION_HOOKS.append(hook)
            stack.callback(local.SESSION_HOOKS.remove, hook)
        stack.enter_context(invocations_reach_thread_pools(recorder.local))
        embedded = stack.enter_context(EmbeddedStack(TEMPLATE))
        st = embedded.stack
        assert st is not None

        # a run of 4 epochs in two executions: every stage, Commit deleting old epochs
        event = create_run(st, "perm", p, data)
        start(st, event, name="perm")
        assert finish(embedded, "perm") == "SUCCEEDED"
        executions = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
        assert len(executions) == 2, executions

        # Predict: a picture in the event, and one uploaded to the bucket
        picture = png()
        key = f"uploads/{hashlib.sha256(picture).hexdigest()}/cat.png"
        st.s3.put_object(Bucket=st.bucket, Key=key, Body=picture)
        invoke(embedded, "PredictFunction", {"run_id": "perm", "image_key": key})
        encoded = base64.b64encode(picture).decode()
        invoke(embedded, "PredictFunction", {"run_id": "perm", "image_base64": encoded})

        # RecordFailure, on a run that a stage failed in (the state machine's Catch)
        failing = create_run(st, "perm-failed", p, data)
        invoke(embedded, "InitFunction", {"input": failing, "execution_name": "perm-failed"})
        failure = {"run_id": "perm-failed", "error": "States.TaskFailed", "cause": "a test"}
        failure["execution_name"] = "perm-failed"
        invoke(embedded, "RecordFailureFunction", failure)
        assert st.runs.get("perm-failed")["status"] == "FAILED"

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

        names = {"bucket": st.bucket, "table": st.table, "machine": st.state_machine_arn}
        yield recorder, names


@pytest.fixture(scope="module")
def policies(recorded: tuple[Recorder, dict]) -> dict[str, list[dict]]:
    _, names = recorded
    translated = translated_template()
    resolve = Resolver(translated["Resources"], names["bucket"], names["table"])
    return function_statements(translated, resolve)


def requests_of(recorded: tuple[Recorder, dict], function: str) -> list[Request]:
    recorder, names = recorded
    machine = names["machine"].rsplit(":", 1)[-1]
    return [_rename(r, machine, f"{STACK}-training") for r in recorder.requests(function, machine)]


def _rename(request: Request, embedded_machine: str, machine: str) -> Request:
    return Request(
        request.action,
        request.resource.replace(f":{embedded_machine}", f":{machine}"),
        request.context,
    )


FUNCTIONS = sorted(
    name
    for name, res in load_yaml(TEMPLATE)["Resources"].items()
    if res["Type"] == "AWS::Serverless::Function"
)


@pytest.mark.xdist_group("embedded")
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.slow
def test_every_request_is_allowed(
    recorded: tuple[Recorder, dict], policies: dict[str, list[dict]], function: str
) -> None:
    made = requests_of(recorded, function)
    assert made, f"{function} made no request in the test runs"
    refused = [r for r in made if not allowed(policies[function], r)]
    assert not refused, f"{function}: not allowed by its policies: {sorted(map(repr, refused))}"


@pytest.mark.xdist_group("embedded")
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.slow
def test_every_grant_is_used(
    recorded: tuple[Recorder, dict], policies: dict[str, list[dict]], function: str
) -> None:
    made = requests_of(recorded, function)
    unused = []
    for statement in policies[function]:
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                narrow = {**statement, "Action": action, "Resource": resource}
                if not any(statement_allows(narrow, r) for r in made):
                    unused.append(f"{action} on {resource}")
    assert not unused, f"{function}: granted but never used: {unused}"


def test_the_evaluator_is_iams() -> None:
    # the matching the two tests above rely on
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/runs/*/data/*"}
    assert allowed([read], Request("s3:getobject", "arn:aws:s3:::b/runs/r1/data/train_x.npy"))
    assert not allowed([read], Request("s3:GetObject", "arn:aws:s3:::b/runs/r1/model.npz"))
    assert not allowed([read], Request("s3:PutObject", "arn:aws:s3:::b/runs/r1/data/x.npy"))
    listing = {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::b",
        "Condition": {"StringLike": {"s3:prefix": "scratch/*"}},
    }
    assert allowed(
        [listing], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "scratch/r/"})
    )
    assert not allowed(
        [listing], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "runs/"})
    )
    assert not allowed([listing], Request("s3:ListBucket", "arn:aws:s3:::b"))
    deny = {**read, "Effect": "Deny"}
    assert not allowed([read, deny], Request("s3:GetObject", "arn:aws:s3:::b/runs/r/data/x"))
