"""Training on the embedded stack: start the run, follow it, keep what a later process needs to
resume it, and end with the run's results, a failure that says what failed where, or, for a
signal, a saved run and the command that resumes it."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from snn import keys
from snn.engines import RunSpec
from snn.engines.follow import Execution, Follower, run_summary
from snn.engines.history import MAX_PAYLOAD_BYTES, oversized_payload
from snn.engines.local import saved
from snn.engines.local.embedded import EmbeddedStack
from snn.engines.local.quota import QuotaGuard
from snn.engines.stack import collect, create_run, start
from snn.errors import Interrupted, RunFailed, RunInterrupted
from snn.report import RunResult

# How often the run is polled: each poll is a few requests to the emulator, which shares the
# process (and its interpreter lock) with the state machine and the handlers.
FOLLOW_SECONDS = 1.0
# How often the resume state is saved while the run goes: at most this much work is lost when
# the process is killed outright.
SNAPSHOT_SECONDS = 15.0


class LocalFollower(Follower):
    """Follows a run on the embedded stack, and at every poll: enforces the history quota and
    the payload limit as AWS would, keeps the emulator compact, publishes progress, and saves
    the resume state when it is due."""

    def __init__(
        self,
        embedded: EmbeddedStack,
        spec: RunSpec,
        snapshots: saved.Snapshots | None,
        prior: dict[str, Any] | None,
        reported: int,
    ) -> None:
        assert embedded.stack is not None
        super().__init__(
            embedded.stack, spec.run_id, spec.epoch_done, FOLLOW_SECONDS, reported=reported
        )
        self.embedded, self.spec, self.snapshots, self.prior = embedded, spec, snapshots, prior
        self.guards: dict[str, QuotaGuard] = {}
        self._seen: dict[str, int] = {}  # history events taken in, per execution

    def poll(self, arn: str) -> None:
        self.guards.setdefault(arn, QuotaGuard(self.embedded, arn)).check()
        self.embedded.compact()
        self._read(arn)
        if self.spec.progress:
            self.spec.progress.progress.execution = {
                "name": arn.rsplit(":", 1)[-1],
                "status": "RUNNING",
                "history_events": self._seen.get(arn, 0),
            }
            self.spec.progress.publish()
        if self.snapshots and self.snapshots.due():
            self.save()

    def _read(self, arn: str) -> None:
        """Take in the execution's new history events: a state's input or output over 256 KB
        fails the execution, as on AWS; the progress counts what ran."""
        start = self._seen.get(arn, 0)
        events = self.embedded.history(arn, start)
        self._seen[arn] = start + len(events)
        too_big = oversized_payload(events)
        if too_big:
            self.embedded.fail_execution(
                arn,
                "States.DataLimitExceeded",
                f"{too_big}, over the {MAX_PAYLOAD_BYTES}-byte limit",
            )
        if self.spec.progress:
            tracker = self.spec.progress.progress.tracker
            tracker.feed(arn, events)
            assert self.embedded.lambdas is not None
            tracker.measured_ms = {  # a Task is named after its function
                name.removesuffix("Function"): ms
                for name, ms in self.embedded.lambdas.mean_ms().items()
            }

    def ended(self, arn: str, execution: Execution) -> None:
        self.embedded.execution_ended(execution.description)
        self._read(arn)
        if self.spec.progress:
            self.spec.progress.progress.executions.append(execution.summary())
            self.spec.progress.progress.execution = None
        self.embedded.forget_execution(arn)

    def summary(self) -> dict[str, Any]:
        return run_summary(self.executions, self.prior)

    def save(self) -> int | None:
        """Save the resume state now; the epoch it resumes from, or None if nothing to save."""
        self.report()  # the progress reports every epoch the saved state holds
        epoch = self.snapshots.save(self.summary()) if self.snapshots else None
        if self.spec.progress and epoch is not None:
            self.spec.progress.progress.resumable_from = epoch
            self.spec.progress.publish(force=True)
        return epoch


def train(
    spec: RunSpec, template: str | Path = "template.yaml", fault_rate: float = 0.0
) -> RunResult:
    """Train on the embedded stack, from epoch 0."""
    began = time.perf_counter()
    with EmbeddedStack(template, fault_rate) as embedded:
        assert embedded.stack is not None
        event = create_run(embedded.stack, spec.run_id, spec.parameters, spec.source())
        arn = start(embedded.stack, event, name=spec.run_id)
        return _run(embedded, spec, event, arn, None, 0, began)


def resume(
    spec: RunSpec,
    template: str | Path = "template.yaml",
    fault_rate: float = 0.0,
    found: saved.SavedRun | None = None,
) -> RunResult:
    """Carry on a run saved in `spec.folder`'s resume/ by an earlier process, from its committed
    epoch: everything saved is checked first (`saved_run`, or here), then put back into a new
    embedded stack, and a new execution starts. The result is the uninterrupted run's, bit for
    bit."""
    began = time.perf_counter()
    assert spec.folder is not None
    if found is None or found.objects is None:
        found = saved.load(spec.folder.resume_dir, with_objects=True)
    objects = found.objects or []
    with EmbeddedStack(template, fault_rate) as embedded:
        st = embedded.stack
        assert st is not None
        for key, data in objects:
            st.store.put_bytes(key, data)
        st.runs.create(found.run_id, found.record)
        for series, values in found.series.items():
            for number, value in values.items():
                st.runs.record(found.run_id, series, number, value)
        name = keys.resumed_execution_name(found.run_id, int(time.time()))
        st.runs.update(found.run_id, {"status": "RUNNING", "execution": name})  # handed over
        arn = start(st, found.execution_input, name=name)
        return _run(
            embedded, spec, found.execution_input, arn, found.summary, found.committed, began
        )


def saved_run(resume_dir: Path) -> saved.SavedRun:
    """The run saved in `resume_dir`, every part of it checked (ResumeError otherwise)."""
    return saved.load(resume_dir, with_objects=True)


def _run(
    embedded: EmbeddedStack,
    spec: RunSpec,
    event: dict[str, str],
    arn: str,
    prior: dict[str, Any] | None,
    reported: int,
    began: float,
) -> RunResult:
    st, lambdas = embedded.stack, embedded.lambdas
    assert st is not None and lambdas is not None
    snapshots = None
    if spec.folder is not None:
        snapshots = saved.Snapshots(
            st, spec.run_id, event, spec.folder.resume_dir, SNAPSHOT_SECONDS
        )
    follower = LocalFollower(embedded, spec, snapshots, prior, reported)
    try:
        follower.follow(arn)
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        _stop_all(follower)
        epoch = follower.save()
        where = _resume_hint(spec, epoch)
        raise RunInterrupted(f"run {spec.run_id} interrupted{where}", signum) from None
    last = follower.executions[-1]
    if not last.succeeded:
        epoch = follower.save()
        diverged = last.failure is not None and last.failure.error == "NumericalError"
        raise follower.failed("" if diverged else _resume_hint(spec, epoch))
    extra = follower.summary()
    extra["lambda_invocations_served"] = sum(lambdas.invocations.values())
    extra["injected_faults"] = dict(lambdas.faults)
    return collect(st, spec.run_id, "local", time.perf_counter() - began, extra)


def _resume_hint(spec: RunSpec, epoch: int | None) -> str:
    if epoch is None or spec.folder is None:
        return "; nothing to resume (the run had not started)"
    return f"; resume it from epoch {epoch} with: snn train --resume {spec.folder.path}"


def _stop_all(follower: LocalFollower) -> None:
    """Stop every running execution, as a user stopping them on AWS would (the run is marked
    failed by the execution-status rule), wait until no handler is still at work, and account
    for them."""
    embedded = follower.embedded
    assert embedded.stack is not None
    for arn in embedded.stop_executions():
        description = embedded.stack.sfn.describe_execution(executionArn=arn)
        execution = Execution.of(description, embedded.history(arn))
        follower.executions.append(execution)
        follower.ended(arn, execution)


__all__ = ["RunFailed", "resume", "saved_run", "train"]
