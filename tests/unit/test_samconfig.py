"""The stack and region `snn train --engine aws` uses: the flags, else samconfig.toml (the deploy
table over the global one, as SAM reads it), else (the region) the AWS configuration; and the
project's own samconfig.toml against template.yaml and the docs' first deploy."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from unittest import mock

import pytest

from snn.cli import main
from snn.samconfig import ConfigError, deploy_parameters, target
from snn.template import load_yaml
from tests.helpers import ROOT, tiny_parameters


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(tiny_parameters(1).to_dict()))
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "samconfig.toml"
    path.write_text(text, encoding="utf-8")
    return path


GUIDED = """version = 0.1
[default.global.parameters]
stack_name = "snn"
region = "us-west-2"

[default.deploy.parameters]
stack_name = "my-snn"
region = "eu-west-1"
resolve_s3 = true
"""


def test_the_deploy_table_wins_over_the_global_one(tmp_path: Path, aws_env: None) -> None:
    got = target(None, None, write(tmp_path, GUIDED))
    assert (got.stack, got.region) == ("my-snn", "eu-west-1")
    where = str(tmp_path / "samconfig.toml")
    assert got.describe() == f"stack my-snn ({where}) in region eu-west-1 ({where})"
    assert got.session().region_name == "eu-west-1"


def test_the_global_table_alone(tmp_path: Path, aws_env: None) -> None:
    path = write(tmp_path, '[default.global.parameters]\nstack_name = "a"\nregion = "ap-south-1"')
    assert (target(None, None, path).stack, target(None, None, path).region) == ("a", "ap-south-1")


def test_the_flags_win(tmp_path: Path, aws_env: None) -> None:
    got = target("other", "sa-east-1", write(tmp_path, GUIDED))
    assert (got.stack, got.region) == ("other", "sa-east-1")
    assert got.describe() == "stack other (--stack) in region sa-east-1 (--region)"


def test_without_a_saved_region_the_aws_configuration_says(
    tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    got = target(None, None, write(tmp_path, '[default.global.parameters]\nstack_name = "s"\n'))
    assert got.region == "ca-central-1" and got.region_from == "the AWS configuration"
    got = target("s", None, tmp_path / "absent.toml")  # no file at all
    assert (got.stack, got.region) == ("s", "ca-central-1")


def test_nothing_names_a_stack_or_a_region(
    tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="--stack NAME, or stack_name in"):
        target(None, "us-east-1", tmp_path / "absent.toml")
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(ConfigError, match="no AWS region for stack s: --region NAME"):
        target("s", None, tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default.deploy.parameters\n", "not a valid TOML file"),
        ('[default.deploy.parameters]\nregion = 3\nstack_name = "s"', "region must be a non-empty"),
        ('[default.deploy.parameters]\nstack_name = ""', "stack_name must be a non-empty"),
    ],
)
def test_a_broken_samconfig_is_one_line(
    tmp_path: Path,
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    params: Path,
    text: str,
    message: str,
) -> None:
    write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--engine", "aws", "--params", str(params), "--out", "r"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_region_is_for_the_aws_engine_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], params: Path
) -> None:
    code = main(["train", "--params", str(params), "--region", "eu-west-1", "--out", "r"])
    assert code == 2 and "--region works with --engine aws only" in capsys.readouterr().err


# --- the project's samconfig.toml and the first deploy -------------------------------------------


def test_the_projects_samconfig_is_what_the_docs_say() -> None:
    """samconfig.toml names the stack, and leaves the region to `sam deploy --guided`, which
    saves the one the user answers in [default.deploy.parameters]."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    assert deploy_parameters(ROOT / "samconfig.toml") == {
        "stack_name": "snn",
        "capabilities": "CAPABILITY_IAM",
        "confirm_changeset": True,
        "resolve_s3": True,
    }
    assert config["default"]["validate"]["parameters"] == {"lint": True}


def doc_questions() -> list[tuple[str, str]]:
    """(question, default) of docs/aws.md's table of what `sam deploy --guided` asks."""
    doc = (ROOT / "docs" / "aws.md").read_text(encoding="utf-8")
    start = doc.index("| question | default | answer |")
    table = doc[start : doc.index("\n\n", start)]
    return [
        (row[0], row[1]) for row in re.findall(r"^\| (.+?) \| (.+?) \|", table, re.M)[1:]
    ]


def shown(default: object) -> str:
    """A prompt's default as the docs write it."""
    if isinstance(default, bool) or default is None:
        return "`Y`" if default else "`N`"
    return f"`{default}`"


@pytest.mark.slow  # imports the SAM CLI
def test_the_guided_deploy_asks_what_the_docs_say_and_snn_reads_its_answers(
    tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sam deploy --guided`'s own questions, on the project's template and samconfig.toml, up
    to where it would reach AWS: they are docs/aws.md's table, in its order, one per template
    parameter with the template's default; the answers it saves (region eu-west-1) are what
    `snn train --engine aws` then uses."""
    pytest.importorskip("samcli")
    import click
    from samcli.commands.deploy import guided_context as guided

    for name in ("template.yaml", "samconfig.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    asked: list[tuple[str, object]] = []

    def prompt(text: str, default: object = None, **_: object) -> object:
        asked.append((click.unstyle(text).strip(), default))
        return "eu-west-1" if asked[-1][0] == "AWS Region" else default

    def confirm(text: str, default: object = None, **_: object) -> object:
        asked.append((click.unstyle(text).strip(), default))
        return default

    monkeypatch.setattr(guided, "prompt", prompt)
    monkeypatch.setattr(guided, "confirm", confirm)
    # where the guided deploy would reach AWS: its managed stack and the image repositories
    monkeypatch.setattr(guided, "manage_stack", lambda **_: "aws-sam-cli-managed-default-bucket")
    monkeypatch.setattr(guided, "CompanionStackManager", mock.MagicMock())
    saved = deploy_parameters(ROOT / "samconfig.toml")
    context = guided.GuidedContext(
        template_file="template.yaml",
        stack_name=saved["stack_name"],
        s3_bucket=None,
        image_repository=None,
        image_repositories=None,
        s3_prefix=None,
        resolve_s3=saved["resolve_s3"],
        confirm_changeset=saved["confirm_changeset"],
        capabilities=(saved["capabilities"],),
        disable_rollback=False,
        config_section="parameters",
        config_env="default",
        config_file="samconfig.toml",
    )
    with click.Context(click.Command("deploy"), info_name="deploy"):
        context.run()

    documented = doc_questions()
    assert [q for q, _ in asked] == [q for q, _ in documented]
    for (question, default), (_, written) in zip(asked, documented, strict=True):
        if question != "AWS Region":  # the machine's own
            assert shown(default) == written, question
    parameters = load_yaml(ROOT / "template.yaml")["Parameters"]
    prompted = [q.removeprefix("Parameter ") for q, _ in asked if q.startswith("Parameter ")]
    assert prompted == list(parameters)
    for name, spec in parameters.items():
        assert (f"Parameter {name}", str(spec["Default"])) in asked

    got = target(None, None, tmp_path / "samconfig.toml")
    assert (got.stack, got.region) == ("snn", "eu-west-1")
    config = tomllib.loads((tmp_path / "samconfig.toml").read_text(encoding="utf-8"))
    assert config["default"]["deploy"]["parameters"]["region"] == "eu-west-1"
