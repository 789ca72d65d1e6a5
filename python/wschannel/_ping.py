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

__all__ = ["Pings", "check_keepalive"]

W = TypeVar("W")

PAYLOAD_SIZE = 4
"""Bytes of random payload in each application ping."""


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

    def add(self, waiter: W) -> bytes:
        """A ping is about to be sent: its payload, unique among those waiting."""
        while True:
            payload = os.urandom(PAYLOAD_SIZE)
            if payload not in self._sent:
                break
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
