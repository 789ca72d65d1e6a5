"""Turn ``results.jsonl`` into ``table.md`` (medians and ratios) and PNG plots.

``python -m wschannel.bench.report DIR`` remakes them from ``DIR/results.jsonl``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .clients import CLIENTS
from .payloads import size_label

ORDER = list(CLIENTS)
X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
Key = tuple[Any, ...]


def load(directory: Path) -> list[dict[str, Any]]:
    with (directory / "results.jsonl").open() as file:
        return [json.loads(line) for line in file if line.strip()]


def medians(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Key], value: str
) -> dict[Key, float]:
    samples: dict[Key, list[float]] = defaultdict(list)
    for record in records:
        if value in record:
            samples[key(record)].append(record[value])
    return {k: statistics.median(v) for k, v in samples.items()}


def _cell(record: dict[str, Any]) -> Key:
    return (record["variant"], record["inflight"], record["text"], record["size"])


def _cell_label(inflight: int, text: bool, size: int) -> str:
    mode = "request/response" if inflight == 1 else f"pipelined ({inflight})"
    return f"{mode}, {'text ' if text else ''}{size_label(size)}"


def _rate(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return DASH
    return f"{a / b:.2f}{X}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


class Results:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.meta = next((r for r in records if r.get("section") == "meta"), {})
        self.end = next((r for r in records if r.get("section") == "end"), {})
        self.echo = [r for r in records if r.get("section") == "echo"]
        self.compression = [r for r in records if r.get("section") == "compression"]
        self.load = [r for r in records if r.get("section") == "load"]
        self.broadcast = [r for r in records if r.get("section") == "broadcast"]
        self.memory = [r for r in records if r.get("section") == "memory"]
        self.native = [r for r in records if r.get("section") == "native"]
        self.errors = [r for r in records if "error" in r]
        self.echo_median = medians(self.echo, lambda r: (*_cell(r), r["impl"]), "msgs_per_s")

    def variants(self) -> list[str]:
        return list(dict.fromkeys(r["variant"] for r in self.echo))

    def cells(self, variant: str) -> list[Key]:
        cells = {_cell(r) for r in self.echo if r["variant"] == variant}
        return sorted(cells, key=lambda c: (c[1], c[2], c[3]))

    def impls(self, records: list[dict[str, Any]]) -> list[str]:
        present = {r["impl"] for r in records}
        return [i for i in ORDER if i in present]

    def echo_value(self, cell: Key, impl: str) -> float | None:
        return self.echo_median.get((*cell, impl))

    def ratios(self, variant: str, impl: str, base: str, inflight: int | None) -> list[float]:
        values = []
        for cell in self.cells(variant):
            if inflight is not None and cell[1] != inflight:
                continue
            a, b = self.echo_value(cell, impl), self.echo_value(cell, base)
            if a and b:
                values.append(a / b)
        return values


# -- the Markdown ---------------------------------------------------------------------------


def header_lines(results: Results) -> list[str]:
    meta, end = results.meta, results.end
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    before = meta.get("load_before")
    after = end.get("load_after")
    lines = [
        f"Run: {meta.get('date', '?')}, {meta.get('mode', '?')} mode, "
        f"{meta.get('reps', '?')} interleaved repetitions, "
        f"{meta.get('duration', '?')} s measured per cell after {meta.get('warmup', '?')} s "
        f"of warm-up, {end.get('seconds', 0) / 60:.1f} minutes in all.",
        "",
        f"Machine: {meta.get('nproc', '?')} CPUs, {meta.get('cpu', '?')}, "
        f"{meta.get('memory', '?')} memory, Linux {meta.get('kernel', '?')}, "
        f"Python {meta.get('python', '?')}; commit {meta.get('commit', '?')}.",
        "",
        f"Versions: {versions}.",
    ]
    if meta.get("skipped"):
        lines += ["", "Not run here: " + "; ".join(meta["skipped"]) + "."]
    if before and after:
        lines += [
            "",
            f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in before)}; "
            f"after: {', '.join(f'{x:.2f}' for x in after)}.",
        ]
    return lines


def targets_lines(results: Results) -> list[str]:
    """The ratios the project aims at, next to what this run measured."""
    rows: list[list[str]] = []

    def add(what: str, target: str, values: list[float], unit: str = X) -> None:
        if not values:
            return
        if len(values) == 1:
            measured = f"{values[0]:.2f}{unit}"
        else:
            measured = (
                f"{_geomean(values):.2f}{unit} (geometric mean; "
                f"{min(values):.2f}{DASH}{max(values):.2f} over {len(values)} cells)"
            )
        rows.append([what, target, measured])

    r = results
    add(
        "pipelined: wschannel callback / picows core",
        f"≥ 1.10{X}",
        r.ratios("plain", "wschannel", "picows", 64),
    )
    add(
        "pipelined: wschannel callback / raw TCP",
        f"≥ 1.00{X}",
        r.ratios("plain", "wschannel", "raw-tcp", 64),
    )
    add(
        "request/response on one core (taskset): wschannel / picows",
        f"≥ 1.15{X}",
        r.ratios("pinned", "wschannel", "picows", 1),
    )
    add(
        "request/response: wschannel / picows (two cores)",
        DASH,
        r.ratios("plain", "wschannel", "picows", 1),
    )
    add(
        "wschannel / websockets (all plain cells)",
        DASH,
        r.ratios("plain", "wschannel", "websockets", None),
    )
    add(
        "`async for` / callback (all plain cells)",
        f"≥ 0.85{X}",
        r.ratios("plain", "wschannel-async-for", "wschannel", None),
    )
    add(
        "sync client / websocket-client",
        f"≥ 3{X}",
        r.ratios("plain", "wschannel-sync", "websocket-client", None),
    )
    add(
        "sync client / websockets.sync",
        f"≥ 2{X}",
        r.ratios("plain", "wschannel-sync", "websockets-sync", None),
    )
    add(
        "server capacity under the native load generator (many connections, broadcast): "
        "wschannel / fastest native",
        f"≥ 0.8{X}",
        native_capacity_ratios(r, None),
    )
    add(
        "server capacity under the native load generator (many connections, broadcast): "
        "wschannel / picows",
        f"≥ 1.5{X}",
        native_capacity_ratios(r, "picows"),
    )
    memory = medians(
        r.memory, lambda m: (m["impl"], m["compression"], m["connections"]), "bytes_per_connection"
    )
    idle_memory = medians(
        [m for m in r.memory if "bytes_per_connection_idle" in m],
        lambda m: (m["impl"], m["compression"], m["connections"]),
        "bytes_per_connection_idle",
    )
    for compression, target in ((False, "≤ 10 KiB"), (True, "≤ 64 KiB")):
        for connections in sorted({m["connections"] for m in r.memory}):
            value = memory.get(("wschannel", compression, connections))
            what = " with deflate, right after its message" if compression else ""
            if value is not None:
                rows.append(
                    [
                        f"idle connection{what}, {connections:,} connections",
                        target,
                        f"{value / 1024:.1f} KiB",
                    ]
                )
            value = idle_memory.get(("wschannel", compression, connections))
            if value is not None:
                rows.append(
                    [
                        f"idle connection with deflate, idle for 11 s, {connections:,} connections",
                        target,
                        f"{value / 1024:.1f} KiB",
                    ]
                )
    deflate = medians(r.compression, lambda c: (c["impl"], c["inflight"]), "msgs_per_s")
    values = [
        deflate[("wschannel", inflight)] / deflate[("websockets", inflight)]
        for inflight in sorted({c["inflight"] for c in r.compression})
        if ("wschannel", inflight) in deflate and ("websockets", inflight) in deflate
    ]
    add("compression: wschannel / websockets", f"≥ 2{X}", values)
    if not rows:
        return []
    return ["## Targets", "", *_table(["ratio", "target", "measured"], rows), ""]


def echo_lines(results: Results) -> list[str]:
    lines: list[str] = []
    for variant in results.variants():
        records = [r for r in results.echo if r["variant"] == variant]
        impls = results.impls(records)
        cells = results.cells(variant)
        rows = [
            [_cell_label(*cell[1:]), *(_rate(results.echo_value(cell, i)) for i in impls)]
            for cell in cells
        ]
        lines += [f"## Echo, one connection: {variant}", "", "Messages per second (median):", ""]
        lines += [*_table(["cell", *impls], rows), ""]
        for base in ("picows", "raw-tcp"):
            if base not in impls:
                continue
            rows = [
                [
                    _cell_label(*cell[1:]),
                    *(
                        _ratio(results.echo_value(cell, i), results.echo_value(cell, base))
                        for i in impls
                    ),
                ]
                for cell in cells
            ]
            lines += [f"Ratio to {base}:", "", *_table(["cell", *impls], rows), ""]
    return lines


def compression_lines(results: Results) -> list[str]:
    if not results.compression:
        return []
    impls = results.impls(results.compression)
    values = medians(results.compression, lambda c: (c["impl"], c["inflight"]), "msgs_per_s")
    modes = sorted({c["inflight"] for c in results.compression})
    rows = []
    for impl in impls:
        row = [impl]
        for inflight in modes:
            row += [
                _rate(values.get((impl, inflight))),
                _ratio(values.get((impl, inflight)), values.get(("websockets", inflight))),
            ]
        rows.append(row)
    header = ["implementation"]
    for inflight in modes:
        mode = "request/response" if inflight == 1 else f"pipelined ({inflight})"
        header += [f"{mode} msg/s", f"{X} websockets"]
    return [
        "## Compression: JSON corpus, permessage-deflate on for everyone",
        "",
        *_table(header, rows),
        "",
    ]


def many_lines(results: Results) -> list[str]:
    lines: list[str] = []
    if results.load:
        counts = sorted({r["connections"] for r in results.load})
        values = medians(results.load, lambda r: (r["impl"], r["connections"]), "msgs_per_s")
        rows = []
        for impl in results.impls(results.load):
            row = [impl]
            for n in counts:
                row += [
                    _rate(values.get((impl, n))),
                    _ratio(values.get((impl, n)), values.get(("picows", n))),
                ]
            rows.append(row)
        header = ["server"]
        for n in counts:
            header += [f"{n:,} connections msg/s", f"{X} picows"]
        lines += [
            "## Server load: small messages echoed on many connections (picows client)",
            "",
            *_table(header, rows),
            "",
        ]
    if results.broadcast:
        values = medians(
            results.broadcast, lambda r: (r["impl"], r["connections"]), "deliveries_per_s"
        )
        rows = []
        for (impl, n), value in sorted(values.items(), key=lambda kv: ORDER.index(kv[0][0])):
            rows.append([impl, f"{n:,}", _rate(value), _ratio(value, values.get(("picows", n)))])
        lines += [
            "## Broadcast: one message to every client",
            "",
            *_table(["server", "clients", "deliveries/s", f"{X} picows"], rows),
            "",
        ]
    if results.memory:
        values = medians(
            results.memory,
            lambda m: (m["impl"], m["compression"], m["connections"]),
            "bytes_per_connection",
        )
        idle = medians(
            [m for m in results.memory if "bytes_per_connection_idle" in m],
            lambda m: (m["impl"], m["compression"], m["connections"]),
            "bytes_per_connection_idle",
        )
        columns = sorted({(m["compression"], m["connections"]) for m in results.memory})
        idle_columns = sorted({(c, n) for _, c, n in idle})
        rows = [
            [impl]
            + [
                DASH if (impl, c, n) not in values else f"{values[(impl, c, n)] / 1024:.1f}"
                for c, n in columns
            ]
            + [
                DASH if (impl, c, n) not in idle else f"{idle[(impl, c, n)] / 1024:.1f}"
                for c, n in idle_columns
            ]
            for impl in results.impls(results.memory)
        ]
        header = (
            ["server"]
            + [f"{n:,}{' deflate' if c else ''}" for c, n in columns]
            + [f"{n:,} deflate, after 11 s idle" for _, n in idle_columns]
        )
        lines += [
            "## Memory: server RSS growth per idle connection, KiB",
            "",
            *_table(header, rows),
            "",
        ]
    return lines


NATIVE_ORDER = ("wschannel", "picows", "tokio-tungstenite", "fastwebsockets")
NATIVE_SERVERS = ("tokio-tungstenite", "fastwebsockets")


def _busy(values: list[float]) -> str:
    """Busy fractions as a percentage of one core, or their range."""
    if not values:
        return DASH
    low, high = min(values), max(values)
    if round(low * 100) == round(high * 100):
        return f"{high:.0%}"
    return f"{low * 100:.0f}{DASH}{high:.0%}"


def native_capacity_ratios(results: Results, base: str | None) -> list[float]:
    """``wschannel``'s capacity over ``base``'s (``None``: the fastest native server's) in
    the cells of many small messages (load and broadcast), where the issue sets targets."""
    capacity = medians(results.native, lambda r: (r["impl"], r["cell"]), "capacity")
    ratios = []
    for cell in dict.fromkeys(r["cell"] for r in results.native if r.get("connections", 1) > 1):
        mine = capacity.get(("wschannel", cell))
        if base is None:
            natives = [v for s in NATIVE_SERVERS if (v := capacity.get((s, cell))) is not None]
            other = max(natives) if natives else None
        else:
            other = capacity.get((base, cell))
        if mine and other:
            ratios.append(mine / other)
    return ratios


def _native_rows(
    values: dict[Key, float], cell_names: list[str], servers: list[str]
) -> list[list[str]]:
    """A row per cell: each server's value, ``wschannel``'s ratio to the fastest native
    server's and to picows's."""
    rows = []
    for cell in cell_names:
        mine = values.get(("wschannel", cell))
        natives = [v for s in NATIVE_SERVERS if (v := values.get((s, cell))) is not None]
        best = max(natives) if natives else None
        rates = [_rate(values.get((s, cell))) for s in servers]
        rows.append([cell, *rates, _ratio(mine, best), _ratio(mine, values.get(("picows", cell)))])
    return rows


def native_lines(results: Results) -> list[str]:
    """Each server's rate per cell under the native load generator, and ``wschannel``'s
    ratio to the fastest native server and to picows; then each server's CPU busy fraction
    and capacity (rate per server CPU-second) with the same ratios, where the records have
    them."""
    if not results.native:
        return []
    cell_names = list(dict.fromkeys(r["cell"] for r in results.native))
    servers = [s for s in NATIVE_ORDER if any(r["impl"] == s for r in results.native)]
    header = ["cell", *servers, f"wschannel {X} fastest native", f"wschannel {X} picows"]
    rates = medians(results.native, lambda r: (r["impl"], r["cell"]), "rate")
    lines = [
        "## Servers under a native load generator (messages/s; broadcast: deliveries/s)",
        "",
        "Every server on one thread; the load generator (`benchmarks/native`, Rust,",
        "tokio-tungstenite's client) on the other core.",
        "",
        *_table(header, _native_rows(rates, cell_names, servers)),
        "",
    ]
    measured = [r for r in results.native if "capacity" in r]
    if not measured:
        return lines
    capacity = medians(measured, lambda r: (r["impl"], r["cell"]), "capacity")
    busy = medians(measured, lambda r: (r["impl"], r["cell"]), "server_busy")
    loadgen: dict[str, list[float]] = defaultdict(list)
    for record in measured:
        loadgen[record["cell"]].append(record["loadgen_busy"])
    rows = []
    for cell in cell_names:
        mine = capacity.get(("wschannel", cell))
        natives = [v for s in NATIVE_SERVERS if (v := capacity.get((s, cell))) is not None]
        best = max(natives) if natives else None
        shown = [
            DASH
            if (s, cell) not in capacity
            else f"{_rate(capacity[s, cell])} ({busy[s, cell]:.0%})"
            for s in servers
        ]
        rows.append(
            [
                cell,
                *shown,
                _busy(loadgen.get(cell, [])),
                _ratio(mine, best),
                _ratio(mine, capacity.get(("picows", cell))),
            ]
        )
    header = [
        "cell",
        *servers,
        "load generator busy",
        f"wschannel {X} fastest native",
        f"wschannel {X} picows",
    ]
    lines += [
        "### Capacity: messages per server CPU-second (server busy, % of one core)",
        "",
        "Each server process's CPU time (user + system, all threads) over the load",
        "generator's measurement window, read by the load generator as it reads its count;",
        "capacity = rate / busy, per measurement (medians over the repetitions). When every",
        "server is well under 100 % busy, the load generator is the cap (its own busy share",
        "is beside it) and the rates above cannot tell the servers apart: capacity is the",
        "comparable figure, and its ratios are the ones that count.",
        "",
        *_table(header, rows),
        "",
    ]
    return lines


def markdown(results: Results) -> str:
    lines = ["# Benchmark results", "", *header_lines(results), ""]
    lines += targets_lines(results)
    lines += echo_lines(results)
    lines += compression_lines(results)
    lines += many_lines(results)
    lines += native_lines(results)
    if results.errors:
        lines += ["## Errors", ""]
        for record in results.errors:
            what = {k: v for k, v in record.items() if k != "error"}
            lines.append(f"- `{json.dumps(what)}`: {record['error'].splitlines()[-1]}")
        lines.append("")
    return "\n".join(lines)


# -- the plots ------------------------------------------------------------------------------


_PANEL_KEYS: dict[str, Callable[[dict[str, Any]], Key]] = {
    "memory": lambda r: (r["impl"], (r["compression"], r["connections"])),
    "compression": lambda r: (r["impl"], r["inflight"]),
    "load": lambda r: (r["impl"], r["connections"]),
    "broadcast": lambda r: (r["impl"], r["connections"]),
}


def _panel_label(section: str, group: Any) -> str:
    if section == "memory":
        compression, connections = group
        return f"{connections:,}{' deflate' if compression else ''}"
    if section == "compression":
        return "request/response" if group == 1 else f"pipelined {group}"
    return f"{group:,} connections"


def draw(results: Results, directory: Path) -> list[Path]:
    """The PNG plots (matplotlib, drawn without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colors = dict(zip(ORDER, plt.get_cmap("tab10")(range(10)), strict=False))

    for variant in results.variants():
        cells = results.cells(variant)
        modes = sorted({c[1] for c in cells})
        impls = results.impls([r for r in results.echo if r["variant"] == variant])
        figure, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 4.5), squeeze=False)
        for ax, inflight in zip(axes[0], modes, strict=True):
            mode_cells = [c for c in cells if c[1] == inflight]
            width = 0.8 / len(impls)
            for index, impl in enumerate(impls):
                xs = [x + index * width for x in range(len(mode_cells))]
                ys = [results.echo_value(c, impl) or 0 for c in mode_cells]
                ax.bar(xs, ys, width, label=impl, color=colors.get(impl))
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(mode_cells))])
            ax.set_xticklabels([("text " if c[2] else "") + size_label(c[3]) for c in mode_cells])
            ax.set_yscale("log")
            ax.set_ylabel("messages/s (median)")
            title = "request/response" if inflight == 1 else f"pipelined, {inflight} in flight"
            ax.set_title(f"echo, {variant}: {title}")
            ax.grid(axis="y", which="both", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
        figure.tight_layout(rect=(0, 0.12, 1, 1))
        path = directory / f"echo_{variant}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)

    plain_impls = results.impls([r for r in results.echo if r["variant"] == "plain"])
    if "picows" in plain_impls and len(plain_impls) > 1:  # ratios to picows need it and another
        cells = results.cells("plain")
        impls = [i for i in results.impls(results.echo) if i != "picows"]
        figure, ax = plt.subplots(figsize=(11, 4.5))
        width = 0.8 / len(impls)
        for index, impl in enumerate(impls):
            xs = [x + index * width for x in range(len(cells))]
            ys = []
            for cell in cells:
                a, b = results.echo_value(cell, impl), results.echo_value(cell, "picows")
                ys.append(a / b if a and b else 0)
            ax.bar(xs, ys, width, label=impl, color=colors.get(impl))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cells))])
        ax.set_xticklabels(
            [
                ("rr " if c[1] == 1 else "pipe ") + ("text " if c[2] else "") + size_label(c[3])
                for c in cells
            ],
            rotation=30,
            ha="right",
        )
        ax.set_ylabel(f"{X} picows (median)")
        ax.set_title("echo, plain: throughput relative to picows", pad=40)
        ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.08))
        ax.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        path = directory / "ratio_to_picows.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)

    panels = []
    if results.load:
        panels.append(("load", "msgs_per_s", "echoes/s"))
    if results.broadcast:
        panels.append(("broadcast", "deliveries_per_s", "deliveries/s"))
    if results.memory:
        panels.append(("memory", "bytes_per_connection", "KiB per idle connection"))
    if results.compression:
        panels.append(("compression", "msgs_per_s", "messages/s"))
    if panels:
        figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
        for ax, (section, value, unit) in zip(axes[0], panels, strict=True):
            records = getattr(results, section)
            key = _PANEL_KEYS[section]
            groups = sorted({key(r)[1] for r in records})
            labels = [_panel_label(section, g) for g in groups]
            values = medians(records, key, value)
            impls = results.impls(records)
            width = 0.8 / len(impls)
            for index, impl in enumerate(impls):
                xs = [x + index * width for x in range(len(groups))]
                ys = [
                    values.get((impl, g), 0) / (1024 if section == "memory" else 1) for g in groups
                ]
                ax.bar(xs, ys, width, label=impl, color=colors.get(impl))
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))])
            ax.set_xticklabels(labels)
            ax.set_ylabel(unit)
            ax.set_title(section)
            ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
            ax.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        path = directory / "servers.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


def write(directory: Path, *, plots: bool = True) -> list[Path]:
    """Write ``table.md`` and (with ``plots``, which needs matplotlib) the PNG plots from
    ``directory/results.jsonl``; returns the files written."""
    results = Results(load(directory))
    table = directory / "table.md"
    table.write_text(markdown(results))
    return [table, *(draw(results, directory) if plots else [])]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m wschannel.bench.report DIR (a directory with results.jsonl)")
    write(Path(sys.argv[1]))
