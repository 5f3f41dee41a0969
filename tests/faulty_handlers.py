"""Handlers that fail on purpose, for tests that point a copy of template.yaml at them: each
wraps the real handler of its stage and fails where its name says."""

from __future__ import annotations

from typing import Any

from tests.helpers import handler


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
