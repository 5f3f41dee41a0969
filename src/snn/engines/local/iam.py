"""IAM, enforced on every request the local engine's functions and state machine make.

Each function's policy statements are template.yaml's as deployed: SAM's policy templates the
template uses expanded (`sam_policies`), intrinsic functions (`!Sub`, `!GetAtt`, `!Ref`)
resolved to the embedded stack's names and ARNs. Every S3, DynamoDB, Step Functions and Lambda
request is evaluated as IAM evaluates it, for what the template uses: actions and resources with
wildcards (`*`, `?`), an explicit Deny over any Allow, no Allow meaning denied, the condition
operators the template uses (String*, Bool), and the bucket policy's statements for everyone.

A request is made by the function whose handler is running (`snn.stores.clients.invoked_as`,
set in each invocation's own context), or, for a Lambda invoke outside any handler, by the state
machine (its interpreter runs the Task states). Other requests outside any handler are the
engine's own (standing the stack up, following a run): not a function's, not checked here.

A denied request gets the service's own answer: S3's 403 AccessDenied, DynamoDB's, Step
Functions' and Lambda's AccessDeniedException, with AWS's message naming the caller's role
and function, the action and the resource. A GetObject that is allowed on a key that does not
exist is S3's 404 only for a caller allowed s3:ListBucket; otherwise S3 answers 403 "Access
Denied", as here.

Decisions are cached per (caller, action, resource, condition keys): the statements are
evaluated once for each distinct request, and every later one is a dictionary lookup.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from snn.stores.clients import invoked_as
from snn.template import Template, TemplateError

SERVICES = ("s3", "dynamodb", "stepfunctions", "lambda")
# The managed policy SAM attaches to every function's role: CloudWatch Logs only.
BASIC_EXECUTION = "AWSLambdaBasicExecutionRole"
CONDITION_OPERATORS = (
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "Bool",
)
STATEMENT_ELEMENTS = {"Sid", "Effect", "Action", "Resource", "Condition"}
# What every request of a Lambda function carries: it is made over TLS.
REQUEST_KEYS = (("aws:SecureTransport", "true"),)
MAX_CACHED = 200_000

Statement = dict[str, Any]


# --- SAM's policy templates ---------------------------------------------------------------------


def sam_policies(name: str, parameters: dict[str, Any]) -> list[Statement]:
    """The statements of one of SAM's policy templates (those this application uses), as SAM's
    translator expands them (its policy_templates.json), intrinsic functions left unresolved."""
    if name == "LambdaInvokePolicy":
        function = parameters["FunctionName"]
        arn = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
        return [
            {
                "Action": ["lambda:InvokeFunction"],
                "Effect": "Allow",
                "Resource": {"Fn::Sub": [arn + "${functionName}*", {"functionName": function}]},
            }
        ]
    raise TemplateError(f"the local engine does not expand SAM policy template {name}")


def role_statements(policies: Any) -> list[Statement]:
    """The statements of a function's or state machine's Policies property (unresolved)."""
    out: list[Statement] = []
    for policy in policies if isinstance(policies, list) else [policies]:
        if isinstance(policy, str):
            if policy.rsplit("/", 1)[-1] != BASIC_EXECUTION:
                raise TemplateError(f"the local engine cannot evaluate managed policy {policy}")
        elif isinstance(policy, dict) and "Statement" in policy:
            out.extend(_as_list(policy["Statement"]))
        elif isinstance(policy, dict) and len(policy) == 1:
            ((name, parameters),) = policy.items()
            out.extend(sam_policies(name, parameters or {}))
        else:
            raise TemplateError(f"the local engine cannot read policy {policy!r}")
    return out


# --- intrinsic functions ------------------------------------------------------------------------


class Resolver:
    """!Ref, !GetAtt and !Sub for one stack: `refs` by logical id or pseudo parameter,
    `attributes` by (logical id, attribute)."""

    def __init__(self, refs: dict[str, str], attributes: dict[tuple[str, str], str]) -> None:
        self.refs, self.attributes = refs, attributes

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self._ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            name, attribute = target.split(".", 1) if isinstance(target, str) else target
            return self._attribute(name, attribute)
        if set(value) == {"Fn::Sub"}:
            text, names = value["Fn::Sub"], {}
            if isinstance(text, list):
                text, names = text[0], {k: self(v) for k, v in text[1].items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: self._token(m.group(1), names), text)
        return {k: self(v) for k, v in value.items()}

    def _token(self, token: str, names: dict[str, str]) -> str:
        if token in names:
            return str(names[token])
        if "." in token and not token.startswith("AWS::"):
            return self._attribute(*token.split(".", 1))
        return self._ref(token)

    def _ref(self, name: str) -> str:
        if name not in self.refs:
            raise TemplateError(f"the local engine cannot resolve !Ref {name} in a policy")
        return self.refs[name]

    def _attribute(self, name: str, attribute: str) -> str:
        if (name, attribute) not in self.attributes:
            raise TemplateError(f"the local engine cannot resolve !GetAtt {name}.{attribute}")
        return self.attributes[name, attribute]


# --- evaluation ---------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcards(patterns: Iterable[str], case: bool) -> re.Pattern[str]:
    """IAM's matching: `*` any run of characters (slashes included), `?` exactly one."""
    parts = [
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
        for p in patterns
    ]
    return re.compile("(?:" + "|".join(parts) + r")\Z", 0 if case else re.IGNORECASE)


