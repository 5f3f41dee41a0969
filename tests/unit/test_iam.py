"""The local engine's IAM (snn.engines.local.iam): template.yaml's policies as SAM deploys them,
and IAM's evaluation of a request against them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from snn.engines.local import iam
from snn.engines.local.iam import Compiled, Request, decide
from snn.template import Template, TemplateError, load_yaml
from tests.helpers import ROOT

TEMPLATE = ROOT / "template.yaml"
NAMES = {"DataBucket": "b", "RunsTable": "t"}
TLS = (("aws:SecureTransport", "true"),)


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    return decide([Compiled(s, "test") for s in statements], request)[0]


def test_actions_and_resources_with_wildcards() -> None:
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/runs/*/data/*"}
    assert allowed([read], Request("s3:getobject", "arn:aws:s3:::b/runs/r1/data/train_x.npy"))
    assert allowed([read], Request("s3:GetObject", "arn:aws:s3:::b/runs/a/b/data/c"))
    assert not allowed([read], Request("s3:GetObject", "arn:aws:s3:::b/runs/r1/model.npz"))
    assert not allowed([read], Request("s3:GetObject", "arn:aws:s3:::B/runs/r1/data/x"))
    assert not allowed([read], Request("s3:PutObject", "arn:aws:s3:::b/runs/r1/data/x.npy"))
    any_get = {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/?"}
    assert allowed([any_get], Request("s3:GetObjectTagging", "arn:aws:s3:::b/k"))
    assert not allowed([any_get], Request("s3:GetObject", "arn:aws:s3:::b/kk"))
    assert not allowed([any_get], Request("s3:PutObject", "arn:aws:s3:::b/k"))
    assert not allowed([], Request("s3:GetObject", "arn:aws:s3:::b/k"))


def test_an_explicit_deny_wins_over_any_allow() -> None:
    read = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/runs/*"}
    both = [Compiled(read, ""), Compiled(deny, "")]
    assert decide(both, Request("s3:GetObject", "arn:aws:s3:::b/runs/x")) == (False, True)
    assert allowed([read, deny], Request("s3:GetObject", "arn:aws:s3:::b/scratch/x"))


def test_the_conditions_the_template_uses() -> None:
    listing = {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::b",
        "Condition": {"StringLike": {"s3:prefix": "scratch/*"}},
    }
    bucket = "arn:aws:s3:::b"
    assert allowed([listing], Request("s3:ListBucket", bucket, (("s3:prefix", "scratch/r/"),)))
    assert not allowed([listing], Request("s3:ListBucket", bucket, (("s3:prefix", "runs/"),)))
    assert not allowed([listing], Request("s3:ListBucket", bucket))  # no prefix: no match
    equals = {**listing, "Condition": {"StringEquals": {"s3:prefix": ["a/", "b/"]}}}
    assert allowed([equals], Request("s3:ListBucket", bucket, (("s3:prefix", "b/"),)))
    assert not allowed([equals], Request("s3:ListBucket", bucket, (("s3:prefix", "b/c"),)))
    # the bucket policy: deny anything over plain HTTP
    insecure = {
        "Effect": "Deny",
        "Action": "s3:*",
        "Resource": "arn:aws:s3:::b/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    over_tls = Request("s3:GetObject", "arn:aws:s3:::b/k", TLS)
    assert allowed([read, insecure], over_tls)
    plain = Request("s3:GetObject", "arn:aws:s3:::b/k", (("aws:SecureTransport", "false"),))
    assert not allowed([read, insecure], plain)


def test_what_it_cannot_evaluate_is_refused_when_loaded() -> None:
    for statement, word in (
        ({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}, "NotAction"),
        (
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"IpAddress": {}}},
            "IpAddress",
        ),
        ({"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}, "Effect"),
    ):
        with pytest.raises(TemplateError, match=word):
            Compiled(statement, "F")
    with pytest.raises(TemplateError, match="S3ReadPolicy"):
        iam.role_statements([{"S3ReadPolicy": {"BucketName": "b"}}])
    with pytest.raises(TemplateError, match="AmazonS3FullAccess"):
        iam.role_statements(["AmazonS3FullAccess"])


def test_intrinsic_functions_resolve_to_the_stacks_names() -> None:
    resolve = iam.Resolver(
        {"AWS::Region": "r", "T": "tab", "AWS::StackName": "s"},
        {("B", "Arn"): "arn:aws:s3:::bk"},
    )
    assert resolve({"Fn::Sub": "${B.Arn}/scratch/*"}) == "arn:aws:s3:::bk/scratch/*"
    assert resolve({"Fn::GetAtt": ["B", "Arn"]}) == "arn:aws:s3:::bk"
    assert resolve({"Fn::GetAtt": "B.Arn"}) == "arn:aws:s3:::bk"
    assert resolve({"Fn::Sub": ["${x}-${AWS::StackName}", {"x": {"Ref": "T"}}]}) == "tab-s"
    with pytest.raises(TemplateError, match="Nope"):
        resolve({"Ref": "Nope"})


def test_every_principal_of_the_template_has_its_policy() -> None:
    template = Template.load(TEMPLATE)
    refs, attributes = iam.embedded_names(template, "snn", "us-east-1", "123456789012", NAMES)
    policies = iam.Policies.from_template(template, refs, attributes)
    functions = set(template.of_type("AWS::Serverless::Function"))
    assert set(policies.statements) == functions | {"TrainingStateMachine"}
    assert attributes["TrainingStateMachine", "Name"] == "snn-training"
    commit = policies.compiled["CommitFunction"]
    query = Request("dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/t", TLS)
    assert decide(commit, query) == (True, False)
    assert not decide(policies.compiled["LossFunction"], query)[0]
    # the state machine may invoke the stages (and their versions), not Predict
    invoke = "arn:aws:lambda:us-east-1:123456789012:function:"
    machine = policies.compiled["TrainingStateMachine"]
    assert decide(machine, Request("lambda:InvokeFunction", invoke + "CommitFunction:1"))[0]
    assert not decide(machine, Request("lambda:InvokeFunction", invoke + "PredictFunction"))[0]


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


def normal(statement: dict[str, Any]) -> str:
    """A statement with its lists as lists, for comparison."""
    out = {k: v for k, v in statement.items() if k != "Sid"}
    for k in ("Action", "Resource"):
        out[k] = sorted(iam._as_list(out[k]))
    return json.dumps(out, sort_keys=True)


@pytest.mark.slow
def test_the_policies_are_those_sam_deploys() -> None:
    """Each principal's statements, as the engine expands and resolves them, are those of the
    role SAM's own translator makes for it (with the same resolution), and the role has only
    the Logs policy besides."""
    pytest.importorskip("samtranslator")
    template = Template.load(TEMPLATE)
    refs, attributes = iam.embedded_names(template, "snn", "us-east-1", "123456789012", NAMES)
    policies = iam.Policies.from_template(template, refs, attributes)
    resolve = iam.Resolver(refs, attributes)
    resources = translated_template()["Resources"]
    for principal, statements in policies.statements.items():
        res = resources[principal]
        role_id = res["Properties"]["RoleArn" if "RoleArn" in res["Properties"] else "Role"]
        role = resources[role_id["Fn::GetAtt"][0]]["Properties"]
        deployed = [
            resolve(s)
            for policy in role.get("Policies", [])
            for s in policy["PolicyDocument"]["Statement"]
        ]
        assert sorted(map(normal, statements)) == sorted(map(normal, deployed)), principal
        managed = [str(resolve(a)) for a in role.get("ManagedPolicyArns", [])]
        assert all(a.endswith("/" + iam.BASIC_EXECUTION) for a in managed), (principal, managed)
