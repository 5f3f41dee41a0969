"""Every touch of moto's internals, behind one version gate.

The local engine runs on moto's public API (mock_aws, boto3 clients) except in these places,
where it reads or trims moto's own state to stay fast and bounded over long runs, or makes the
emulator behave as AWS does where moto's interpreter is lenient:

- `interpreter`: a shared boto3 client for Lambda tasks, cached JSONPath parsing, a definition
  parsed once for all its executions, timestamps formatted without strftime, execution
  histories read from the backend, forgetting finished executions, failing an execution as AWS
  fails it on an uncatchable error (States.DataLimitExceeded, States.Runtime);
- `memory`: disposing of deleted S3 objects and dropping moto's bookkeeping of tracked
  instances and finished interpreter threads;
- `dynamodb`: requests to the emulated DynamoDB one at a time (its tables are not safe for
  concurrent requests, which the local engine's threads make);
- `s3_requests`: the handlers' S3 object requests answered by moto's S3 backend directly;
- `short_path`: botocore's preparation of the requests answered that way (and of the
  interpreter's Lambda invokes) cut short: no endpoint resolution, no user-agent string;
- `copies`: the interpreter's copies of state data (JSON) and of program states made by a plain
  recursive copy instead of `copy.deepcopy`;
- `inline`: the work of a Task or Map state, and of a Map's only worker, run by the thread that
  would wait for it, where no timeout can fire;
- `map_concurrency`: at most a few iterations of an inline Map at once (moto starts a thread
  for every iteration; Step Functions runs at most 40 at a time).

They were written against one moto version and are tested against it
(tests/unit/test_emulator*.py). This module is the gate: it checks the version before any of
them is imported, and with another version the local engine stops with a clear error instead
of running without them (a long run would exhaust memory).
"""

from __future__ import annotations

import moto

from snn.errors import SnnError

MOTO_VERSION = "5.2.5"
ACCOUNT = "123456789012"
REGION = "us-east-1"


class UnsupportedEmulator(SnnError):
    """The installed moto is not the version the local engine was written for."""


if moto.__version__ != MOTO_VERSION:
    raise UnsupportedEmulator(
        f"the local engine needs moto {MOTO_VERSION}, found {moto.__version__}: "
        f"pip install 'moto[s3,dynamodb,stepfunctions]=={MOTO_VERSION}'"
    )

from snn.engines.local.emulator import (  # noqa: E402
    copies,
    dynamodb,
    inline,
    interpreter,
    map_concurrency,
    memory,
    s3_requests,
    short_path,
)

__all__ = [
    "ACCOUNT",
    "MOTO_VERSION",
    "REGION",
    "copies",
    "dynamodb",
    "inline",
    "interpreter",
    "map_concurrency",
    "memory",
    "s3_requests",
    "short_path",
]
