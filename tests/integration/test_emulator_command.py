"""`snn emulator` in its own process, used as `sam local invoke` and `snn train --engine aws` use
it: over HTTP, from other processes.

- a handler run in another process with the printed environment file (events/env.emulator.json's
  variables, the endpoint as this machine reaches it) reads and writes the served bucket and
  table, stage after stage, on the sample events;
- an execution started over HTTP runs the state machine to its end, bit for bit as the direct
  engine;
- `snn train --engine aws` takes the stack's region from samconfig.toml, not from the machine's
  default region;
- Ctrl-C and SIGTERM stop it with one line, exit 0; a port in use is one line, exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import snn
from snn.engines import direct
from tests.helpers import FAKE_AWS_ENV, ROOT, spec, tiny_parameters

pytestmark = pytest.mark.slow  # each test starts processes that stand the stack up
EVENTS = ROOT / "events"
SOURCE = str(Path(snn.__file__).resolve().parents[1])


def snn_process(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snn.cli", *args],
        cwd=cwd,
        env=process_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment with fake credentials (no real account can be reached) and no
    endpoint or profile of the user's, the snn package this test imports first on the path, and
    `extra` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_PROFILE")}
    path = os.pathsep.join(p for p in (SOURCE, env.get("PYTHONPATH")) if p)
    return {**env, **FAKE_AWS_ENV, "PYTHONPATH": path, **extra}


@dataclass
class Emulator:
    process: subprocess.Popen[str]
    env_file: dict[str, Any]  # as printed
    written: Path  # as written by --env-file
    banner: str

    @property
    def port(self) -> int:
        return int(self.env_file["Parameters"]["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        ).client(service, endpoint_url=self.endpoint)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


def start_emulator(folder: Path) -> Emulator:
    written = folder / "env.json"
    process = snn_process("emulator", "--port", "0", "--env-file", str(written))
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    for line in process.stdout:  # the environment file, printed once the stack is up
        lines.append(line)
        if line.rstrip() == "}":
            break
    else:
        process.wait(timeout=60)
        raise AssertionError(f"the emulator ended: {process.stderr.read()}")
    banner = process.stderr.readline()
    process.stderr.readline()  # "in memory until stopped ..."
    return Emulator(process, json.loads("".join(lines)), written, banner)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    served = start_emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.communicate(timeout=60)


def run_handler(emulator: Emulator, name: str, event: Path) -> dict[str, Any]:
    """A handler in its own process, with the environment file's variables, as
    `sam local invoke` gives them to its container; the endpoint as this machine reaches it."""
    variables = dict(emulator.env_file["Parameters"])
    variables["AWS_ENDPOINT_URL"] = variables["AWS_ENDPOINT_URL"].replace(
        "host.docker.internal", "127.0.0.1"
    )
    code = (
        "import json, sys\n"
        f"from snn.handlers.{name} import handler\n"
        "print(json.dumps(handler(json.load(open(sys.argv[1])), None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(event)],
        env=process_env(**variables),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def upload_sample_inputs(emulator: Emulator, data: Path) -> None:
    """What events/README.md has a user upload before Init: the data under the keys of
    init.json, and the seed's network with one epoch."""
    s3 = emulator.client("s3")
    bucket = emulator.env_file["Parameters"]["SNN_BUCKET"]
    keys = json.loads((EVENTS / "init.json").read_text(encoding="utf-8"))["input"]
    for field, file in (("train_key", "train_catvnoncat.h5"), ("test_key", "test_catvnoncat.h5")):
        s3.put_object(Bucket=bucket, Key=keys[field], Body=(data / file).read_bytes())
    p = json.loads((ROOT / "parameters.json").read_text(encoding="utf-8"))
    s3.put_object(Bucket=bucket, Key=keys["parameters_key"], Body=json.dumps({**p, "epochs": 1}))