@dataclass(frozen=True)
class Request:
    """One authorised request: the IAM action, the resource's ARN, the condition keys."""

    action: str
    resource: str
    keys: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = "".join(f" ({k} {v!r})" for k, v in self.keys if not k.startswith("aws:"))
        return f"{self.action} on {self.resource}{extra}"


class Compiled:
    """One statement, its patterns compiled."""

    def __init__(self, statement: Statement, where: str) -> None:
        unknown = set(statement) - STATEMENT_ELEMENTS - {"Principal"}
        if unknown or "Action" not in statement or "Resource" not in statement:
            raise TemplateError(
                f"{where}: the local engine evaluates statements of Effect, Action, Resource "
                f"and Condition only, not {sorted(unknown) or statement}"
            )
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise TemplateError(f"{where}: Effect must be Allow or Deny")
        self.statement = statement
        self.allow = statement["Effect"] == "Allow"
        self.actions = _wildcards(_as_list(statement["Action"]), case=False)
        self.resources = _wildcards(_as_list(statement["Resource"]), case=True)
        self.conditions: list[tuple[str, str, list[str]]] = []
        for operator, tests in statement.get("Condition", {}).items():
            if operator not in CONDITION_OPERATORS:
                raise TemplateError(
                    f"{where}: the local engine does not evaluate condition operator {operator}"
                )
            for key, wanted in tests.items():
                self.conditions.append((operator, key, [str(w) for w in _as_list(wanted)]))

    def matches(self, request: Request) -> bool:
        if self.actions.match(request.action) is None:
            return False
        if self.resources.match(request.resource) is None:
            return False
        if not self.conditions:
            return True
        keys = dict(request.keys)
        return all(_holds(op, keys.get(k), w) for op, k, w in self.conditions)


def _holds(operator: str, value: str | None, wanted: list[str]) -> bool:
    """One condition on a single-valued key; an absent key satisfies only a negated operator."""
    negated = "Not" in operator
    if value is None:
        return negated
    if operator.startswith("StringLike") or operator.startswith("StringNotLike"):
        found = _wildcards(wanted, case=True).match(value) is not None
    elif operator == "Bool":
        found = value.lower() in (w.lower() for w in wanted)
    else:
        found = value in wanted
    return found != negated


def decide(statements: list[Compiled], request: Request) -> tuple[bool, bool]:
    """(allowed, explicitly denied)."""
    allowed = False
    for s in statements:
        if s.matches(request):
            if not s.allow:
                return False, True
            allowed = True
    return allowed, False


# --- the stack's principals -------------------------------------------------------------------


