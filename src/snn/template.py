"""Reading template.yaml: the functions, the bucket, the table, the state machine and the rule on
its executions' status, as the local engine needs them to stand up the same stack in an emulator
(and `snn bill` needs the state machine's definition)."""

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


# What Lambda uses when a function sets no Timeout or MemorySize.
LAMBDA_DEFAULT_TIMEOUT = 3
LAMBDA_DEFAULT_MEMORY_MB = 128
LAMBDA_DEFAULT_EPHEMERAL_MB = 512
EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"


@dataclass(frozen=True)
class Function:
    logical_id: str
    handler: str  # module.path.function
    environment: dict[str, Any]
    timeout: int = LAMBDA_DEFAULT_TIMEOUT  # seconds
    memory_mb: int = LAMBDA_DEFAULT_MEMORY_MB
    ephemeral_mb: int = LAMBDA_DEFAULT_EPHEMERAL_MB  # /tmp


@dataclass(frozen=True)
class StatusRule:
    """The EventBridge rule on this stack's executions: which final statuses it matches and the
    function it invokes with the "Step Functions Execution Status Change" event."""

    logical_id: str
    function: str  # logical id of the target function
    statuses: tuple[str, ...]

    def matches(self, status: str) -> bool:
        return status in self.statuses


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
            timeout = props.get("Timeout", glob.get("Timeout", LAMBDA_DEFAULT_TIMEOUT))
            memory = props.get("MemorySize", glob.get("MemorySize", LAMBDA_DEFAULT_MEMORY_MB))
            if not (_is_int(timeout) and _is_int(memory)):
                raise TemplateError(
                    f"{self.path}: function {logical_id} needs a literal Timeout and MemorySize"
                )
            storage = props.get("EphemeralStorage", glob.get("EphemeralStorage", {}))
            ephemeral = storage.get("Size", LAMBDA_DEFAULT_EPHEMERAL_MB)
            if not _is_int(ephemeral):
                raise TemplateError(
                    f"{self.path}: function {logical_id} needs a literal EphemeralStorage Size"
                )
            out[logical_id] = Function(
                logical_id, handler, env, int(timeout), int(memory), int(ephemeral)
            )
        return out

    def memory_limits(self) -> dict[str, int]:
        """The MemorySize of the function of each stage of a run (`snn.memory.FUNCTIONS`)."""
        from snn.memory import FUNCTIONS

        functions = self.functions()
        return {
            stage: functions[fid].memory_mb for stage, fid in FUNCTIONS.items() if fid in functions
        }

    def execution_status_rule(self) -> StatusRule:
        """The one rule that sends the execution status changes of this stack's state machine to
        a function: an AWS::Events::Rule that targets the function, or a function's event of
        type EventBridgeRule."""
        sm_id, _ = self.state_machine()
        functions = self.of_type("AWS::Serverless::Function")
        found: list[StatusRule] = []
        for rule_id, pattern, targets in self._status_change_rules(functions):
            detail = pattern.get("detail", {})
            machines = [_referenced_id(arn) for arn in _as_list(detail.get("stateMachineArn"))]
            if machines != [sm_id]:
                raise TemplateError(
                    f"{self.path}: rule {rule_id} must match the executions of {sm_id} alone"
                )
            statuses = tuple(str(s) for s in _as_list(detail.get("status")))
            if not statuses:
                raise TemplateError(f"{self.path}: rule {rule_id} matches no execution status")
            if len(targets) != 1 or targets[0] not in functions:
                raise TemplateError(f"{self.path}: rule {rule_id} must target exactly one function")
            found.append(StatusRule(rule_id, str(targets[0]), statuses))
        if len(found) != 1:
            raise TemplateError(
                f"{self.path}: expected one rule on {EXECUTION_STATUS_CHANGE!r} events, "
                f"found {len(found)}"
            )
        return found[0]

    def execution_status_target(self) -> str:
        """The logical id of the function the execution-status rule invokes."""
        return self.execution_status_rule().function

    def _status_change_rules(
        self, functions: dict[str, dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any], list[str | None]]]:
        """(rule id, event pattern, target logical ids) of every rule on the execution status
        changes that Step Functions sends."""
        rules: list[tuple[str, Any, list[str | None]]] = []
        for rule_id, res in self.of_type("AWS::Events::Rule").items():
            props = res.get("Properties", {})
            targets = [_referenced_id(t.get("Arn")) for t in props.get("Targets", [])]
            rules.append((rule_id, props.get("EventPattern"), targets))
        for function_id, res in functions.items():
            for event_id, event in res.get("Properties", {}).get("Events", {}).items():
                if event.get("Type") in ("EventBridgeRule", "CloudWatchEvent"):
                    pattern = event.get("Properties", {}).get("Pattern")
                    rules.append((f"{function_id}.{event_id}", pattern, [function_id]))
        return [
            (rule_id, pattern, targets)
            for rule_id, pattern, targets in rules
            if isinstance(pattern, dict)
            and "aws.states" in _as_list(pattern.get("source"))
            and EXECUTION_STATUS_CHANGE in _as_list(pattern.get("detail-type"))
        ]

    def state_machine(self) -> tuple[str, dict[str, Any]]:
        return self.one("AWS::Serverless::StateMachine")

    def definition_path(self) -> Path:
        _, props = self.state_machine()
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            raise TemplateError(f"{self.path}: the state machine needs a local DefinitionUri")
        return self.path.parent / uri

    def _definition_text(self) -> tuple[Path, str]:
        path = self.definition_path()
        try:
            return path, path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"{path}: cannot read the state machine ({exc})") from None

    def definition_document(self) -> dict[str, Any]:
        """The state machine's definition as written, placeholders and all (they sit inside
        JSON strings): its structure, for whoever walks its states."""
        path, text = self._definition_text()
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(document, dict) or not isinstance(document.get("States"), dict):
            raise TemplateError(f"{path}: not a state machine definition (no States)")
        return document

    def definition(self, substitutions: dict[str, str]) -> str:
        """The state machine's definition file with its DefinitionSubstitutions applied.
        `substitutions` maps each logical id or pseudo parameter (AWS::Partition, ...) that a
        substitution refers to onto the value that stands for it here (an ARN or a name); a
        substitution given as a literal string stands for itself."""
        _, props = self.state_machine()
        path, text = self._definition_text()
        values = {}
        for name, ref in props.get("DefinitionSubstitutions", {}).items():
            if isinstance(ref, str | int | float) and not isinstance(ref, bool):
                values[name] = str(ref)
                continue
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


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """A template value with !Ref / !GetAtt of known resources replaced by `refs`."""
    target = _referenced_id(value)
    if target is not None:
        if target not in refs:
            raise TemplateError(f"cannot resolve {value!r} outside AWS")
        return refs[target]
    return value
