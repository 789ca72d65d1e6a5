"""What a server has seen, for its operator: :class:`ServerMetrics`, and :func:`prometheus`.

``server.metrics`` (on :class:`wschannel.server.Server` and :class:`wschannel.sync.Server`)
is a snapshot: connections open and opened, messages and bytes each way, close codes, refused
opening handshakes by status and reason, and the largest write buffer a connection has had.
:func:`prometheus` renders one in the Prometheus text exposition format, for a ``/metrics``
route in ``process_request`` (see docs/server.md, "Metrics").

Counting costs nothing per message in Python: the engine counts messages and bytes as it
parses and encodes them (plain integer increments in Rust), a server adds a connection's
counts to its totals once, when the connection ends, and a snapshot adds those of the
connections still open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, Protocol

__all__ = [
    "CONTENT_TYPE",
    "MALFORMED",
    "NOT_WEBSOCKET",
    "OPEN_TIMEOUT",
    "ORIGIN",
    "PROCESS_REQUEST",
    "PROCESS_REQUEST_ERROR",
    "TOO_LARGE",
    "TOO_MANY_PENDING",
    "VERSION",
    "ServerMetrics",
    "prometheus",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :func:`prometheus`'s text (the exposition format 0.0.4)."""

# Why an opening handshake was refused: the reason half of ServerMetrics.refusals' keys.

MALFORMED: Final = "malformed"
"""400: a request head that does not parse or is ambiguous (a body, a repeated ``Host``...),
or an upgrade missing or repeating ``Sec-WebSocket-Key``/``-Version``, or not HTTP/1.1."""
NOT_WEBSOCKET: Final = "not_websocket"
"""404: not a WebSocket upgrade (not ``GET``, no ``Connection: upgrade`` or ``Upgrade:
websocket``)."""
ORIGIN: Final = "origin"
"""403: an ``Origin`` not in ``allowed_origins``."""
VERSION: Final = "version"
"""426: a ``Sec-WebSocket-Version`` other than 13."""
TOO_LARGE: Final = "too_large"
"""431: a request head over ``max_header_size`` or with too many headers."""
PROCESS_REQUEST: Final = "process_request"
"""Any status: ``process_request`` answered instead of the upgrade (an authentication
failure, an unknown path, a health check or a metrics scrape: whatever status it chose)."""
PROCESS_REQUEST_ERROR: Final = "process_request_error"
"""500: ``process_request`` raised."""
TOO_MANY_PENDING: Final = "too_many_pending"
"""503: over ``max_pending_handshakes`` (asyncio server only; the thread server leaves such
connections in the listen backlog)."""
OPEN_TIMEOUT: Final = "open_timeout"
"""No status (the connection is dropped): no complete upgrade request within
``open_timeout``."""

_ENGINE_REASONS: Final[Mapping[int, str]] = {
    400: MALFORMED,
    403: ORIGIN,
    404: NOT_WEBSOCKET,
    426: VERSION,
    431: TOO_LARGE,
}


def engine_reason(status: int) -> str:
    """The reason class of a refusal by the engine's handshake checks, from its status."""
    return _ENGINE_REASONS.get(status, MALFORMED)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerMetrics:
    """A snapshot of one server's counters, from its start until the moment it was taken.

    Messages and bytes count both the connections that ended and those still open.
    """

    connections_open: int
    """Connections open now (opening handshake done, not closed yet)."""
    connections_total: int
    """Connections opened since the server started (opening handshake done)."""
    messages_received: int
    """Text and binary messages received whole (a message that failed, e.g. with invalid
    UTF-8 or over ``max_message_size``, is not counted)."""
    messages_sent: int
    """Text and binary messages sent (encoded for a connection, broadcasts included)."""
    bytes_received: int
    """Bytes read after the opening handshakes: every frame as it came on the wire (data,
    control and close frames, headers and masks, compressed payloads)."""
    bytes_sent: int
    """Bytes of every frame encoded for the clients after the opening handshakes (data,
    pings, pongs, close frames; headers included, compressed payloads). Frames still queued
    when a connection was lost are included."""
    close_codes: Mapping[int, int]
    """Connections ended, by close code: the peer's code (1005 for a close frame without
    one), the code this side failed with (1002, 1007, 1009...), 1001 after a keepalive
    timeout, or 1006 when the connection was lost without a close frame (the channel's
    ``close_code``)."""
    refusals: Mapping[tuple[int | None, str], int]
    """Opening handshakes answered without an upgrade, by ``(status, reason)``: the HTTP
    status of the answer (``None`` when the connection was dropped instead) and one of the
    reason classes of :mod:`wschannel.metrics` (``MALFORMED``, ``ORIGIN``...)."""
    write_buffer_high_water: int
    """The largest write buffer one connection of the server has had, in bytes: what waited
    because the client did not read fast enough (see ``docs/server.md``, "Metrics")."""


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> ServerMetrics: ...