class Policies:
    """The resolved statements of every principal of the stack (each function by its logical
    id, the state machine by its own), and the bucket policy's statements for everyone."""

    def __init__(
        self,
        statements: dict[str, list[Statement]],
        everyone: list[Statement],
        roles: dict[str, str],
    ) -> None:
        self.statements = statements
        self.everyone = everyone
        self.roles = roles  # the role each principal assumes, for the messages
        self.resolver: Resolver | None = None  # what resolved them (from_template)
        self.compiled = {
            p: [Compiled(s, f"{p}'s policy") for s in (*ss, *everyone)]
            for p, ss in statements.items()
        }

    @classmethod
    def from_template(
        cls,
        template: Template,
        refs: dict[str, str],
        attributes: dict[tuple[str, str], str],
    ) -> Policies:
        resolve = Resolver(refs, attributes)
        statements: dict[str, list[Statement]] = {}
        roles: dict[str, str] = {}
        for rid, res in template.resources.items():
            kind = res.get("Type")
            if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
                props = res.get("Properties", {})
                if "Role" in props:
                    raise TemplateError(f"{rid}: the local engine needs Policies, not a Role")
                statements[rid] = [resolve(s) for s in role_statements(props.get("Policies", []))]
                roles[rid] = f"{rid}Role"
        everyone = []
        for res in template.of_type("AWS::S3::BucketPolicy").values():
            for s in _as_list(res["Properties"]["PolicyDocument"]["Statement"]):
                if s.get("Principal") not in ("*", {"AWS": "*"}):
                    raise TemplateError("the local engine evaluates bucket policies for * only")
                everyone.append(resolve({k: v for k, v in s.items() if k != "Principal"}))
        policies = cls(statements, everyone, roles)
        policies.resolver = resolve
        return policies


