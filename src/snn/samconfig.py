"""Which deployed stack `snn` talks to, and in which region: `--stack` and `--region` if given,
else what `sam deploy --guided` saved in samconfig.toml, else (the region) the AWS configuration
of this machine (AWS_DEFAULT_REGION, the profile's region).

SAM reads its parameters from the `default` environment of samconfig.toml, a command's own
table (`[default.deploy.parameters]`) over the table every command shares
(`[default.global.parameters]`); so does `snn`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snn.errors import SnnError

CONFIG = Path("samconfig.toml")
TABLES = (("default", "deploy", "parameters"), ("default", "global", "parameters"))


class ConfigError(SnnError):
    pass


@dataclass(frozen=True)
class Target:
    stack: str
    region: str
    stack_from: str  # where each came from, in words
    region_from: str

    def describe(self) -> str:
        """The one line that says which stack and region a command uses, and why."""
        return (
            f"stack {self.stack} ({self.stack_from}) in region {self.region} ({self.region_from})"
        )

    def session(self) -> Any:
        """A boto3 session in the target's region: every client made from it goes there."""
        import boto3

        return boto3.Session(region_name=self.region)


def deploy_parameters(path: Path = CONFIG) -> dict[str, Any]:
    """The parameters `sam deploy` takes from the file (none if there is no file)."""
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None
    found: dict[str, Any] = {}
    for keys in reversed(TABLES):  # the command's own table last, so that it wins
        table: Any = document
        for key in keys:
            table = table.get(key, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict):
            found.update(table)
    return found


def target(stack: str | None, region: str | None, path: Path = CONFIG) -> Target:
    """The stack and region to use: the flags, else samconfig.toml, else (the region) boto3's
    own configuration. Raises ConfigError if either is nowhere."""
    saved = deploy_parameters(path)
    for name in ("stack_name", "region"):
        if name in saved and (not isinstance(saved[name], str) or not saved[name].strip()):
            raise ConfigError(f"{path}: {name} must be a non-empty string, got {saved[name]!r}")
    if stack:
        stack_from = "--stack"
    elif saved.get("stack_name"):
        stack, stack_from = saved["stack_name"], str(path)
    else:
        raise ConfigError(
            f"--engine aws needs the deployed stack's name: --stack NAME, or stack_name in {path}"
        )
    if region:
        region_from = "--region"
    elif saved.get("region"):
        region, region_from = saved["region"], str(path)
    else:
        import boto3

        region, region_from = boto3.Session().region_name, "the AWS configuration"
        if not region:
            raise ConfigError(
                f"no AWS region for stack {stack}: --region NAME, region in {path}, or "
                "AWS_DEFAULT_REGION"
            )
    return Target(stack, region, stack_from, region_from)


__all__ = ["CONFIG", "ConfigError", "Target", "deploy_parameters", "target"]
