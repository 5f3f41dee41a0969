"""The documentation against the code: README.md and docs/*.md.

- Every command shown in a code block (``sh``, ``bash``, ``shell``, ``console``) is either run
  here, as shown, and exits as expected, or named below with the reason it is not (a long run,
  an AWS account, a server that runs until stopped, a tool outside SNN).
- Every relative link resolves to a file (and a ``#heading`` to a heading of that file).
- README.md is at most 250 lines.
- README.md's Mermaid diagram names exactly the states of statemachine/training.asl.json, and
  draws exactly its transitions.
- docs/commands.md has a row for every flag of every `snn` command, and none that is gone;
  docs/parameters.md a row for every field of parameters.json, and none that is gone.
- examples/reference.json is the reference network, and parameters.json the seed's smoke run.

The `snn` commands run in-process (`snn.cli.main`), each in a fresh folder that holds what the
docs' commands name: parameters.json, examples/, template.yaml, statemachine/, a small synthetic
data set in the real files' layout (SNN_DATA_DIR), a run folder runs/reference trained on it,
and the pictures the docs classify.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFINITION = ROOT / "statemachine" / "training.asl.json"
MAX_README_LINES = 250

# --- commands the test does not run, and why ---------------------------------------------------

# Programs other than snn, by their name (the first word that is not a VAR=value assignment).
OTHER_PROGRAMS = {
    "make": "a make target installs the project into .venv, then runs a long job "
    "(the set-up commands; CI runs `make lint` and `make test`)",
    "sam": "the AWS SAM CLI: needs an AWS account, or Docker for `sam local invoke`",
    "aws": "the AWS CLI: needs an AWS account",
    "curl": "calls the function URL of a deployed stack",
    "printf": "writes a request for a deployed stack's function",
    "apt-get": "installs system packages",
    "docker": "registers QEMU with the kernel (privileged): a change to the machine",
    ".": "activates the virtualenv in the user's shell",
    "source": "activates the virtualenv in the user's shell",
    "export": "sets the environment of the commands after it",
}
BENCHMARK = "a benchmark: minutes to hours of measurements (docs/performance.md)"
AWS_ENGINE = "--engine aws needs an AWS account and a deployed stack"
SERVER = (
    "a server that runs until stopped; tests/unit/test_serve.py, tests/browser and "
    "tests/integration/test_emulator_command.py drive them"
)
# snn commands shown as they are, not run here.
LONG_OR_OTHER = {
    "snn train --params examples/reference.json --run-id reference": (
        "2,500 epochs on the local engine: several minutes; "
        "tests/integration/test_reference.py trains the same network"
    ),
    "snn train --resume runs/reference": "needs a run stopped part-way; "
    "tests/integration/test_resume.py stops and resumes runs",
}
# Commands shown failing on purpose, and the exit code they must end with.
EXPECTED_EXIT = {"snn train --params broken.json": 2}
# Pictures the docs classify, made in the folder each command runs in.
PICTURES = ("my-cat.jpg", "not-a-cat.png")
# A parameters file the docs show being refused.
BROKEN_PARAMETERS = {
    "epochs": 10,
    "layers": 2,
    "activations": {"layer1": "relu", "layer2": "sigmoid"},
    "neurons": {"layer1": 3},
    "learning_rate": 0.0075,
}


# --- reading the docs ----------------------------------------------------------------------------

# A fenced code block, at the margin or indented (in a list item).
FENCE = re.compile(r"^([ \t]*)```([\w-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)
SHELL = {"sh", "bash", "shell", "console"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    doc: str  # the document's path from the project root
    line: int
    text: str  # as shown, continuation lines joined
    words: tuple[str, ...]  # shell words, without the trailing comment

    @property
    def shown(self) -> str:
        return " ".join(self.words)

    @property
    def program_words(self) -> tuple[str, ...]:
        """The words from the program on: leading VAR=value assignments dropped, and for
        VAR=$(command ...), the command's."""
        i = 0
        while i < len(self.words) and ASSIGNMENT.match(self.words[i]):
            value = self.words[i].split("=", 1)[1]
            if value.startswith("$("):
                return (value[2:], *self.words[i + 1 :])
            i += 1
        return self.words[i:]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> Iterator[tuple[str, int, str]]:
    """(language, line of the first line of the body, body) of every fenced code block."""
    text = path.read_text(encoding="utf-8")
    for m in FENCE.finditer(text):
        yield m.group(2), text.count("\n", 0, m.start(3)) + 1, textwrap.dedent(m.group(3))


