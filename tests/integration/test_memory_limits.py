"""The local engine fails an invocation whose working set is over its function's memory as
Lambda does (Runtime.OutOfMemory, which no Retry covers), whatever let the run through."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from snn.engines import local
from snn.errors import RunFailed
from snn.run_folder import RunFolder
from tests.helpers import ROOT, project_copy, spec, tiny_parameters


def test_no_retry_covers_running_out_of_memory() -> None:
    """Every Retry of the state machine lists the Lambda service's errors only."""
    asl = (ROOT / "statemachine" / "training.asl.json").read_text()
    retried = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for retry in node.get("Retry", []):
                retried.update(retry["ErrorEquals"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(asl))
    assert retried and all(e.startswith("Lambda.") for e in retried), retried


@pytest.mark.slow
def test_an_invocation_over_its_memory_fails_the_run_with_runtime_out_of_memory(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    """A template edited after validation: Backward's function left with no memory beyond the
    runtime's own."""
    template = project_copy(tmp_path)
    text = template.read_text()
    anchor = "      Handler: snn.handlers.backward.handler\n"
    assert anchor in text
    template.write_text(text.replace(anchor, anchor + "      MemorySize: 100\n"))
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failure:
        local.train(spec(tiny_parameters(epochs=1), synthetic_dir, "oom", folder=folder), template)
    message = str(failure.value)
    assert re.match(
        r"run oom failed at epoch 0 in Backward \(layer 2(, shard 0)?\): Runtime\.OutOfMemory: "
        r"BackwardFunction: the working set of Backward of layer 2 is [\d.,]+ MB with 100 MB for "
        r"the runtime, over its MemorySize of 100 MB",
        message,
    ), message
    record = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())["record"]
    assert (record["status"], record["error"]) == ("FAILED", "Runtime.OutOfMemory")


@pytest.mark.slow
def test_init_over_its_ephemeral_storage_fails_the_run_and_train_refuses_it(
    tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Init writes the two h5 files to /tmp: a function with less ephemeral storage than they
    need cannot start the run. `snn train` refuses it before anything runs; the engine fails
    Init as Lambda would, whatever let it through."""
    from snn.cli import main

    template = project_copy(tmp_path)
    text = template.read_text()
    anchor = "      Handler: snn.handlers.init.handler\n"
    assert anchor in text
    template.write_text(text.replace(anchor, anchor + "      EphemeralStorage:\n        Size: 0\n"))
    params = tmp_path / "p.json"
    params.write_text(tiny_parameters(epochs=1).to_json())
    args = ["--params", str(params), "--data", str(synthetic_dir), "--template", str(template)]
    code = main(["train", *args, "--out", str(tmp_path / "refused"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "of h5 files to /tmp, over the 0 MB of its function's ephemeral storage" in err
    assert not (tmp_path / "refused").exists()
    with pytest.raises(RunFailed) as failure:
        local.train(spec(tiny_parameters(epochs=1), synthetic_dir, "full"), template)
    message = str(failure.value)
    full = r"run full failed .*Init.*OSError: \[Errno 28\] No space left on device"
    assert re.match(full, message), message
