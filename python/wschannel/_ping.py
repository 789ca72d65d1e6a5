"""The pings the application sends (``await channel.ping()``), their pongs, and the last
round-trip time (``channel.latency``), for every driver: what a pong answers is decided here
once; the drivers resolve their own kind of waiter (an asyncio future, a thread's future).

A ping carries 4 random bytes that the peer echoes in its pong (RFC 6455 §5.5.2-3). A peer
may answer only the latest of several pings (§5.5.3), so a pong answers the ping it echoes
and every ping sent before it. The keepalive pings are the session's (the engine's), with
an empty payload; it measures their round-trip time itself (``Connection.latency``). The
latency reported is the last one measured, by either.
"""

from __future__ import annotations

import os
import time
from typing import Generic, TypeVar

__all__ = ["MAX_PAYLOAD", "Pings", "check_keepalive", "check_payload"]

W = TypeVar("W")

PAYLOAD_SIZE = 4
"""Bytes of random payload in each application ping that is not given one."""

MAX_PAYLOAD = 125
"""The most bytes a ping's payload may have (RFC 6455 §5.5: a control frame's)."""


def check_keepalive(ping_interval: float | None, pong_timeout: float | None) -> None:
    """``ValueError`` at the call for a keepalive setting the session cannot use: each must
    be a positive number of seconds, or ``None``."""
    for name, value in (("ping_interval", ping_interval), ("pong_timeout", pong_timeout)):
        if value is not None and not value > 0:  # also NaN
            meaning = (
                "None to send no keepalive pings"
                if name == "ping_interval"
                else "None to wait as long as ping_interval"
            )
            raise ValueError(
                f"{name} must be a positive number of seconds, or {meaning}; got {value!r}."
            )


def check_payload(payload: object) -> bytes | None:
    """A ping's payload as the caller gave it to ``ping(payload)``: ``None`` (a random
    one), ``str`` (encoded as UTF-8) or bytes-like, at most :data:`MAX_PAYLOAD` bytes;
    ``TypeError`` or ``ValueError`` at the call otherwise."""
    if payload is None:
        return None
    if isinstance(payload, str):
        data = payload.encode()
    else:
        try:
            data = bytes(memoryview(payload))  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                "A ping's payload is bytes-like or a str (sent as UTF-8), or None for a "
                f"random one; got {type(payload).__name__}."
            ) from None
    if len(data) > MAX_PAYLOAD:
        raise ValueError(
            f"A ping's payload is at most {MAX_PAYLOAD} bytes (a control frame's limit, RFC "
            f"6455 §5.5); this one is {len(data)}. Send larger data as a message."
        )
    return data


class Pings(Generic[W]):
    """The application's pings waiting for their pongs, each with its waiter, and the last
    round-trip time measured. Not thread-safe: the driver serialises access (its event loop,
    or the blocking channel's lock)."""

    __slots__ = ("_sent", "_session_latency", "latency")

    def __init__(self) -> None:
        self._sent: dict[bytes, tuple[float, W]] = {}  # in the order they were sent
        self._session_latency: float | None = None  # the session's, when last looked at
        self.latency: float | None = None
        """The round-trip time last measured, in seconds (``None`` before any)."""

    def __len__(self) -> int:
        return len(self._sent)

    def add(self, waiter: W, payload: bytes | None = None) -> bytes:
        """A ping is about to be sent: its payload, the caller's (checked with
        :func:`check_payload` first) or, for ``None``, random and unique among those
        waiting. ``RuntimeError`` if a ping with the caller's payload is still waiting."""
        if payload is None:
            while True:
                payload = os.urandom(PAYLOAD_SIZE)
                if payload not in self._sent:
                    break
        elif payload in self._sent:
            raise RuntimeError(
                f"A ping with the payload {payload[:16]!r} is still waiting for its pong, "
                "which could not tell the two apart: give another payload, or None for a "
                "random one."
            )
        self._sent[payload] = (time.monotonic(), waiter)
        return payload

    def pong(self, data: bytes, session_latency: float | None) -> list[tuple[W, float]]:
        """A pong came with ``data``; ``session_latency`` is the session's measure now. The
        waiters it answers, each with its round-trip time in seconds: the ping it echoes
        and those sent before it; none for a pong that echoes no ping waiting (the session's
        keepalive, an unsolicited pong)."""
        answered: list[tuple[W, float]] = []
        if data in self._sent:
            now = time.monotonic()
            while self._sent:
                payload = next(iter(self._sent))
                sent_at, waiter = self._sent.pop(payload)
                answered.append((waiter, now - sent_at))
                if payload == data:
                    break
            self.latency = answered[-1][1]
        elif session_latency is not None and session_latency != self._session_latency:
            self.latency = session_latency  # the session measured its keepalive ping
        self._session_latency = session_latency
        return answered

    def drop(self) -> list[W]:
        """The connection is over: the waiters that will get no pong."""
        waiters = [waiter for _, waiter in self._sent.values()]
        self._sent.clear()
        return waiters
