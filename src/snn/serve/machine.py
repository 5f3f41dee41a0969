"""The state machine as a picture: boxes and arrows laid out from the definition itself
(statemachine/training.asl.json), so the drawing cannot drift from what runs.

Every state is a box; a Map (or Parallel) state is a container that holds the states of its
item processor (or branches), laid out the same way. Within one level, the states are put in
rows by their distance from StartAt (the longest path, loops left out) and in lanes: a state
continues its predecessor's lane, and each other branch opens a lane to the right. States reached
only through a Catch come last, in lanes of their own. Arrows run down between rows; a loop
runs up the left side; Catch arrows are dashed. Coordinates are SVG pixels, absolute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn.errors import SnnError

BOX_HEIGHT = 46
MIN_BOX_WIDTH = 120
CHAR_WIDTH = 7.4  # of the drawing's 12.5 px font, for the boxes' widths
LANE_GAP = 34
ROW_GAP = 40
PAD = 12  # inside a container
TITLE = 34  # a container's title band
COUNTS = 100  # room for a container's counts, right of its name
LOOP_MARGIN = 14  # per loop, left of a level
_OPERATORS = {
    "GreaterThanEquals": ">=",
    "LessThanEquals": "<=",
    "GreaterThan": ">",
    "LessThan": "<",
    "Equals": "==",
}


class DefinitionError(SnnError):
    """The state machine definition cannot be read or drawn."""


@dataclass
class Node:
    name: str
    path: str  # names from the top level down, joined by "/"
    type: str
    comment: str
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0
    subtitle: str = ""
    end: bool = False
    inner: list[Level] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "comment": self.comment,
            "subtitle": self.subtitle,
            "end": self.end,
            "container": bool(self.inner),
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "w": round(self.w, 1),
            "h": round(self.h, 1),
        }


@dataclass
class Level:
    """The states of one States object, laid out in a box of w x h at (x, y)."""

    nodes: dict[str, Node]
    start: str
    edges: list[tuple[str, str, str, str]]  # (from, to, kind, label)
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0


def _label(rule: dict[str, Any]) -> str:
    """A short text for a Choice rule, e.g. "epoch >= epochs"."""
    variable = str(rule.get("Variable", "")).split(".")[-1]
    for key, value in rule.items():
        for word, symbol in _OPERATORS.items():
            if key.startswith(("Numeric", "String", "Timestamp", "Boolean")) and word in key:
                shown = str(value).split(".")[-1] if key.endswith("Path") else json.dumps(value)
                return f"{variable} {symbol} {shown}"
    return next((k.lower() for k in ("And", "Or", "Not") if k in rule), "choice")


def _edges(name: str, state: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(from, to, kind, label) of a state, in this order: its Next or Default, its Choices,
    its Catches."""
    out = []
    if "Next" in state:
        out.append((name, state["Next"], "next", ""))
    if "Default" in state:
        out.append((name, state["Default"], "default", "otherwise"))
    rules: dict[str, list[str]] = {}  # one arrow per target: its rules joined by "or"
    for rule in state.get("Choices", []):
        rules.setdefault(rule["Next"], []).append(_label(rule))
    for target, labels in rules.items():
        out.append((name, target, "choice", " or ".join(labels)))
    for catch in state.get("Catch", []):
        out.append((name, catch["Next"], "catch", "catch"))
    return out


def _subtitle(state: dict[str, Any]) -> str:
    if state["Type"] == "Map":
        items = str(state.get("ItemsPath", "")).split(".")[-1] or "items"
        limit = state.get("MaxConcurrency", 0)
        at_once = (
            "one at a time" if limit == 1 else "all at once" if not limit else f"{limit} at once"
        )
        return f"Map over {items}, {at_once}"
    return "Parallel" if state["Type"] == "Parallel" else ""


def _level(machine: dict[str, Any], parent: str) -> Level:
    states = machine["States"]
    nodes: dict[str, Node] = {}
    edges = []
    for name, state in states.items():
        path = f"{parent}/{name}" if parent else name
        node = Node(
            name,
            path,
            state["Type"],
            state.get("Comment", ""),
            end=bool(state.get("End")),
            subtitle=_subtitle(state),
        )
        inner = state.get("ItemProcessor") or state.get("Iterator")
        node.inner = (
            [_level(inner, path)] if inner else [_level(b, path) for b in state.get("Branches", [])]
        )
        nodes[name] = node
        edges += [e for e in _edges(name, state) if e[1] in states]
    level = Level(nodes, machine["StartAt"], edges)
    _place(level)
    return level


