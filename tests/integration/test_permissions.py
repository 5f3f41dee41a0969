"""Least privilege, checked against what the handlers do: in a run on the local engine, every S3
and DynamoDB request a function makes is allowed by that function's policies in template.yaml
(SAM policy templates expanded from SAM's own definitions), and each function is granted no
action class it never uses."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from snn.engines import local, stack
from snn.template import load_yaml

from ..conftest import ROOT
from ..unit.handler_steps import tiny_parameters

samtranslator = pytest.importorskip("samtranslator")

# The IAM action each request needs (DeleteObjects deletes each key with s3:DeleteObject).
IAM_ACTION = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
}
DYNAMODB_WRITES = {f"dynamodb:{op}" for op in ("PutItem", "UpdateItem", "BatchWriteItem")}


class Recorder:
    """The (service, operation) requests each function makes while it is invoked."""

    def __init__(self) -> None:
        self.made: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._local = threading.local()

    def install(self, session: Any) -> None:
        events = session.events
        events.register("before-call.lambda.Invoke", self._starts, unique_id="perm-starts")
        events.register("after-call.lambda.Invoke", self._ends, unique_id="perm-ends")
        events.register("before-call.s3", self._request, unique_id="perm-s3")
        events.register("before-call.dynamodb", self._request, unique_id="perm-dynamodb")

    def _starts(self, params: dict[str, Any], **_: Any) -> None:
        self._local.function = local.invoked_function(params)

    def _ends(self, **_: Any) -> None:
        self._local.function = None

    def _request(self, model: Any, **_: Any) -> None:
        function = getattr(self._local, "function", None)
        if function:
            self.made[function].add((model.service_model.service_name, model.name))


def granted(function: dict[str, Any]) -> set[str]:
    """The actions a function's policies allow (on this stack's bucket and table)."""
    templates = json.loads(
        (
            Path(samtranslator.__file__).parent / "policy_templates_data/policy_templates.json"
        ).read_text()
    )["Templates"]
    actions: set[str] = set()
    for policy in function["Properties"].get("Policies", []):
        for name, value in policy.items():
            body = value if name == "Statement" else templates[name]["Definition"]["Statement"]
            for statement in body:
                allowed = statement["Action"]
                actions.update([allowed] if isinstance(allowed, str) else allowed)
    return actions


@pytest.mark.xdist_group("embedded")
def test_every_request_is_allowed_by_the_functions_policies(
    aws_env: None, synthetic_dir: Path
) -> None:
    recorder = Recorder()
    local.SESSION_HOOKS.append(recorder.install)
    try:
        with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
            st = embedded.stack
            event = stack.upload_inputs(st, "perm", tiny_parameters(epochs=3), synthetic_dir)
            (execution,) = stack.follow_run(st, "perm", stack.start(st, event, "perm"))
            assert execution.succeeded
    finally:
        local.SESSION_HOOKS.remove(recorder.install)

    resources = load_yaml(ROOT / "template.yaml")["Resources"]
    assert {"InitFunction", "LossFunction", "CommitFunction"} <= set(recorder.made)
    for name, made in recorder.made.items():
        allowed = granted(resources[name])
        needed = {IAM_ACTION.get(r, f"{r[0]}:{r[1]}") for r in made}
        assert needed <= allowed, f"{name} makes requests its policies do not allow"
        # no write or delete class granted to a function that never writes or deletes
        if not needed & DYNAMODB_WRITES:
            assert not DYNAMODB_WRITES & allowed, name
        if "s3:DeleteObject" not in needed:
            assert "s3:DeleteObject" not in allowed, name
    assert ("dynamodb", "PutItem") in recorder.made["LossFunction"]