def test_the_env_file_is_events_env_emulator_filled_in(emulator: Emulator) -> None:
    shown = json.loads((EVENTS / "env.emulator.json").read_text(encoding="utf-8"))
    printed = emulator.env_file
    assert json.loads(emulator.written.read_text(encoding="utf-8")) == printed
    assert list(printed) == list(shown) == ["Parameters"]
    assert list(printed["Parameters"]) == list(shown["Parameters"])
    assert printed["Parameters"]["AWS_ENDPOINT_URL"] == f"http://host.docker.internal:{emulator.port}"
    for name in ("SNN_BUCKET", "SNN_TABLE"):
        assert printed["Parameters"][name] in emulator.banner
    assert f"http://127.0.0.1:{emulator.port}/ in region us-east-1" in emulator.banner
    # a request that names no service and region (unsigned) is refused, as AWS refuses it
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{emulator.endpoint}/{printed['Parameters']['SNN_BUCKET']}")
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["__type"] == "MissingAuthenticationToken"


def test_handlers_in_other_processes_read_and_write_the_served_stack(
    emulator: Emulator, data_dir: Path, tmp_path: Path
) -> None:
    """Init on events/init.json (the real data set, which its keys name by sha256), then
    ForwardLinear and Activation on theirs: each reads what the one before wrote, through the
    emulator. Then ContinueAsNew, with the emulator's state machine in place of the event's,
    hands the run to an execution that trains it to its end in the emulator, and Predict
    classifies with the finished run's model: what docs/aws.md says each event needs first."""
    bucket = emulator.env_file["Parameters"]["SNN_BUCKET"]
    table = emulator.env_file["Parameters"]["SNN_TABLE"]
    upload_sample_inputs(emulator, data_dir)

    plan = run_handler(emulator, "init", EVENTS / "init.json")
    assert plan["run_id"] == "sample" and plan["epochs"] == 1
    record = emulator.client("dynamodb").get_item(
        TableName=table, Key={"run_id": {"S": "sample"}, "entry": {"S": "run"}}
    )["Item"]
    assert record["status"] == {"S": "RUNNING"} and record["execution"] == {"S": "sample"}
    listed = emulator.client("s3").list_objects_v2(Bucket=bucket, Prefix="runs/sample/data/")
    assert {o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]} >= {
        "train_x.npy",
        "train_y.npy",
    }

    for stage in ("forward_linear", "activation"):
        run_handler(emulator, stage, EVENTS / f"{stage}.json")
    event = json.loads((EVENTS / "activation.json").read_text(encoding="utf-8"))
    prefix = f"scratch/sample/step/{0:09d}/"
    written = emulator.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    names = {o["Key"].removeprefix(prefix) for o in written}
    shard = f"layer{event['layer']:03d}/shard{event['shard']:05d}.npy"
    assert {f"Z/{shard}", f"A/{shard}"} <= names, names

    handover = json.loads((EVENTS / "continue_as_new.json").read_text(encoding="utf-8"))
    handover["state_machine_arn"] = state_machine_arn(emulator)
    (tmp_path / "continue_as_new.json").write_text(json.dumps(handover), encoding="utf-8")
    answer = run_handler(emulator, "continue_as_new", tmp_path / "continue_as_new.json")
    assert answer == {"execution_name": "sample-e0000000"}
    deadline = time.monotonic() + 120
    while (status := record_status(emulator, table)) == "RUNNING":
        assert time.monotonic() < deadline, "the handed-over execution did not end"
        time.sleep(0.2)
    assert status == "SUCCEEDED"
    emulator.client("s3").head_object(Bucket=bucket, Key="runs/sample/model.npz")
    predicted = run_handler(emulator, "predict", EVENTS / "predict.json")
    assert predicted["run_id"] == "sample" and predicted["label"] in ("cat", "non-cat")


def state_machine_arn(emulator: Emulator) -> str:
    banner = emulator.banner
    return banner[banner.index("state machine ") + len("state machine ") :].split()[0]


def record_status(emulator: Emulator, table: str) -> str:
    item = emulator.client("dynamodb").get_item(
        TableName=table, Key={"run_id": {"S": "sample"}, "entry": {"S": "run"}}
    )["Item"]
    return str(item["status"]["S"])