def _place(level: Level) -> None:
    """Sizes, rows and lanes of a level's states (its containers' insides first)."""
    for node in level.nodes.values():
        width = max(MIN_BOX_WIDTH, CHAR_WIDTH * max(len(node.name), 0.8 * len(node.subtitle)) + 28)
        if node.inner:
            width = max(width, CHAR_WIDTH * len(node.name) + 28 + COUNTS)
            node.w = max(width, sum(sub.w for sub in node.inner) + PAD * (len(node.inner) + 1))
            node.h = TITLE + max(sub.h for sub in node.inner) + PAD
        else:
            node.w, node.h = width, BOX_HEIGHT
    out: dict[str, list[tuple[str, str]]] = {n: [] for n in level.nodes}
    for source, target, kind, _ in level.edges:
        out[source].append((target, kind))

    # Loops: arrows back to a state on the current path of a depth-first walk from StartAt
    # (then from every state not reached yet, in file order), Catch arrows last.
    loops: set[tuple[str, str]] = set()
    seen: set[str] = set()

    def find_loops(name: str, on_path: list[str]) -> None:
        seen.add(name)
        on_path.append(name)
        for target, _kind in sorted(out[name], key=lambda e: e[1] == "catch"):
            if target in on_path:
                loops.add((name, target))
            elif target not in seen:
                find_loops(target, on_path)
        on_path.pop()

    # Lanes: a state continues the lane of the state whose first arrow reaches it first; the
    # other arrows open lanes to the right. Catch arrows open none: states reached only through
    # them get lanes of their own, last.
    lane: dict[str, int] = {}
    lanes = 0

    def walk(name: str) -> None:
        nonlocal lanes
        first = True
        for target, kind in out[name]:
            if kind == "catch":
                continue
            if target not in lane:
                if first:
                    lane[target] = lane[name]
                else:
                    lane[target], lanes = lanes, lanes + 1
                walk(target)
            first = False

    for name in [level.start, *level.nodes]:
        if name not in seen:
            find_loops(name, [])
        if name not in lane:
            lane[name], lanes = lanes, lanes + 1
            walk(name)

    # Rows: the longest path from the start over every arrow but the loops (Catch ones too, so
    # a failure handler sits below the states it catches).
    row = dict.fromkeys(level.nodes, 0)
    for _ in level.nodes:  # at most one pass per state for the longest path to settle
        changed = False
        for source, target, _, _ in level.edges:
            if (source, target) not in loops and row[target] < row[source] + 1:
                row[target], changed = row[source] + 1, True
        if not changed:
            break

    left = LOOP_MARGIN * len(loops)
    widths = [max(n.w for k, n in level.nodes.items() if lane[k] == i) for i in range(lanes)]
    heights = [
        max((n.h for k, n in level.nodes.items() if row[k] == r), default=0)
        for r in range(max(row.values()) + 1)
    ]
    for name, node in level.nodes.items():
        node.x = left + sum(widths[: lane[name]]) + LANE_GAP * lane[name]
        node.x += (widths[lane[name]] - node.w) / 2
        node.y = sum(heights[: row[name]]) + ROW_GAP * row[name] + (heights[row[name]] - node.h) / 2
    level.w = left + sum(widths) + LANE_GAP * (lanes - 1)
    level.h = sum(heights) + ROW_GAP * (len(heights) - 1)
    level.edges = [(s, t, "loop" if (s, t) in loops else k, lb) for s, t, k, lb in level.edges]


def _flatten(level: Level, dx: float, dy: float, nodes: list, edges: list) -> None:
    """Absolute coordinates, containers before what they hold, and the arrows' routes."""
    for node in level.nodes.values():
        node.x, node.y = node.x + dx, node.y + dy
        nodes.append(node.as_dict())
        x = node.x + (node.w - sum(s.w for s in node.inner) - PAD * (len(node.inner) - 1)) / 2
        for sub in node.inner:
            _flatten(sub, x, node.y + TITLE, nodes, edges)
            x += sub.w + PAD
    loops = 0
    for source, target, kind, label in level.edges:
        a, b = level.nodes[source], level.nodes[target]
        gap = a.y + a.h + ROW_GAP / 2
        if kind == "loop":
            loops += 1
            x = dx + LOOP_MARGIN * (loops - 1) + 2
            points = [
                (a.x, a.y + a.h / 2),
                (x, a.y + a.h / 2),
                (x, b.y + b.h / 2),
                (b.x, b.y + b.h / 2),
            ]
        elif kind == "catch":
            start = a.x + a.w - 10
            points = [
                (start, a.y + a.h),
                (start, gap + 6),
                (b.x + b.w / 2, gap + 6),
                (b.x + b.w / 2, b.y),
            ]
        else:
            ax, bx = a.x + a.w / 2, b.x + b.w / 2
            points = (
                [(ax, a.y + a.h), (ax, gap), (bx, gap), (bx, b.y)]
                if ax != bx
                else [(ax, a.y + a.h), (bx, b.y)]
            )
        path_of = {n: level.nodes[n].path for n in (source, target)}
        edges.append(
            {
                "from": path_of[source],
                "to": path_of[target],
                "kind": kind,
                "label": label,
                "points": [[round(x, 1), round(y, 1)] for x, y in points],
            }
        )


def graph(definition: dict[str, Any]) -> dict[str, Any]:
    """{"width", "height", "nodes": [...], "edges": [...]} of a state machine definition."""
    try:
        top = _level(definition, "")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DefinitionError(f"not a state machine definition this can draw ({exc!r})") from None
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    margin = 16
    _flatten(top, margin, margin + 24, nodes, edges)  # room above for the start arrow
    return {
        "width": round(top.w + 2 * margin, 1),
        "height": round(top.h + 2 * margin + 24, 1),
        "start": top.nodes[top.start].path,
        "nodes": nodes,
        "edges": edges,
    }


def read_graph(path: Path) -> dict[str, Any]:
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DefinitionError(f"{path}: cannot be read ({exc})") from None
    return graph(definition)
