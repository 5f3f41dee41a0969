"""Reading template.yaml: the functions, the bucket, the table and the state machine, as the local
engine needs them to stand up the same stack in an emulator."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from snn.errors import SnnError


class TemplateError(SnnError):
    """template.yaml or the state machine definition cannot be used."""


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation's short tags (!Ref X -> {"Ref": "X"})."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot be read as a template ({exc})") from None


@dataclass(frozen=True)
class Function:
    logical_id: str
    handler: str  # module.path.function
    environment: dict[str, Any]


@dataclass(frozen=True)
class Template:
    path: Path
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Template:
        path = Path(path)
        if not path.is_file():
            raise TemplateError(f"{path}: no such template (run from the project folder)")
        return cls(path, load_yaml(path))

    @property
    def resources(self) -> dict[str, Any]:
        return self.raw.get("Resources", {})

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == kind}

    def one(self, kind: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(kind)
        if len(found) != 1:
            raise TemplateError(f"{self.path}: expected exactly one {kind}, found {len(found)}")
        ((logical_id, resource),) = found.items()
        return logical_id, resource.get("Properties", {})

    def functions(self) -> dict[str, Function]:
        glob = self.raw.get("Globals", {}).get("Function", {})
        env_glob = glob.get("Environment", {}).get("Variables", {})
        out = {}
        for logical_id, res in self.of_type("AWS::Serverless::Function").items():
            props = res.get("Properties", {})
            handler = props.get("Handler", glob.get("Handler"))
            if not handler:
                raise TemplateError(f"{self.path}: function {logical_id} has no Handler")
            env = {**env_glob, **props.get("Environment", {}).get("Variables", {})}
            out[logical_id] = Function(logical_id, handler, env)
        return out

    def state_machine(self) -> tuple[str, dict[str, Any]]:
        return self.one("AWS::Serverless::StateMachine")

    def definition(self, substitutions: dict[str, str]) -> str:
        """The state machine's definition file with its DefinitionSubstitutions applied.
        `substitutions` maps each logical id that a substitution refers to onto the value that
        stands for it here (an ARN or a name)."""
        _, props = self.state_machine()
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            raise TemplateError(f"{self.path}: the state machine needs a local DefinitionUri")
        path = self.path.parent / uri
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"{path}: cannot read the state machine ({exc})") from None
        values = {}
        for name, ref in props.get("DefinitionSubstitutions", {}).items():
            target = _referenced_id(ref)
            if target not in substitutions:
                raise TemplateError(f"{self.path}: substitution {name} refers to {ref!r}")
            values[name] = substitutions[target]

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise TemplateError(f"{path}: ${{{name}}} has no DefinitionSubstitutions entry")
            return values[name]

        text = re.sub(r"\$\{([A-Za-z0-9_]+)\}", replace, text)
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path}: not valid JSON after substitution ({exc})") from None
        return text


def _referenced_id(ref: Any) -> str | None:
    if isinstance(ref, dict):
        if "Ref" in ref:
            return ref["Ref"]
        if "Fn::GetAtt" in ref:
            return ref["Fn::GetAtt"][0]
    return None


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """A template value with !Ref / !GetAtt of known resources replaced by `refs`."""
    target = _referenced_id(value)
    if target is not None:
        if target not in refs:
            raise TemplateError(f"cannot resolve {value!r} outside AWS")
        return refs[target]
    return value
