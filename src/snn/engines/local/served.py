"""The embedded stack served over HTTP, for clients in other processes: a function run by
`sam local invoke` in its container, a handler run by hand, `aws --endpoint-url`.

Each request is handed to moto's own dispatcher, the one that answers the requests of the
clients in this process, so a request over HTTP reads and writes the very bucket, table and state
machine that the embedded stack stood up, and an execution started that way runs the handlers
here, as the local engine runs them. The service and region come from the request's signature
(SigV4 names them in its credential scope), as they do on AWS.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from snn.engines.local import emulator  # noqa: F401  (the version gate, before moto's own)

# Lambda (the functions run here) and IAM are not served: the stack is the bucket, the table and
# the state machine, and what a client needs beside them.
SERVED = ("s3", "dynamodb", "states", "cloudformation", "sts")
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
# Headers that belong to one hop of HTTP, not to the answer.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "status", "server"}


def scope(authorization: str | None) -> tuple[str, str] | None:
    """(service, region) of a SigV4-signed request, or None if it is not signed."""
    found = _SCOPE.search(authorization or "")
    return (found.group(2), found.group(1)) if found else None


def aws_url(service: str, region: str, path: str, query: str) -> str:
    """The address the request would have on AWS, which moto's dispatcher matches on: S3 in path
    style (the bucket is the path's first part, as an endpoint URL makes it)."""
    host = "s3.amazonaws.com" if service == "s3" else f"{service}.{region}.amazonaws.com"
    return f"https://{host}{path}" + (f"?{query}" if query else "")


def answer(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Any:
    """(status, headers, body) of one request, from moto's dispatcher."""
    from botocore.awsrequest import AWSPreparedRequest
    from botocore.compat import HTTPHeaders
    from moto.core.models import botocore_stubber

    found = scope(headers.get("Authorization") or headers.get("authorization"))
    if found is None:
        return _error(403, "MissingAuthenticationToken", "the request is not signed (SigV4)")
    service, region = found
    if service not in SERVED:
        return _error(400, "UnsupportedService", f"this emulator does not serve {service}")
    url = aws_url(service, region, path, query)
    forwarded = HTTPHeaders()
    for name, value in headers.items():
        if name.lower() != "host":
            forwarded[name] = value
    forwarded["Host"] = urlsplit(url).netloc
    request = AWSPreparedRequest(method, url, forwarded, body, stream_output=False)
    response = botocore_stubber.process_request(request)
    if response is None:
        return _error(404, "NotFound", f"{method} {path}: no such operation here")
    return response


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.0"}, body


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The WSGI application: every request to moto's dispatcher."""
    from werkzeug.wrappers import Request

    request = Request(environ)
    body = request.get_data()
    headers = {name: value for name, value in request.headers.items()}
    status, answer_headers, content = answer(
        request.method, request.path, request.query_string.decode("latin-1"), headers, body
    )
    if isinstance(content, str):
        content = content.encode("utf-8")
    out = [(k, str(v)) for k, v in (answer_headers or {}).items() if k.lower() not in _HOP]
    if request.method == "HEAD":
        length = {k.lower(): v for k, v in (answer_headers or {}).items()}.get("content-length")
        out.append(("Content-Length", str(length if length is not None else len(content))))
        content = b""
    else:
        out.append(("Content-Length", str(len(content))))
    start_response(f"{status} {_reason(status)}", out)
    return [content]


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def make_server(sock: Any) -> Any:
    """A threaded HTTP server of the stack on a listening socket; the caller runs
    `serve_forever()`."""
    from werkzeug.serving import WSGIRequestHandler
    from werkzeug.serving import make_server as werkzeug_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:  # no line per request
            pass

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    host, port = sock.getsockname()[:2]
    return werkzeug_server(
        host, port, application, threaded=True, request_handler=Quiet, fd=sock.fileno()
    )


__all__ = ["SERVED", "answer", "application", "aws_url", "make_server", "scope"]