def embedded_names(
    template: Template, stack: str, region: str, account: str, names: dict[str, str]
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """What !Ref and !GetAtt give in the embedded stack: `names` (the bucket's and table's by
    logical id), each function named after its logical id, the state machine named as the
    template names it."""
    refs = {
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::StackName": stack,
        "AWS::URLSuffix": "amazonaws.com",
    }
    attributes: dict[tuple[str, str], str] = {}
    for rid, res in template.resources.items():
        kind = res.get("Type")
        if kind == "AWS::S3::Bucket":
            refs[rid] = names[rid]
            attributes[rid, "Arn"] = f"arn:aws:s3:::{names[rid]}"
        elif kind == "AWS::DynamoDB::Table":
            refs[rid] = names[rid]
            attributes[rid, "Arn"] = f"arn:aws:dynamodb:{region}:{account}:table/{names[rid]}"
        elif kind == "AWS::Serverless::Function":
            refs[rid] = rid
            attributes[rid, "Arn"] = f"arn:aws:lambda:{region}:{account}:function:{rid}"
    for rid, res in template.resources.items():
        if res.get("Type") == "AWS::Serverless::StateMachine":
            machine = machine_name(template, rid, Resolver(refs, attributes), stack)
            refs[rid] = f"arn:aws:states:{region}:{account}:stateMachine:{machine}"
            attributes[rid, "Name"] = machine
            attributes[rid, "Arn"] = refs[rid]
    return refs, attributes


def machine_name(template: Template, rid: str, resolve: Resolver, stack: str) -> str:
    name = template.resources[rid].get("Properties", {}).get("Name")
    return str(resolve(name)) if name is not None else f"{stack}-{rid}"


# --- requests as IAM sees them -------------------------------------------------------------------


def as_iam(service: str, operation: str, params: dict[str, Any], region: str, account: str) -> list[
    Request
]:
    """The IAM requests one API call makes (DeleteObjects: one s3:DeleteObject per key)."""
    if service == "s3":
        bucket = f"arn:aws:s3:::{params.get('Bucket', '')}"
        if operation in ("GetObject", "HeadObject"):
            return [Request("s3:GetObject", f"{bucket}/{params['Key']}", REQUEST_KEYS)]
        if operation == "DeleteObjects":
            return [
                Request("s3:DeleteObject", f"{bucket}/{o['Key']}", REQUEST_KEYS)
                for o in params["Delete"]["Objects"]
            ]
        if operation in ("ListObjectsV2", "ListObjects"):
            prefix = (("s3:prefix", params.get("Prefix", "")),)
            return [Request("s3:ListBucket", bucket, prefix + REQUEST_KEYS)]
        if "Key" in params:
            return [Request(f"s3:{operation}", f"{bucket}/{params['Key']}", REQUEST_KEYS)]
        return [Request(f"s3:{operation}", bucket, REQUEST_KEYS)]
    if service == "dynamodb":
        table = f"arn:aws:dynamodb:{region}:{account}:table/{params.get('TableName', '*')}"
        if params.get("IndexName"):
            table += f"/index/{params['IndexName']}"
        return [Request(f"dynamodb:{operation}", table, REQUEST_KEYS)]
    if service == "lambda":
        name = str(params.get("FunctionName", ""))
        arn = name if name.startswith("arn:") else (
            f"arn:aws:lambda:{region}:{account}:function:{name}"
        )
        action = "lambda:InvokeFunction" if operation == "Invoke" else f"lambda:{operation}"
        return [Request(action, arn, REQUEST_KEYS)]
    if service == "cloudformation":
        stack = str(params.get("StackName", "*"))
        if not stack.startswith("arn:"):
            stack = f"arn:aws:cloudformation:{region}:{account}:stack/{stack}/*"
        return [Request(f"cloudformation:{operation}", stack, REQUEST_KEYS)]
    arn = params.get("stateMachineArn") or params.get("executionArn") or "*"
    return [Request(f"states:{operation}", arn, REQUEST_KEYS)]


# --- enforcement ----------------------------------------------------------------------------------


class Enforcer:
    """Evaluates each request of the stack's principals, answers the denied ones as the
    service does, and keeps every distinct request and its decision (`decisions`)."""

    CONTEXT = "snn_iam_params"

    def __init__(
        self,
        policies: Policies,
        region: str,
        account: str,
        state_machine: str,
        object_exists: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.policies = policies
        self.region, self.account = region, account
        self.state_machine = state_machine  # the principal of Lambda invokes outside a handler
        self.object_exists = object_exists
        self.decisions: dict[tuple[str, Request], bool] = {}
        self._probes: dict[tuple[str, Request], bool] = {}
        self._seen: dict[tuple[str, str, Any], Request | None] = {}
        self._by_action: dict[tuple[str, str], list[Compiled]] = {}
        self._lock = threading.Lock()
        self._events: list[tuple[str, str]] = []

    # botocore's events, on the emulator's session before any client is made from it
    def install(self, session: Any) -> Callable[[], None]:
        """Checks every request of every client made from `session` from now on; returns the
        undo. The check is the first handler of each operation's before-call event: it answers a
        denied request before any emulator serves it."""
        core = getattr(session, "_session", session)
        events = session.events
        for service in SERVICES:
            model = core.get_service_model(service)
            hyphenized = model.service_id.hyphenize()
            event = f"provide-client-params.{hyphenized}"
            unique_id = f"snn-iam-params-{service}-{id(self)}"
            events.register(event, self._keep_params, unique_id=unique_id)
            self._events.append((event, unique_id))
            for operation in model.operation_names:
                event = f"before-call.{hyphenized}.{operation}"
                unique_id = f"snn-iam-{service}-{operation}-{id(self)}"
                events.register_first(event, self._check, unique_id=unique_id)
                self._events.append((event, unique_id))

        def uninstall() -> None:
            for event, unique_id in self._events:
                events.unregister(event, unique_id=unique_id)
            self._events.clear()

        return uninstall

    def _keep_params(self, params: dict[str, Any], context: dict, **_: Any) -> None:
        context[self.CONTEXT] = params

    def principal(self, service: str) -> str | None:
        function = invoked_as.get()
        if function is not None:
            return function
        return self.state_machine if service == "lambda" else None

    def _check(self, model: Any, context: dict, **_: Any) -> tuple[Any, dict] | None:
        service = model.service_model.service_name
        principal = self.principal(service)
        if principal is None:
            return None
        params = context.get(self.CONTEXT, {})
        # one lookup for a request seen before (most: the run record, each matrix read twice)
        seen = (principal, model.name, _target(params))
        refused = self._seen.get(seen, _UNSEEN)
        if refused is _UNSEEN:
            refused = None
            for request in as_iam(service, model.name, params, self.region, self.account):
                if not self.allowed(principal, request):
                    refused = request
                    break
            with self._lock:
                if len(self._seen) >= MAX_CACHED:
                    self._seen.clear()
                self._seen[seen] = refused
        if refused is not None:
            return self._denied(service, principal, refused)
        if service == "s3" and model.name in ("GetObject", "HeadObject"):
            return self._missing_unlisted(principal, params)
        return None

    def allowed(self, principal: str, request: Request, probe: bool = False) -> bool:
        """Whether the principal's policies allow the request. A probe (what S3 checks to
        choose its answer, not a request made) is cached apart from `decisions`."""
        cache = self._probes if probe else self.decisions
        key = (principal, request)
        hit = cache.get(key)
        if hit is None:
            hit = decide(self._candidates(principal, request.action), request)[0]
            with self._lock:
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                cache[key] = hit
        return hit

    def _candidates(self, principal: str, action: str) -> list[Compiled]:
        """The principal's statements whose actions match `action` (found once per action)."""
        found = self._by_action.get((principal, action))
        if found is None:
            compiled = self.policies.compiled.get(principal, [])
            found = [s for s in compiled if s.actions.match(action) is not None]
            self._by_action[principal, action] = found
        return found

    def denied(self) -> list[tuple[str, Request]]:
        """The distinct requests refused so far."""
        with self._lock:
            return [key for key, ok in self.decisions.items() if not ok]

    def _missing_unlisted(self, principal: str, params: dict[str, Any]) -> tuple[Any, dict] | None:
        """S3's answer to a GetObject of a missing key by a caller not allowed to list it: 403
        Access Denied, not 404 NoSuchKey."""
        if self.object_exists is None:
            return None
        bucket, key = params["Bucket"], params["Key"]
        listing = Request(
            "s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", key), *REQUEST_KEYS)
        )
        if self.allowed(principal, listing, probe=True) or self.object_exists(bucket, key):
            return None
        return _answer(403, "AccessDenied", "Access Denied")

    def message(self, principal: str, request: Request) -> str:
        role = self.policies.roles.get(principal, f"{principal}Role")
        compiled = self.policies.compiled.get(principal, [])
        explicit = decide(compiled, request)[1]
        why = (
            f"with an explicit deny in a policy of {principal}"
            if explicit
            else f"because no identity-based policy of {principal} allows the "
            f"{request.action} action"
        )
        return (
            f"User: arn:aws:sts::{self.account}:assumed-role/{role}/{principal} is not "
            f"authorized to perform: {request.action} on resource: {request.resource} {why}"
        )

    def _denied(self, service: str, principal: str, request: Request) -> tuple[Any, dict]:
        text = self.message(principal, request)
        if service == "s3":
            return _answer(403, "AccessDenied", text)
        return _answer(400 if service in ("dynamodb", "stepfunctions") else 403,
                       "AccessDeniedException", text)