def test_an_execution_started_over_http_runs_the_state_machine(
    emulator: Emulator, synthetic_dir: Path
) -> None:
    from snn.engines.stack import Stack, create_run, start

    parameters = emulator.env_file["Parameters"]
    st = Stack(
        parameters["SNN_BUCKET"],
        parameters["SNN_TABLE"],
        state_machine_arn(emulator),
        emulator.client("s3"),
        emulator.client("dynamodb"),
        emulator.client("stepfunctions"),
    )
    p = tiny_parameters(epochs=3)
    execution = start(st, create_run(st, "over-http", p, synthetic_dir), "over-http")
    deadline = time.monotonic() + 120
    while (status := st.sfn.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not end"
        time.sleep(0.2)
    assert status == "SUCCEEDED"
    record = st.runs.get("over-http")
    assert record is not None and record["status"] == "SUCCEEDED"
    want = direct.train(spec(p, synthetic_dir, "over-http")).costs
    assert [float(record["costs"][str(e)]) for e in range(3)] == want


def deployed_over_http(emulator: Emulator, name: str) -> None:
    """Stands in for `sam deploy` (as tests.helpers.deployed does in-process): a CloudFormation
    stack whose outputs name the served bucket, table and state machine."""
    outputs = {
        "BucketName": emulator.env_file["Parameters"]["SNN_BUCKET"],
        "TableName": emulator.env_file["Parameters"]["SNN_TABLE"],
        "StateMachineArn": state_machine_arn(emulator),
    }
    template = {
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    emulator.client("cloudformation").create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )


def test_train_on_aws_takes_the_region_from_samconfig(
    emulator: Emulator, synthetic_dir: Path, tmp_path: Path
) -> None:
    """The stack is in us-east-1; the machine's default region is eu-west-1. samconfig.toml (as
    `sam deploy --guided` saves it) names the stack and its region: the run trains there, and
    says so. Without the saved region, or with --region elsewhere, the stack is not found."""
    deployed_over_http(emulator, "snn-rehearsal")
    params = tmp_path / "p.json"
    p = tiny_parameters(epochs=2)
    params.write_text(p.to_json(), encoding="utf-8")
    config = tmp_path / "samconfig.toml"
    config.write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "snn-rehearsal"\n\n'
        '[default.deploy.parameters]\nregion = "us-east-1"\nresolve_s3 = true\n',
        encoding="utf-8",
    )
    env = {"AWS_ENDPOINT_URL": emulator.endpoint, "AWS_DEFAULT_REGION": "eu-west-1"}
    env["AWS_REGION"] = "eu-west-1"
    args = ["train", "--engine", "aws", "--params", str(params), "--data", str(synthetic_dir)]

    trained = snn_process(*args, "--run-id", "rehearsal", "--out", "run", cwd=tmp_path, **env)
    _, err = trained.communicate(timeout=300)
    assert trained.returncode == 0, err
    said = [line for line in err.splitlines() if line.startswith("aws engine:")]
    assert said == [
        "aws engine: stack snn-rehearsal (samconfig.toml) in region us-east-1 (samconfig.toml)"
    ]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["costs"] == direct.train(spec(p, synthetic_dir, "rehearsal")).costs

    elsewhere = snn_process(*args, "--region", "eu-west-1", "--out", "r2", cwd=tmp_path, **env)
    _, err = elsewhere.communicate(timeout=120)
    assert elsewhere.returncode == 2
    assert "cannot read stack 'snn-rehearsal' in eu-west-1" in err
    assert "stack snn-rehearsal (samconfig.toml) in region eu-west-1 (--region)" in err

    config.write_text('[default.global.parameters]\nstack_name = "snn-rehearsal"\n')
    unsaved = snn_process(*args, "--out", "r3", cwd=tmp_path, **env)
    _, err = unsaved.communicate(timeout=120)
    assert unsaved.returncode == 2 and "cannot read stack 'snn-rehearsal' in eu-west-1" in err
    assert "in region eu-west-1 (the AWS configuration)" in err
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_it_with_one_line(tmp_path: Path, signum: int) -> None:
    served = start_emulator(tmp_path)
    code, err = served.stop(signum)
    assert code == 0 and err.splitlines() == ["snn emulator: stopped"], err


def test_a_port_in_use_is_one_line(emulator: Emulator) -> None:
    taken = snn_process("emulator", "--port", str(emulator.port))
    out, err = taken.communicate(timeout=120)
    assert taken.returncode == 2 and out == ""
    assert err.strip().splitlines() == [
        f"snn: error: cannot listen on 127.0.0.1:{emulator.port}: Address already in use"
    ]