class Tally:
    """A server's running totals (internal): refusals and openings as they happen, each
    connection's counts once at its end, and the open ones' added in :meth:`snapshot`."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "close_codes",
        "connections_total",
        "messages_received",
        "messages_sent",
        "refusals",
        "write_high_water",
    )

    def __init__(self) -> None:
        self.connections_total = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.close_codes: dict[int, int] = {}
        self.refusals: dict[tuple[int | None, str], int] = {}
        self.write_high_water = 0

    def refused(self, status: int | None, reason: str) -> None:
        key = (status, reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def closed(self, counters: tuple[int, int, int, int], code: int, high_water: int) -> None:
        """A connection ended: add its engine's counters, close code and high-water mark."""
        messages_received, messages_sent, bytes_received, bytes_sent = counters
        self.messages_received += messages_received
        self.messages_sent += messages_sent
        self.bytes_received += bytes_received
        self.bytes_sent += bytes_sent
        self.close_codes[code] = self.close_codes.get(code, 0) + 1
        self.write_high_water = max(self.write_high_water, high_water)

    def snapshot(self, live: Iterable[tuple[tuple[int, int, int, int], int]]) -> ServerMetrics:
        """The totals plus ``live``: the counters and high-water mark of each open
        connection."""
        messages_received = self.messages_received
        messages_sent = self.messages_sent
        bytes_received = self.bytes_received
        bytes_sent = self.bytes_sent
        high_water = self.write_high_water
        open_now = 0
        for counters, high in live:
            open_now += 1
            messages_received += counters[0]
            messages_sent += counters[1]
            bytes_received += counters[2]
            bytes_sent += counters[3]
            high_water = max(high_water, high)
        return ServerMetrics(
            connections_open=open_now,
            connections_total=self.connections_total,
            messages_received=messages_received,
            messages_sent=messages_sent,
            bytes_received=bytes_received,
            bytes_sent=bytes_sent,
            close_codes=MappingProxyType(dict(sorted(self.close_codes.items()))),
            refusals=MappingProxyType(dict(sorted(self.refusals.items(), key=_refusal_order))),
            write_buffer_high_water=high_water,
        )


def _refusal_order(item: tuple[tuple[int | None, str], int]) -> tuple[int, str]:
    (status, reason), _ = item
    return (-1 if status is None else status, reason)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(source: ServerMetrics | _HasMetrics, *, prefix: str = "wschannel") -> str:
    """The metrics of ``source`` (a server, or a :class:`ServerMetrics` snapshot) in the
    Prometheus text exposition format (``Content-Type``: :data:`CONTENT_TYPE`).

    Counters end in ``_total``; close codes and refusals are labelled (``code``, and
    ``reason`` for refusals; a refusal without a status has ``code="none"``). ``prefix``
    starts every metric name (e.g. one per server, when a process has several).
    """
    metrics = source if isinstance(source, ServerMetrics) else source.metrics
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, int]]) -> None:
        lines.append(f"# HELP {prefix}_{name} {help_text}")
        lines.append(f"# TYPE {prefix}_{name} {kind}")
        lines.extend(f"{prefix}_{name}{labels} {value}" for labels, value in samples)

    family(
        "connections_open",
        "gauge",
        "WebSocket connections open now.",
        [("", metrics.connections_open)],
    )
    family(
        "connections_total",
        "counter",
        "WebSocket connections opened (opening handshake completed).",
        [("", metrics.connections_total)],
    )
    family(
        "messages_received_total",
        "counter",
        "Text and binary messages received.",
        [("", metrics.messages_received)],
    )
    family(
        "messages_sent_total",
        "counter",
        "Text and binary messages sent.",
        [("", metrics.messages_sent)],
    )
    family(
        "received_bytes_total",
        "counter",
        "Bytes of WebSocket frames received, as on the wire.",
        [("", metrics.bytes_received)],
    )
    family(
        "sent_bytes_total",
        "counter",
        "Bytes of WebSocket frames sent, as on the wire.",
        [("", metrics.bytes_sent)],
    )
    family(
        "closes_total",
        "counter",
        "WebSocket connections ended, by close code (1006: lost without a close frame).",
        [(f'{{code="{code}"}}', count) for code, count in metrics.close_codes.items()],
    )
    family(
        "handshake_refusals_total",
        "counter",
        "Opening handshakes answered without an upgrade, by HTTP status and reason.",
        [
            (
                f'{{code="{"none" if status is None else status}",reason="{_escape(reason)}"}}',
                count,
            )
            for (status, reason), count in metrics.refusals.items()
        ],
    )
    family(
        "write_buffer_high_water_bytes",
        "gauge",
        "The largest write buffer a connection has had, in bytes.",
        [("", metrics.write_buffer_high_water)],
    )
    return "\n".join(lines) + "\n"
