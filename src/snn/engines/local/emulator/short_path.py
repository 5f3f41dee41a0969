"""botocore's preparation of a request, cut short for the requests the emulator answers itself.

Before botocore lets a `before-call` handler answer a request, it has resolved the request's
endpoint (the endpoint rules evaluated with the request's parameters) and built its user-agent
string: about half of what a served request costs (an S3 object request, a read of the run
record, a Lambda invoke of the interpreter), and neither is read by anything that answers it.
Nothing would be signed or sent.

For the operations the emulator serves (`install`), the clients made from the emulator's session
skip those two steps: the request is validated and serialised as before (so a bad parameter is
refused with botocore's own ParamValidationError, and every `before-call` handler sees the same
path, headers and body), with the client's own endpoint URL and no User-Agent header. Every event
is emitted as before. Should no handler answer after all (a request the emulator leaves to moto's
normal path), the request is prepared again in full, exactly as botocore prepares it, before it
is sent: what moto receives is what it always received.

The methods replaced are botocore's, on a mixin given to the clients as they are made
(`creating-client-class`), never on botocore's classes: clients of other sessions are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from botocore.client import BaseClient

DEFERRED = "snn_deferred_params"  # in a request's context: the parameters, not yet prepared
_STEPS = ("_resolve_endpoint_ruleset", "_convert_to_request_dict", "_make_request")


class ShortPath:
    """The mixin: for operations in `short`, no endpoint resolution and no user agent unless the
    request is really sent."""

    short: frozenset[str] = frozenset()

    def _resolve_endpoint_ruleset(
        self,
        operation_model: Any,
        params: Any,
        request_context: Any,
        ignore_signing_region: bool = False,
    ) -> Any:
        if operation_model.name in self.short and not ignore_signing_region:
            request_context[DEFERRED] = params
            return self.meta.endpoint_url, {}, {}  # type: ignore[attr-defined]
        return super()._resolve_endpoint_ruleset(  # type: ignore[misc]
            operation_model, params, request_context, ignore_signing_region
        )

    def _convert_to_request_dict(
        self,
        api_params: Any,
        operation_model: Any,
        endpoint_url: Any,
        context: Any = None,
        headers: Any = None,
        set_user_agent_header: bool = True,
    ) -> Any:
        if context is None or DEFERRED not in context:
            return super()._convert_to_request_dict(  # type: ignore[misc]
                api_params, operation_model, endpoint_url, context, headers, set_user_agent_header
            )
        from botocore.awsrequest import prepare_request_dict

        request_dict = self._serializer.serialize_to_request(  # type: ignore[attr-defined]
            api_params, operation_model
        )
        if not self._client_config.inject_host_prefix:  # type: ignore[attr-defined]
            request_dict.pop("host_prefix", None)
        if headers:
            request_dict["headers"].update(headers)
        prepare_request_dict(request_dict, endpoint_url=endpoint_url, context=context)
        return request_dict

    def _make_request(self, operation_model: Any, request_dict: Any, request_context: Any) -> Any:
        api_params = request_context.pop(DEFERRED, None)
        if api_params is not None:  # no handler answered: prepare it as botocore does
            request_dict = self._prepared(operation_model, api_params, request_context)
        return super()._make_request(operation_model, request_dict, request_context)  # type: ignore[misc]

    def _prepared(self, operation_model: Any, api_params: Any, request_context: Any) -> Any:
        """What BaseClient._make_api_call sends, from the parameters on."""
        from botocore.compress import maybe_compress_request
        from botocore.httpchecksum import apply_request_checksum, resolve_checksum_context

        url, headers, properties = super()._resolve_endpoint_ruleset(  # type: ignore[misc]
            operation_model, api_params, request_context
        )
        if properties:
            request_context["endpoint_properties"] = properties
        request_dict = super()._convert_to_request_dict(  # type: ignore[misc]
            api_params, operation_model, url, context=request_context, headers=headers
        )
        resolve_checksum_context(request_dict, operation_model, api_params)
        maybe_compress_request(self.meta.config, request_dict, operation_model)  # type: ignore[attr-defined]
        apply_request_checksum(request_dict)
        return request_dict


def fits() -> bool:
    """botocore still prepares requests with the methods the mixin replaces."""
    return all(callable(getattr(BaseClient, step, None)) for step in _STEPS)


def install(session: Any, operations: dict[str, Iterable[str]]) -> Callable[[], None]:
    """Clients made from `session` from now on take the short path for `operations` (service
    name: operation names); returns the undo (clients already made keep it). With a botocore
    that prepares requests otherwise, nothing is installed."""
    if not fits():
        return lambda: None
    events = []
    for service, names in operations.items():
        mixin = type(f"ShortPath_{service}", (ShortPath,), {"short": frozenset(names)})

        def add(base_classes: list[type], mixin: type = mixin, **_: Any) -> None:
            base_classes.insert(0, mixin)

        event = f"creating-client-class.{service}"
        session.events.register(event, add, unique_id=f"snn-short-path-{service}")
        events.append((event, f"snn-short-path-{service}"))

    def uninstall() -> None:
        for event, unique_id in events:
            session.events.unregister(event, unique_id=unique_id)

    return uninstall
