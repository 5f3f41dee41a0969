"""Handlers that fail on purpose, for tests that point a copy of template.yaml at them: each
wraps the real handler of its stage and fails where its name says."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.helpers import handler

# Where `commit_killed_after_snapshot` kills its process: "epoch,batch,step", and the run's
# resume state it waits for.
KILL_STEP = "SNN_TEST_KILL_STEP"
KILL_STATE = "SNN_TEST_KILL_STATE"


class StageBroke(Exception):
    """A stage that failed on purpose."""


def commit(event: Any, context: Any = None) -> Any:
    raise StageBroke(f"commit broke at epoch {event.get('epoch')}")


def forward_linear_shard1(event: Any, context: Any = None) -> Any:
    """ForwardLinear that fails for shard 1 of layer 1 only (its siblings succeed)."""
    if event.get("layer") == 1 and event.get("shard") == 1:
        raise ValueError("shapes (1,7) and (5,3) not aligned")
    return handler("forward_linear")(event, context)


def loss_huge_result(event: Any, context: Any = None) -> Any:
    """Loss whose result is over the 256 KB a state's payload may carry."""
    result = handler("loss")(event, context)
    return {**result, "padding": "x" * 300_000}


def commit_fails_at_epoch_2(event: Any, context: Any = None) -> Any:
    """Commit that works until epoch 2, then fails: a run to resume from epoch 2."""
    if event.get("epoch") == 2:
        raise StageBroke("commit broke at epoch 2")
    return handler("commit")(event, context)


def commit_killed_after_snapshot(event: Any, context: Any = None) -> Any:
    """Commit that, at the step KILL_STEP names, waits until the run's resume state (KILL_STATE)
    holds that step as the committed one, then kills its whole process outright (SIGKILL): a
    run killed at a known point, with that step's work done and not committed."""
    target = os.environ.get(KILL_STEP)
    if target:
        epoch, batch, step = (int(part) for part in target.split(","))
        if (event.get("epoch"), event.get("batch")) == (epoch, batch):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    state = json.loads(Path(os.environ[KILL_STATE]).read_text())
                    saved = state["record"]["committed_step"]
                except (OSError, ValueError, KeyError):
                    saved = None
                if saved == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.05)
            raise StageBroke(f"no resume state of step {step} was saved")
    return handler("commit")(event, context)
