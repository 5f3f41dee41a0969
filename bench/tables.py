"""The bench's Markdown tables, from its measurements (medians over the repetitions)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Protocol

Row = dict[str, Any]


class CaseLike(Protocol):
    network: str
    engine: str
    threads: str
    load: int


Results = dict[Any, list[dict[str, Any]]]


def markdown(rows: Sequence[Row]) -> str:
    """A Markdown table of `rows` (columns in order of first appearance)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def grain_of(engine: str) -> str:
    """ "layer" or "neuron": how many neurons each task computes."""
    return engine.partition("-")[2] or "layer"


def median(rs: list[dict[str, Any]], key: str = "wall_seconds") -> float:
    return statistics.median(r[key] for r in rs)


class Lookup:
    """Medians by (network, engine, threads, load)."""

    def __init__(self, results: Results) -> None:
        self.results = results

    def find(self, network: str, engine: str, threads: str = "chosen", load: int = 0) -> Any:
        for c in self.results:
            if (c.network, c.engine, c.threads, c.load) == (network, engine, threads, load):
                return c
        return None

    def seconds(self, *key: Any) -> float | None:
        c = self.find(*key)
        return median(self.results[c]) if c is not None else None


def _ratio(a: float | None, b: float | None) -> float | str:
    return round(a / b, 2) if a is not None and b else ""


def engines_table(results: Results, network: str, epochs: int) -> list[Row]:
    """Each engine alone with the chosen threads: time, ratios, what the local engine does."""
    look = Lookup(results)
    rows = []
    for c, rs in results.items():
        if (c.network, c.threads, c.load) != (network, "chosen", 0):
            continue
        s = median(rs)
        grain = grain_of(c.engine)
        row: Row = {
            "engine": c.engine,
            "median s": round(s, 2),
            "/ direct, same grain": _ratio(s, look.seconds(network, f"direct-{grain}")),
            "/ direct-layer": _ratio(s, look.seconds(network, "direct-layer")),
            "/ textbook": _ratio(s, look.seconds(network, "textbook")),
        }
        r0 = rs[0]
        local = "state_transitions" in r0

        def per_epoch(
            key: str, digits: int = 1, scale: float = 1.0, r0: dict = r0, local: bool = local
        ) -> float | str:
            return round(r0[key] / epochs / scale, digits) if local else ""

        row |= {
            "transitions / epoch": per_epoch("state_transitions"),
            "invocations / epoch": per_epoch("lambda_invocations"),
            "S3 requests / epoch": per_epoch("s3_requests"),
            "DynamoDB requests / epoch": per_epoch("dynamodb_requests"),
            "S3 MB / epoch": per_epoch("s3_bytes", 2, 1e6),
            "executions": r0["executions"] if local else "",
        }
        row |= {
            "peak RSS MB": round(max(r["peak_rss_mb"] for r in rs)),
            "final cost": repr(r0["final_cost"]),
            "weights": r0["weights"],
        }
        rows.append(row)
    return rows


def threads_table(results: Results, network: str) -> list[Row]:
    """Each engine and thread policy, alone and next to the load: wall and CPU time."""
    look = Lookup(results)
    rows = []
    loads = sorted({c.load for c in results if c.network == network})
    for c, rs in results.items():
        if c.network != network or c.load != 0:
            continue
        row: Row = {
            "engine": c.engine,
            "threads": f"{c.threads} ({_threads(rs)})",
            "alone s": round(median(rs), 2),
            "alone CPU s": round(median(rs, "cpu_seconds"), 2),
        }
        for load in loads[1:]:
            loaded = look.find(network, c.engine, c.threads, load)
            if loaded is None:
                continue
            ls = results[loaded]
            row |= {
                f"load {load} s": round(median(ls), 2),
                f"load {load} CPU s": round(median(ls, "cpu_seconds"), 2),
                f"load {load} / alone": _ratio(median(ls), median(rs)),
            }
        row["peak RSS MB"] = round(
            max(r["peak_rss_mb"] for k, v in results.items() if _same(k, c) for r in v)
        )
        rows.append(row)
    return rows


def _same(a: CaseLike, b: CaseLike) -> bool:
    return (a.network, a.engine, a.threads) == (b.network, b.engine, b.threads)


def _threads(rs: list[dict[str, Any]]) -> str:
    counts = sorted({n for r in rs for n in r.get("blas_threads", [])})
    return "/".join(str(n) for n in counts) or "?"


