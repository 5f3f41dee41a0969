"""`snn emulator` refuses bad input with one line and exit 2, before it stands anything up; its
environment file has events/env.emulator.json's variables; the served requests are routed by
their signature. (tests/integration/test_emulator_command.py runs it.)"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from snn.cli import main
from snn.commands.emulator import DEFAULT_PORT, environment
from tests.helpers import ROOT


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["emulator", *args])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = str(ROOT / "template.yaml")
    assert "nothing.yaml: no such template" in refused(capsys, "--template", "nothing.yaml")
    missing = tmp_path / "no" / "env.json"
    assert f"--env-file {missing}: no folder" in refused(
        capsys, "--template", template, "--env-file", str(missing)
    )
    assert "--port 70000: a port is 0 to 65535" in refused(
        capsys, "--template", template, "--port", "70000"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in refused(
            capsys, "--template", template, "--port", str(port)
        )
    assert not missing.parent.exists()


def test_the_environment_file_has_the_variables_of_env_emulator_json() -> None:
    shown = json.loads((ROOT / "events" / "env.emulator.json").read_text(encoding="utf-8"))
    made = environment("b", "t", DEFAULT_PORT)
    assert list(made) == list(shown) and list(made["Parameters"]) == list(shown["Parameters"])
    # the default port is the one the shipped file names
    assert made["Parameters"]["AWS_ENDPOINT_URL"] == shown["Parameters"]["AWS_ENDPOINT_URL"]
    assert made["Parameters"]["SNN_BUCKET"] == "b" and made["Parameters"]["SNN_TABLE"] == "t"


@pytest.mark.slow  # imports moto, behind the emulator's version gate
def test_requests_are_routed_by_their_signature() -> None:
    from snn.engines.local.served import aws_url, scope

    signed = (
        "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/dynamodb/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    assert scope(signed) == ("dynamodb", "eu-west-1")
    assert scope(None) is None and scope("Bearer x") is None
    assert aws_url("states", "us-east-1", "/", "") == "https://states.us-east-1.amazonaws.com/"
    assert (
        aws_url("s3", "eu-west-1", "/bucket/runs/a.npy", "x-id=GetObject")
        == "https://s3.amazonaws.com/bucket/runs/a.npy?x-id=GetObject"
    )
