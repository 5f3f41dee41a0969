"""Metering a run on the local engine: what its Lambda handlers ask of S3 and DynamoDB, and how
long each invocation takes, counted through botocore's events on the emulator's boto3 session,
which every client of the run is made from (`snn bill` prices it with `snn.billing`)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from snn.billing import Measurement, Usage
    from snn.parameters import Parameters

# S3 operations billed as PUT requests (the others, but DELETE, are billed as GET requests).
S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "PostObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListBuckets",
}
S3_FREE = {"DeleteObject", "DeleteObjects"}
# The shorter metered run. From its third epoch on, a run is in its steady state: Commit then
# deletes the epoch before last (epoch 0 is kept as a checkpoint), so two runs of 2 and K epochs
# differ by exactly K - 2 steady epochs.
SHORT_RUN = 2
DYNAMODB_READS = {"GetItem", "Query", "Scan", "BatchGetItem"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


@contextmanager
def invocations_reach_thread_pools(local: threading.local) -> Iterator[None]:
    """While it lasts, work that an invocation hands to a thread pool (a function reading many
    objects side by side) runs as part of it: `local.function`, the invoked function as set in
    the invoking thread, is carried into the worker thread with each task."""
    original = ThreadPoolExecutor.submit

    def submit(pool: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        function = getattr(local, "function", None)
        if function is None:
            return original(pool, fn, *args, **kwargs)

        def carried(*a: Any, **k: Any) -> Any:
            local.function = function
            try:
                return fn(*a, **k)
            finally:
                local.function = None

        return original(pool, carried, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]
    try:
        yield
    finally:
        ThreadPoolExecutor.submit = original  # type: ignore[method-assign]


@dataclass
class Meter:
    """Counts what the Lambda handlers ask of S3 and DynamoDB, and times each invocation.

    Requests made inside an invocation (or by the thread pools it uses, see `worker_threads`)
    are the function's; requests outside one are the client's (uploads, polling): of those,
    only the uploads (S3 PUTs) are counted, since polling is how this machine follows the run,
    not part of the run. The events are registered on the emulator's boto3 session before any
    client is made from it, so they reach every client of the run: the engine's, the handlers'
    and the interpreter's."""

    requests: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    # A function's MemorySize over the template's Globals MemorySize: Lambda bills memory x time.
    memory_scale: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] | None = None  # the last run record read (the final one, at the end)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    HOOKS = (
        ("before-call.lambda.Invoke", "_invoke_starts"),
        ("after-call.lambda.Invoke", "_invoke_ends"),
        ("before-call.s3", "_request"),
        ("before-call.dynamodb", "_request"),
        ("after-call.dynamodb.GetItem", "_item"),
    )

    def install(self, session: Any) -> None:
        for event, method in self.HOOKS:
            session.events.register(event, getattr(self, method), unique_id=f"snn-bill-{event}")

    def worker_threads(self) -> AbstractContextManager[None]:
        return invocations_reach_thread_pools(self._local)

    def _invoke_starts(self, params: dict[str, Any], **_: Any) -> None:
        from snn.engines.local import invoked_function

        self._local.function = invoked_function(params)
        self._local.started = time.perf_counter()

    def _invoke_ends(self, **_: Any) -> None:
        function = getattr(self._local, "function", None)
        if function is not None:
            with self._lock:
                self.seconds[function] += time.perf_counter() - self._local.started
            self._local.function = None

    def _request(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        function = getattr(self._local, "function", None)
        if function is None and not (service == "s3" and model.name == "PutObject"):
            return
        # Neuron statistics are recorded at about 100 epochs of any run: counted apart.
        stats = "/neurons/epoch" in params.get("url_path", "")
        with self._lock:
            self.requests[(service, model.name, stats)] += 1

    def _item(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Item" in parsed and getattr(self._local, "function", None) is None:
            self.record = parsed["Item"]

    def usage(self, transitions: int, invocations: int, stats: bool) -> Usage:
        """The run's usage (of the neuron statistics alone, or of the rest)."""
        from snn.billing import Usage

        def count(service: str, ops: set[str] | None, exclude: set[str] = frozenset()) -> float:
            return float(
                sum(
                    n
                    for (s, op, st), n in self.requests.items()
                    if s == service
                    and st == stats
                    and (ops is None or op in ops)
                    and op not in exclude
                )
            )

        requests = Usage(
            s3_put=count("s3", S3_PUT_CLASS),
            s3_get=count("s3", None, S3_PUT_CLASS | S3_FREE),
            dynamodb_writes=count("dynamodb", DYNAMODB_WRITES),
            dynamodb_reads=count("dynamodb", DYNAMODB_READS),
        )
        if stats:
            return requests
        return requests + Usage(
            state_transitions=float(transitions),
            lambda_invocations=float(invocations),
            lambda_seconds=float(
                sum(s * self.memory_scale.get(f, 1.0) for f, s in self.seconds.items())
            ),
        )


def meter_run(
    p: Parameters, data_dir: Path, run_id: str, template: str | Path
) -> tuple[Usage, Usage, Meter]:
    """Train on the local engine with a meter on its emulator's session: (usage, usage of the
    neuron statistics, the meter)."""
    from snn.engines import RunSpec, local

    meter = Meter(memory_scale=memory_scale(template))
    local.SESSION_HOOKS.append(meter.install)
    try:
        with meter.worker_threads():
            result = local.train(RunSpec(p, data_dir, run_id), template)
    finally:
        local.SESSION_HOOKS.remove(meter.install)
    transitions = int(result.extra["state_transitions"])
    invocations = int(result.extra["lambda_invocations"])
    return (
        meter.usage(transitions, invocations, stats=False),
        meter.usage(transitions, invocations, stats=True),
        meter,
    )


def base_memory_mb(template: str | Path) -> int:
    """The template's Globals MemorySize: the memory of a function that sets none."""
    from snn.template import LAMBDA_DEFAULT_MEMORY_MB, Template

    glob = Template.load(template).raw.get("Globals", {}).get("Function", {})
    return int(glob.get("MemorySize", LAMBDA_DEFAULT_MEMORY_MB))


def memory_scale(template: str | Path) -> dict[str, float]:
    """Each function's memory over the Globals memory (Evaluate, with more, counts more)."""
    from snn.template import Template

    base = base_memory_mb(template)
    return {fid: f.memory_mb / base for fid, f in Template.load(template).functions().items()}


def record_size(record: dict[str, Any] | None) -> float:
    """Bytes of the run record, from the record as DynamoDB returned it."""
    from snn.billing import item_bytes

    return float(item_bytes(record)) if record else 1024.0


def measure(p: Parameters, data_dir: Path, template: str | Path, sample_epochs: int) -> Measurement:
    from snn.billing import from_runs

    a, b = SHORT_RUN, sample_epochs
    usage_a, stats_a, _ = meter_run(p.with_epochs(a), data_dir, "cost-short", template)
    usage_b, stats_b, meter = meter_run(p.with_epochs(b), data_dir, "cost-long", template)
    return from_runs((a, usage_a, stats_a), (b, usage_b, stats_b), record_size(meter.record))