def deep_table(results: Results, network: str) -> list[Row]:
    """The deeper network: the direct engine and the textbook loop, one neuron per task against
    a whole layer."""
    look = Lookup(results)
    rows = []
    for c, rs in results.items():
        if (c.network, c.threads, c.load) != (network, "chosen", 0):
            continue
        grain = grain_of(c.engine)
        kind = c.engine.partition("-")[0]
        whole = "textbook" if kind == "textbook" else f"{kind}-layer"
        rows.append(
            {
                "network": network,
                "engine": c.engine,
                "median s": round(median(rs), 2),
                "/ same engine, whole layer": _ratio(median(rs), look.seconds(network, whole)),
                "/ textbook, same grain": _ratio(
                    median(rs),
                    look.seconds(network, "textbook" if grain == "layer" else "textbook-neuron"),
                ),
                "peak RSS MB": round(max(r["peak_rss_mb"] for r in rs)),
                "final cost": repr(rs[0]["final_cost"]),
                "weights": rs[0]["weights"],
            }
        )
    return rows


def agreement(results: Results) -> list[str]:
    """Per network, grain and thread policy: do all engines end with the same bits?"""
    groups: dict[tuple[str, str, str], set[tuple[float, str]]] = {}
    for c, rs in results.items():
        grain = grain_of(c.engine)
        for r in rs:
            groups.setdefault((c.network, grain, c.threads), set()).add(
                (r["final_cost"], r["weights"])
            )
    lines = []
    for (network, grain, threads), seen in sorted(groups.items()):
        verdict = "the same" if len(seen) == 1 else f"{len(seen)} different results"
        lines.append(
            f"- {network}, {grain}, {threads} threads: {verdict} "
            f"(final cost {', '.join(repr(c) for c, _ in sorted(seen))})"
        )
    return lines


def ratios(results: Results, reference: str, deep: str | None) -> list[Row]:
    """What the run's measurements say of the software, as ratios of times measured side by
    side (docs/performance.md explains each)."""
    look = Lookup(results)
    rows: list[Row] = []

    def add(what: str, value: float | str, meaning: str) -> None:
        if value != "":
            rows.append({"ratio": what, "measured": value, "what it measures": meaning})

    loads = sorted({c.load for c in results} - {0})
    for load in loads:
        for grain in ("layer", "neuron"):
            engine = f"direct-{grain}"
            add(
                f"{engine} under load {load} / alone (chosen threads)",
                _ratio(
                    look.seconds(reference, engine, "chosen", load),
                    look.seconds(reference, engine),
                ),
                "how much a busy neighbour slows a run (1: not at all)",
            )
    for grain in ("layer", "neuron"):
        add(
            f"local-{grain} / direct-{grain}",
            _ratio(
                look.seconds(reference, f"local-{grain}"),
                look.seconds(reference, f"direct-{grain}"),
            ),
            "the state machine's cost over the same arithmetic in a plain loop",
        )
    if deep:
        add(
            f"{deep}: direct-neuron / direct-layer",
            _ratio(look.seconds(deep, "direct-neuron"), look.seconds(deep, "direct-layer")),
            "one neuron per task against a whole layer: the cost of the finer grain",
        )
        add(
            f"{deep}: textbook-neuron / textbook",
            _ratio(look.seconds(deep, "textbook-neuron"), look.seconds(deep, "textbook")),
            "the finer grain's arithmetic alone: the floor of the ratio above",
        )
    peak = max(r["peak_rss_mb"] for rs in results.values() for r in rs)
    add(
        "peak RSS of any engine (MB)",
        round(peak),
        "the most memory one measurement's process held",
    )
    return rows


def report(results: Results, epochs: int, reps: int, command: str) -> str:
    """Every table of the run, in Markdown, with the command that made it."""
    networks = list(dict.fromkeys(c.network for c in results))
    reference, deep = networks[0], (networks[1] if len(networks) > 1 else None)
    parts = [
        f"Command: `{command}` ({epochs} epochs, {reps} repetition(s), medians).",
        f"\n### {reference}, each engine alone, chosen threads\n",
        markdown(engines_table(results, reference, epochs)),
    ]
    if len({(c.threads, c.load) for c in results if c.network == reference}) > 1:
        parts += [
            f"\n### {reference}, threads and load\n",
            markdown(threads_table(results, reference)),
        ]
    if deep:
        parts += [
            f"\n### {deep}, direct engine, chosen threads\n",
            markdown(deep_table(results, deep)),
        ]
    parts += ["\n### Ratios\n", markdown(ratios(results, reference, deep))]
    parts += ["\n### Same results\n", *agreement(results)]
    return "\n".join(parts)