def commands_in(path: Path) -> list[Command]:
    """The commands of a document's shell blocks. In a `console` block the commands are the
    lines after a `$ ` prompt; in the others every line that is not blank or a comment. A line
    ending in a backslash goes on on the next."""
    doc = path.relative_to(ROOT).as_posix()
    out = []
    for language, first, body in blocks(path):
        if language not in SHELL:
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line, number = lines[i], first + i
            i += 1
            if language == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            out.append(Command(doc, number, line.strip(), tuple(shlex.split(line, comments=True))))
    return out


ALL_COMMANDS = [c for path in DOCS for c in commands_in(path)]


def why_not_run(command: Command) -> str | None:
    """The reason a command is shown but not run here, or None if the test runs it."""
    words = command.program_words
    if not words:
        return "assigns a shell variable"
    program = words[0]
    if program in OTHER_PROGRAMS:
        return OTHER_PROGRAMS[program]
    if Path(program).name.startswith("python"):
        if words[1:3] == ("-m", "pytest"):
            return "runs the tests themselves"
        if len(words) > 1 and words[1].startswith("bench/"):
            return BENCHMARK
    if program != "snn":
        return None
    if command.shown in LONG_OR_OTHER:
        return LONG_OR_OTHER[command.shown]
    if words[1:2] in (("serve",), ("emulator",)) and "--help" not in words:
        return SERVER
    if engine(words) == "aws":
        return AWS_ENGINE
    return None


def engine(words: tuple[str, ...]) -> str | None:
    """The value of a command's --engine, if it has one."""
    if "--engine" not in words:
        return None
    rest = words[words.index("--engine") + 1 :]
    return rest[0] if rest else None


def is_slow(words: tuple[str, ...]) -> bool:
    """A run on the local engine (`snn train` without --engine direct, `snn bill`) stands the
    emulated stack up, and `snn inspect` draws its figures: a few seconds at least."""
    if "--help" in words or "-h" in words:
        return False
    if words[1:2] in (("bill",), ("inspect",)):
        return True
    return words[1:2] == ("train",) and engine(words) != "direct"


def run_params() -> list[Any]:
    params = []
    for c in ALL_COMMANDS:
        words = c.program_words
        if why_not_run(c) is not None or not words or words[0] != "snn":
            continue
        slow = is_slow(words) and c.shown not in EXPECTED_EXIT  # refused at once
        marks = [pytest.mark.slow, pytest.mark.xdist_group("embedded")] if slow else []
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


# --- where the commands run ----------------------------------------------------------------------


@contextmanager
def environment_kept() -> Iterator[None]:
    """Whatever a command sets in os.environ (--blas-threads does) is undone afterwards."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def snn(argv: list[str]) -> int:
    from snn.cli import main

    with environment_kept():
        try:
            return main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the docs' commands name, once: copied afresh for each command."""
    from PIL import Image

    from snn.data import synthetic_images, write_h5_pair

    base = tmp_path_factory.mktemp("docs-workspace")
    for name in ("parameters.json", "template.yaml"):
        shutil.copy(ROOT / name, base / name)
    for folder in ("examples", "statemachine"):
        shutil.copytree(ROOT / folder, base / folder)
    (base / "broken.json").write_text(json.dumps(BROKEN_PARAMETERS), encoding="utf-8")
    data = write_h5_pair(base / "data", *synthetic_images(size=4, m_train=24, m_test=8))
    rng = np.random.default_rng(0)
    for name in PICTURES:
        pixels = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(base / name)
    cwd = Path.cwd()
    os.chdir(base)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SNN_DATA_DIR", str(data))
            argv = ["train", "--engine", "direct", "--params", "examples/reference.json"]
            code = snn([*argv, "--epochs", "3", "--run-id", "reference", "--quiet"])
    finally:
        os.chdir(cwd)
    assert code == 0, "could not train runs/reference for the docs' commands"
    return base


