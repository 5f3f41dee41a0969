"""What README.md and docs/commands.md say about exit codes and signals, against what `snn` does:
the exit codes table's every code, the signals that stop a run (and the code each ends with),
and what a stopped direct run keeps (nothing)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snn.cli import STOP_SIGNALS, main
from tests.helpers import ROOT, tiny_parameters

COMMANDS = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def table(text: str) -> dict[str, str]:
    """The first column of a Markdown table's body rows, to the second."""
    rows = re.findall(r"^\| *([^|]+?) *\| *(.+?) *\|$", text, re.M)
    return {k: v for k, v in rows if k not in ("code", "signal") and not set(k) <= set("-")}


EXIT_CODES = table(section(COMMANDS, "Exit codes"))
SIGNAL_CODES = {
    getattr(signal, name): int(code)
    for code, name in re.findall(r"(\d+) for (SIG[A-Z]+)", EXIT_CODES.get("128 + n", ""))
}


def test_the_exit_codes_table_names_every_code_and_each_signals_code() -> None:
    assert set(EXIT_CODES) == {"0", "1", "2", "128 + n"}
    expected = {s: 128 + s for s in (signal.SIGINT, *STOP_SIGNALS)}
    assert expected == SIGNAL_CODES


def test_the_signals_that_stop_a_run_are_the_ones_the_docs_name() -> None:
    rows = table(section(COMMANDS, "Signals"))
    stopping = next(k for k in rows if "SIGINT" in k)
    named = set(re.findall(r"SIG[A-Z]+", stopping))
    assert named == {s.name for s in (signal.SIGINT, *STOP_SIGNALS)}
    said = set(re.findall(r"SIG[A-Z]+", README.split("Ctrl-C (or ", 1)[1].split(")", 1)[0]))
    assert said | {"SIGINT"} == named


def test_exit_2_is_bad_input_and_nothing_was_done(tmp_path, capsys, synthetic_dir) -> None:
    assert "nothing was done" in EXIT_CODES["2"]
    out = tmp_path / "run"
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**tiny_parameters(2).to_dict(), "learning_rate": -1}))
    args = ["train", "--engine", "direct", "--params", str(params), "--data", str(synthetic_dir)]
    assert main([*args, "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_exit_1_is_a_run_that_failed(tmp_path, capsys, synthetic_dir, monkeypatch) -> None:
    from snn.errors import RunFailed

    assert "a run that failed" in EXIT_CODES["1"]

    def fail(spec: object) -> None:
        raise RunFailed("run failed at epoch 1 in Loss")

    monkeypatch.setattr("snn.engines.direct.train", fail)
    params = tmp_path / "p.json"
    params.write_text(tiny_parameters(2).to_json())
    args = ["train", "--engine", "direct", "--params", str(params), "--data", str(synthetic_dir)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", sorted(SIGNAL_CODES))
def test_a_signal_stops_a_direct_run_with_the_documented_code(
    signum: int, tmp_path: Path, synthetic_dir: Path
) -> None:
    """Each signal of the table ends a run with its code and one line; on the direct engine
    nothing is kept ("On the direct engine nothing is kept")."""
    assert "On the direct engine nothing is kept" in section(COMMANDS, "Signals")
    params, out = tmp_path / "p.json", tmp_path / "run"
    params.write_text(tiny_parameters(1_000_000).to_json())
    args = ["train", "--engine", "direct", "--params", str(params), "--data", str(synthetic_dir)]
    run = subprocess.Popen(
        [sys.executable, "-m", "snn.cli", *args, "--out", str(out), "--quiet"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (out / "progress.json").exists():  # the run has started
            assert run.poll() is None, run.communicate()
            time.sleep(0.01)
        run.send_signal(signum)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == SIGNAL_CODES[signum], err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
