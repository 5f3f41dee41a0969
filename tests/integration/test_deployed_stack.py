"""The whole state machine on a deployed stack (`sam deploy`), the sam init convention: set
AWS_SAM_STACK_NAME (and credentials) to run it; it is skipped otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from snn.commands.train import new_run_id
from snn.engines import aws, direct
from snn.parameters import Parameters
from tests.helpers import ROOT, spec

STACK = os.environ.get("AWS_SAM_STACK_NAME")

pytestmark = [
    pytest.mark.aws,
    pytest.mark.skipif(
        not STACK,
        reason="AWS_SAM_STACK_NAME is not set: no deployed stack to "
        "test (deploy with `sam deploy`, then set it to the stack name)",
    ),
]


def test_a_run_on_the_deployed_stack_matches_the_direct_engine(data_dir: Path) -> None:
    """The Lambda bundle pins its own numpy, so AWS is compared within 1e-9, not bit for bit."""
    assert STACK is not None
    p = Parameters.load(ROOT / "parameters.json").with_epochs(3)
    run_id = "it-" + new_run_id()
    got = aws.train(spec(p, data_dir, run_id), STACK)
    want = direct.train(spec(p, data_dir, run_id))
    np.testing.assert_allclose(got.costs, want.costs, rtol=1e-9, atol=0)
    for (Wg, bg), (Ww, bw) in zip(got.weights, want.weights, strict=True):
        np.testing.assert_allclose(Wg, Ww, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(bg, bw, rtol=1e-9, atol=1e-15)
    assert got.extra["executions"][0]["status"] == "SUCCEEDED"
