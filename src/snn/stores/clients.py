"""One boto3 client per service, endpoint and region, reused as a warm Lambda container reuses
it. `AWS_ENDPOINT_URL` (an emulator, say) is honoured by boto3 itself."""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import Any

# The Lambda function whose handler is running. On AWS a process serves one function; the local
# engine runs every function's handler in one process and sets this in each invocation's own
# context: what a warm container keeps is kept per function, and each request is authorised as
# the function's.
invoked_as: ContextVar[str | None] = ContextVar("snn_invoked_as", default=None)

_clients: dict[tuple[str, str | None, str | None], Any] = {}
_lock = threading.Lock()


def aws_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    key = (service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION"))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = boto3.client(service, config=Config(**_checksums()))
        return client


def reset_clients() -> None:
    """Forget cached clients (a new emulated account or region)."""
    with _lock:
        _clients.clear()


def _checksums() -> dict[str, str]:
    """Checksums only where an operation requires them: the objects are small and the transport
    is TLS; it saves a CRC over every matrix on both sides. botocore before 1.36 has neither
    option (and computes no such checksums): nothing to set there."""
    import botocore

    major, minor = (int(part) for part in botocore.__version__.split(".")[:2])
    if (major, minor) < (1, 36):
        return {}
    return {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