_UNSEEN = object()


def _target(params: dict[str, Any]) -> Any:
    """What a request names, for recognising it when it comes again: every parameter that
    `as_iam` reads."""
    delete, key = params.get("Delete"), params.get("Key")
    return (
        params.get("Bucket"),
        key if isinstance(key, str) else None,  # (DynamoDB's Key is the item's, not a name)
        params.get("Prefix"),
        tuple(o["Key"] for o in delete["Objects"]) if delete else None,
        params.get("TableName"),
        params.get("IndexName"),
        params.get("FunctionName"),
        params.get("StackName"),
        params.get("stateMachineArn"),
        params.get("executionArn"),
    )


def _answer(status: int, code: str, message: str) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    metadata = {
        "HTTPStatusCode": status,
        "RequestId": uuid.uuid4().hex,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }
    error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}
    return AWSResponse("", status, {}, None), error


def acting_as(function: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler`, run as `function`: every request it makes is the function's. Called in the
    invocation's own context, so the mark lasts as long as the invocation."""

    def run(event: Any, context: Any) -> Any:
        invoked_as.set(function)
        return handler(event, context)

    run.__wrapped__ = handler  # type: ignore[attr-defined]
    return run


__all__ = [
    "Enforcer",
    "Policies",
    "Request",
    "Resolver",
    "acting_as",
    "as_iam",
    "decide",
    "embedded_names",
    "role_statements",
    "sam_policies",
]