@pytest.fixture
def sandbox(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(workspace, folder)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SNN_DATA_DIR", str(folder / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return folder


def argv_of(command: Command, folder: Path) -> list[str]:
    """The command's arguments after `snn`, with $VARS and globs expanded as a shell would."""
    out: list[str] = []
    for word in command.program_words[1:]:
        word = os.path.expandvars(word)
        matches = sorted(glob.glob(word, root_dir=folder)) if any(c in word for c in "*?[") else []
        out.extend(matches or [word])
    return out


# --- the tests -----------------------------------------------------------------------------------


def test_every_command_is_run_or_excused() -> None:
    unknown = [
        f"{c.id}: {c.text}"
        for c in ALL_COMMANDS
        if why_not_run(c) is None and (not c.program_words or c.program_words[0] != "snn")
    ]
    assert not unknown, (
        "commands in the docs that this test neither runs nor excuses (add the program to "
        "OTHER_PROGRAMS, or the command to LONG_OR_OTHER, with the reason):\n" + "\n".join(unknown)
    )


def test_excused_commands_are_still_shown() -> None:
    shown = {c.shown for c in ALL_COMMANDS}
    stale = [c for c in (*LONG_OR_OTHER, *EXPECTED_EXIT) if c not in shown]
    assert not stale, f"listed here but shown in no doc any more: {stale}"


def test_the_docs_show_commands() -> None:
    assert len(run_params()) >= 10, "the docs test found few commands to run: is FENCE broken?"


@pytest.mark.parametrize("command", run_params())
def test_command_runs_as_shown(command: Command, sandbox: Path) -> None:
    expected = EXPECTED_EXIT.get(command.shown, 0)
    code = snn(argv_of(command, sandbox))
    assert code == expected, f"{command.id}: `{command.text}` exited {code}, not {expected}"


# --- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text without code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(prose_keep_headings(path))}


def prose_keep_headings(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, over {MAX_README_LINES}"


# --- the diagram against the definition ----------------------------------------------------------

# A node with its shape and quoted label: id["label"], id{"label"}, id(["label"]), id[("label")],
# id{{"label"}}, ...
OPEN = r"\(\[|\[\(|\[\[|\(\(|\{\{|\[|\{|\("
CLOSE = r"\]\)|\)\]|\]\]|\)\)|\}\}|\]|\}|\)"
SHAPE = re.compile(rf"\b([A-Za-z_]\w*)\s*({OPEN})\"([^\"]*)\"({CLOSE})")
SUBGRAPH = re.compile(r"^subgraph\s+([A-Za-z_]\w*)\s*\[\"([^\"]*)\"\]\s*$")
ARROW = re.compile(r"\s*(<-->|-->|-\.->|==>)\s*")
STATE_MACHINE = "sfn"  # the diagram's subgraph that holds the state machine


def state_name(label: str) -> str:
    """A state's name: its label's first word (state names have no spaces; what follows, if
    anything, describes the state)."""
    return re.split(r"<br\s*/?>|\s", label.strip())[0]


def definition_graph(states: dict[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
    """Every state name (Map states' own states too) and every transition: Next, a Choice's
    rules and Default, and Catch."""
    names: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for name, state in states.items():
        names.add(name)
        targets = [state.get("Next"), state.get("Default")]
        targets += [rule.get("Next") for rule in state.get("Choices", [])]
        targets += [catch.get("Next") for catch in state.get("Catch", [])]
        edges |= {(name, t) for t in targets if t}
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            inner_names, inner_edges = definition_graph(processor["States"])
            names |= inner_names
            edges |= inner_edges
    return names, edges


def mermaid() -> str:
    found = [body for language, _, body in blocks(ROOT / "README.md") if language == "mermaid"]
    assert len(found) == 1, "README.md must hold exactly one mermaid diagram"
    return found[0]


def diagram_graph(diagram: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(node or subgraph id -> state name, for those inside the state machine's subgraph;
    every edge between two ids)."""
    states: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    stack: list[str] = []
    for raw in diagram.splitlines():
        line = raw.strip()
        if not line or line.startswith(("%%", "flowchart", "graph", "classDef", "class ", "style")):
            continue
        sub = SUBGRAPH.match(line)
        if sub:
            if STATE_MACHINE in stack:
                states[sub.group(1)] = state_name(sub.group(2))
            stack.append(sub.group(1))
            continue
        if line == "end":
            stack.pop()
            continue
        if STATE_MACHINE in stack:
            for node_id, _, label, _ in SHAPE.findall(line):
                states[node_id] = state_name(label)
        plain = SHAPE.sub(r"\1", line)
        plain = re.sub(r"\|[^|]*\|", "", plain)
        parts = ARROW.split(plain)
        for i in range(1, len(parts) - 1, 2):
            left = [p.strip() for p in parts[i - 1].split("&")]
            right = [p.strip() for p in parts[i + 1].split("&")]
            for a in left:
                for b in right:
                    edges.add((a, b))
                    if parts[i] == "<-->":
                        edges.add((b, a))
    assert not stack, f"unclosed subgraphs in the diagram: {stack}"
    return states, edges


def test_the_diagram_names_exactly_the_definitions_states() -> None:
    names, _ = definition_graph(json.loads(DEFINITION.read_text(encoding="utf-8"))["States"])
    drawn, _ = diagram_graph(mermaid())
    assert sorted(drawn.values()) == sorted(set(drawn.values())), "a state is drawn twice"
    assert set(drawn.values()) == names, (
        f"missing from the diagram: {sorted(names - set(drawn.values()))}; "
        f"drawn but not in the definition: {sorted(set(drawn.values()) - names)}"
    )


def test_the_diagram_draws_exactly_the_definitions_transitions() -> None:
    _, transitions = definition_graph(json.loads(DEFINITION.read_text(encoding="utf-8"))["States"])
    drawn, edges = diagram_graph(mermaid())
    between_states = {(drawn[a], drawn[b]) for a, b in edges if a in drawn and b in drawn}
    assert between_states == transitions, (
        f"missing from the diagram: {sorted(transitions - between_states)}; "
        f"drawn but not in the definition: {sorted(between_states - transitions)}"
    )


# --- reference pages against the code ------------------------------------------------------------

ROW = re.compile(r"^\|\s*`([^`]+)`", re.M)


def section(path: Path, heading: str) -> str:
    """The text under a level-2 heading, up to the next heading of any level."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n#", start + 1)
    return text[start : end if end >= 0 else None]


def subcommands() -> dict[str, set[str]]:
    """Each `snn` command and its long flags (--help aside)."""
    import argparse

    from snn.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name: {
            flag
            for action in command._actions
            for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"
        }
        for name, command in sub.choices.items()
    }


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_commands_doc_has_a_row_per_flag(name: str) -> None:
    text = section(ROOT / "docs" / "commands.md", f"`snn {name}`")
    rows = {row.split()[0] for row in ROW.findall(text) if row.startswith("--")}
    flags = subcommands()[name]
    assert rows == flags, (
        f"snn {name}: flags without a row in docs/commands.md: {sorted(flags - rows)}; "
        f"rows for flags that do not exist: {sorted(rows - flags)}"
    )


def test_parameters_doc_has_a_row_per_field() -> None:
    from snn import parameters, training

    fields = {*parameters.REQUIRED, *parameters.OPTIONAL, *training.FIELDS}
    rows = set(ROW.findall(section(ROOT / "docs" / "parameters.md", "Fields")))
    assert rows == fields, (
        f"fields without a row in docs/parameters.md: {sorted(fields - rows)}; "
        f"rows for fields that do not exist: {sorted(rows - fields)}"
    )


def test_parameters_doc_examples_are_valid() -> None:
    from snn.parameters import Parameters

    examples = [
        body for language, _, body in blocks(ROOT / "docs" / "parameters.md") if language == "json"
    ]
    assert examples, "docs/parameters.md shows no parameters.json"
    for body in examples:
        Parameters.from_json(body, source="an example of docs/parameters.md")


def test_reference_example_is_the_reference_network() -> None:
    from snn.parameters import Parameters

    example = Parameters.load(ROOT / "examples" / "reference.json")
    assert example == Parameters.from_dict(
        {
            "epochs": 2500,
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 7, "layer2": 1},
            "learning_rate": 0.0075,
            "seed": 1,
            "initialization": "scaled",
            "neurons_per_task": 7,
        }
    )


def test_every_example_is_valid_and_in_the_examples_table() -> None:
    """docs/parameters.md's Examples table has a row for each file of examples/, and nothing
    else; the files between them show every optimizer."""
    from snn.parameters import Parameters

    files = sorted((ROOT / "examples").glob("*.json"))
    rows = ROW.findall(section(ROOT / "docs" / "parameters.md", "Examples"))
    assert rows == [f"examples/{f.name}" for f in files], "one row per example, in name order"
    optimizers = set()
    for file in files:
        optimizers.add(Parameters.load(file).training.optimizer.name)
    assert optimizers == {"gd", "momentum", "rmsprop", "adam"}


def test_top_level_parameters_are_the_seeds_smoke_run() -> None:
    """README.md says so, and explains its accuracy."""
    raw = json.loads((ROOT / "parameters.json").read_text(encoding="utf-8"))
    assert raw == {
        "epochs": 10,
        "layers": 2,
        "activations": {"layer1": "relu", "layer2": "sigmoid"},
        "neurons": {"layer1": 3, "layer2": 1},
        "learning_rate": 0.0075,
    }


def test_make_targets_named_in_the_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    named = {
        word
        for path in DOCS
        for word in re.findall(r"`make ([a-z][\w-]*)", path.read_text(encoding="utf-8"))
    }
    named |= {
        c.program_words[1]
        for c in ALL_COMMANDS
        if c.program_words[:1] == ("make",) and len(c.program_words) > 1
    }
    missing = named - targets
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"
