"""NATS as the broker: core NATS pub/sub (no history: plain topics only).

One nats-py connection per node. A topic ``T`` is the subject ``{prefix}.T``; a node holds one
NATS subscription per topic it has local subscribers for. nats-py reconnects by itself after a
lost connection and replays the subscriptions; this broker gives it the backoff (exponential,
with jitter, as :class:`~wschannel.pubsub.Backoff` says) and, once it is back, flushes (a
``PING``/``PONG`` round trip, so the server has every subscription) before saying so.

Presence: NATS keeps no state, so a node asks instead. Every node subscribes to
``{prefix}.#presence`` (``#`` is in no topic name); :meth:`NatsBroker.members` publishes the
topic's name there with a reply inbox, and each node that has members in the topic answers
with them (JSON, in pieces under NATS's largest payload). The answers that come within
``presence_timeout`` are the presence: a node that died does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from ._backoff import Backoff
from ._broker import Broker, BrokerUnavailable, Receive, StateChanged

__all__ = ["NatsBroker"]

logger = logging.getLogger("wschannel.pubsub")

_ERRORS = (NatsError, OSError, asyncio.TimeoutError)


class NatsBroker(Broker):
    """NATS (core pub/sub) as the broker.

    - ``url``: as for nats-py (``nats://host:port``; several, comma-separated, for a cluster).
    - ``prefix``: the first token of every subject, to share a NATS.
    - ``connect_timeout``: seconds for one connection attempt, and for a flush.
    - ``backoff``: the delays between reconnection attempts.
    - ``health_interval``: seconds between NATS pings; three unanswered count as the server
      being gone.
    - ``presence_timeout``: seconds :meth:`Topics.presence` waits for the nodes' answers (it
      always waits that long: NATS does not say how many nodes there are).
    """

    name = "nats"
    has_presence = True

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "wschannel",
        connect_timeout: float = 2.0,
        backoff: Backoff | None = None,
        health_interval: float = 5.0,
        presence_timeout: float = 0.25,
    ) -> None:
        if not prefix or any(char in prefix for char in " \t\r\n.*>"):
            raise ValueError(
                f"prefix must be one NATS token (no space, '.', '*' or '>'), not {prefix!r}."
            )
        if not health_interval > 0:
            raise ValueError("health_interval must be a positive number of seconds.")
        if not 0 < presence_timeout <= 60:
            raise ValueError("presence_timeout must be a number of seconds from 0 to 60.")
        self.presence_timeout = presence_timeout
        self._members: dict[str, dict[str, str]] = {}  # topic → this node's members → info
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.health_interval = health_interval
        self._nc = Client()
        self._subscriptions: dict[str, Subscription] = {}
        self._receive: Receive | None = None
        self._state_changed: StateChanged | None = None
        self._attempt = 0
        self._closed = False
        self._announcing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"NatsBroker({self.url!r}, prefix={self.prefix!r})"

    async def start(self, receive: Receive, state_changed: StateChanged) -> None:
        if self._receive is not None:
            raise RuntimeError("This NatsBroker was started already: make one per Topics.")
        self._receive, self._state_changed = receive, state_changed
        options: dict[str, Any] = {
            "servers": self.url.split(","),
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_to_server_handler": self._next_server,
            "ping_interval": self.health_interval,
            "max_outstanding_pings": 3,
            "error_cb": self._error,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "name": f"wschannel {self.prefix}",
        }
        try:
            # Retries forever with max_reconnect_attempts=-1: the first connection gets
            # connect_timeout and one retry.
            await asyncio.wait_for(self._nc.connect(**options), 2 * self.connect_timeout + 0.5)
        except (*_ERRORS, TimeoutError) as exc:
            self._closed = True
            with contextlib.suppress(*_ERRORS):
                await self._nc.close()
            raise BrokerUnavailable(f"Cannot reach NATS at {self.url}: {exc!r}") from exc
        await self._nc.subscribe(self._presence_subject, cb=self._answer_presence)

    def _next_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """nats-py asks before each reconnection attempt: any server, after the backoff."""
        delay = self.backoff.delay(self._attempt)
        self._attempt += 1
        return None, delay

    async def _error(self, exc: Exception) -> None:
        logger.debug("NATS at %s: %r", self.url, exc)

    async def _disconnected(self) -> None:
        if self._closed or self._state_changed is None:
            return
        self._state_changed(False, ConnectionError(f"lost the connection to NATS at {self.url}"))

    async def _reconnected(self) -> None:
        self._attempt = 0
        self._announcing = asyncio.create_task(self._announce())

    async def _announce(self) -> None:
        try:
            await self._nc.flush(timeout=max(1, round(self.connect_timeout)))
        except _ERRORS:
            return  # lost again: the next reconnection announces
        if not self._closed and self._state_changed is not None:
            self._state_changed(True, None)

    @property
    def _presence_subject(self) -> str:
        return f"{self.prefix}.#presence"

    async def add_member(self, topic: str, member: str, info: str) -> None:
        self._members.setdefault(topic, {})[member] = info

    async def remove_member(self, topic: str, member: str) -> None:
        members = self._members.get(topic)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._members[topic]

    async def _answer_presence(self, msg: Msg) -> None:
        """Another node (or this one) asks who is in a topic: answer if some are here."""
        members = self._members.get(msg.data.decode("utf-8", "replace"))
        if not members or not msg.reply:
            return
        room = max(1024, self._nc.max_payload // 2)
        piece: dict[str, str] = {}
        size = 2
        for member, info in list(members.items()):
            entry = len(json.dumps({member: info})) + 1
            if piece and size + entry > room:
                await self._send_presence(msg.reply, piece)
                piece, size = {}, 2
            piece[member] = info
            size += entry
        await self._send_presence(msg.reply, piece)

    async def _send_presence(self, reply: str, piece: dict[str, str]) -> None:
        with contextlib.suppress(*_ERRORS):
            await self._nc.publish(reply, json.dumps(piece).encode())

    async def members(self, topic: str, limit: int) -> dict[str, str]:
        if not self._nc.is_connected:
            raise BrokerUnavailable(
                f"Cannot ask for presence: not connected to NATS at {self.url}."
            )
        found: dict[str, str] = {}

        async def gather(msg: Msg) -> None:
            try:
                piece = json.loads(msg.data)
            except ValueError:
                return
            if not isinstance(piece, dict):
                return
            for member, info in piece.items():
                if len(found) >= limit:
                    return
                if isinstance(member, str) and isinstance(info, str):
                    found[member] = info

        inbox = self._nc.new_inbox()
        try:
            answers = await self._nc.subscribe(inbox, cb=gather)
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Cannot ask NATS at {self.url} for presence: {exc!r}") from exc
        try:
            await self._nc.publish(self._presence_subject, topic.encode(), reply=inbox)
            await self._nc.flush(timeout=max(1, round(self.connect_timeout)))
            await asyncio.sleep(self.presence_timeout)
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Cannot ask NATS at {self.url} for presence: {exc!r}") from exc
        finally:
            with contextlib.suppress(*_ERRORS):
                await answers.unsubscribe()
        return dict(sorted(found.items()))

    def _subject(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    async def subscribe(self, topic: str) -> None:
        if topic in self._subscriptions:
            return
        receive = self._receive
        assert receive is not None, "start() first"

        async def deliver(msg: Msg) -> None:
            receive(topic, msg.data)

        self._subscriptions[topic] = await self._nc.subscribe(self._subject(topic), cb=deliver)
        if self._nc.is_connected:
            with contextlib.suppress(*_ERRORS):
                await self._confirm()

    async def _confirm(self) -> None:
        """Return once the server has every command sent so far (the SUB just made).

        nats-py's ``flush()`` writes its PING straight to the socket, ahead of the commands
        still in its buffer, so one PONG does not mean the server has the SUB (a publish from
        another node right after could miss this one). The first flush wakes the buffer's
        writer, which runs before that PONG can come back; the second PING follows the SUB.
        """
        timeout = max(1, round(self.connect_timeout))
        await self._nc.flush(timeout=timeout)
        await self._nc.flush(timeout=timeout)

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            with contextlib.suppress(*_ERRORS):
                await subscription.unsubscribe()

    async def publish(self, topic: str, envelope: bytes) -> None:
        if not self._nc.is_connected:
            raise BrokerUnavailable(f"Cannot publish: not connected to NATS at {self.url}.")
        try:
            await self._nc.publish(self._subject(topic), envelope)
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Cannot publish to NATS at {self.url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*_ERRORS):
            await self._nc.close()
