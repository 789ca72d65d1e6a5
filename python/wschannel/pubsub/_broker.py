"""The broker interface :class:`~wschannel.pubsub.Topics` fans out through, the positions of
recoverable topics, and the envelope one node hands the others.

A broker carries *envelopes*: bytes that say whether the message is text or binary, hold its
data and, for a recoverable topic, its position. Every node decodes an envelope once, encodes
the WebSocket frame once, and writes it to its own subscribers.

The envelope (this module's format; a broker never looks inside):

- ``t`` or ``b`` (text, binary), then the data: a message of a plain topic;
- ``T`` or ``B``, the offset in decimal, ``:``, the epoch, ``:``, then the data: a message of a
  recoverable topic, at that position.

Envelopes come from the network, so they are checked: an unknown kind, a position that does not
parse, text that is not UTF-8 or a size over the limit is dropped (and counted), never raised.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "History",
    "Position",
    "Recovery",
    "decode",
    "encode",
]

_EPOCH: Final = re.compile(r"[0-9A-Za-z]{1,32}")
_MAX_OFFSET: Final = (1 << 63) - 1
_MAX_HEAD: Final = 64  # kind, a 19-digit offset, two colons and a 32-character epoch fit
TEXT: Final = ord("t")
BINARY: Final = ord("b")


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached now (it restarts, or the network is down): the publish did
    not happen. A node reconnects by itself; publish again later, or drop the message (the
    plain topics' guarantee is at most once)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message stands in a recoverable topic: its ``offset`` (1 for the first message)
    in the topic's ``epoch``, a name the history gets anew when it is lost (the broker
    restarted without its data, or the history expired). A client keeps the position of the
    last message it got, and gives it back to :meth:`Topics.join` when it comes back."""

    offset: int
    epoch: str

    def __post_init__(self) -> None:
        if type(self.offset) is not int or not 0 <= self.offset <= _MAX_OFFSET:
            raise ValueError(
                f"A position's offset is an int from 0 to 2**63-1, not {self.offset!r}."
            )
        if not isinstance(self.epoch, str) or not _EPOCH.fullmatch(self.epoch):
            raise ValueError(
                f"A position's epoch is 1 to 32 letters or digits, not {self.epoch!r}."
            )


@dataclass(frozen=True, slots=True)
class History:
    """How much of a recoverable topic the broker keeps: the last ``size`` messages, and (if
    ``ttl`` is set) only while the topic had a message in the last ``ttl`` seconds."""

    size: int = 100
    ttl: float | None = None

    def __post_init__(self) -> None:
        if type(self.size) is not int or not 1 <= self.size <= 1_000_000:
            raise ValueError(f"History size is an int from 1 to 1,000,000, not {self.size!r}.")
        if self.ttl is not None and not self.ttl >= 1:
            raise ValueError(f"History ttl is at least 1 second, or None, not {self.ttl!r}.")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the broker's history holds after a position: the topic's ``position`` now, the
    ``envelopes`` after the one asked for (oldest first), and whether they are ``complete``
    (nothing between was trimmed, and the epoch is the same)."""

    position: Position
    envelopes: list[bytes]
    complete: bool


Receive = Callable[[str, bytes], None]
"""Called by a broker for each envelope of a topic this node subscribes to."""
StateChanged = Callable[[bool, BaseException | None], None]
"""Called by a broker when its connection goes down (``False`` and the error) and comes back
(``True``, ``None``, after it subscribed again to every topic)."""


class Broker(ABC):
    """A message broker the nodes of a :class:`~wschannel.pubsub.Topics` deployment share.

    :class:`~wschannel.pubsub.RedisBroker` and :class:`~wschannel.pubsub.NatsBroker` implement
    it. A broker is used by one ``Topics`` at a time, from its event loop. It reconnects by
    itself with backoff when its connection is lost, subscribes again to its topics, and says
    so through ``state_changed``.
    """

    name: str = "broker"
    recoverable: bool = False
    """Whether it keeps history (:meth:`publish_recoverable`, :meth:`recover`)."""

    @abstractmethod
    async def start(self, receive: Receive, state_changed: StateChanged) -> None:
        """Connect; raise :class:`BrokerUnavailable` if the broker cannot be reached."""

    @abstractmethod
    async def subscribe(self, topic: str) -> None:
        """Subscribe; return once the broker has it (a publish after that reaches this
        node). While the broker is down, the topic is subscribed to once it is back."""

    @abstractmethod
    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe (nothing if not subscribed)."""

    @abstractmethod
    async def publish(self, topic: str, envelope: bytes) -> None:
        """Hand ``envelope`` to every node subscribed to ``topic``, at most once;
        :class:`BrokerUnavailable` if the broker cannot be reached."""

    async def publish_recoverable(self, topic: str, envelope: bytes, history: History) -> Position:
        """Append to the topic's history (keeping ``history``), then publish it with its
        position; return the position."""
        raise NotImplementedError(f"{self.name} keeps no history: use RedisBroker.")

    async def recover(self, topic: str, since: Position | None) -> Recovery:
        """The topic's history after ``since`` (``None``: only the position now)."""
        raise NotImplementedError(f"{self.name} keeps no history: use RedisBroker.")

    has_presence: bool = False
    """Whether it tells who is in a topic across nodes (:meth:`add_member`, :meth:`members`)."""

    async def add_member(self, topic: str, member: str, info: str) -> None:
        """List ``member`` (this node's) in ``topic`` with ``info``. Never raises for an
        unreachable broker: the member is listed once the broker is back."""
        raise NotImplementedError(f"{self.name} keeps no presence: use RedisBroker or NatsBroker.")

    async def remove_member(self, topic: str, member: str) -> None:
        """No longer list ``member`` (this node's) in ``topic``; never raises."""
        raise NotImplementedError(f"{self.name} keeps no presence: use RedisBroker or NatsBroker.")

    async def members(self, topic: str, limit: int) -> dict[str, str]:
        """The members of ``topic`` on every node (at most ``limit``), with their info;
        :class:`BrokerUnavailable` if the broker cannot be reached."""
        raise NotImplementedError(f"{self.name} keeps no presence: use RedisBroker or NatsBroker.")

    @abstractmethod
    async def close(self) -> None:
        """Disconnect (idempotent)."""


def encode(data: str | bytes) -> bytes:
    """The envelope of a plain topic's message."""
    if isinstance(data, str):
        return b"t" + data.encode()
    return b"b" + data


def decode(envelope: bytes, max_size: int) -> tuple[str | bytes, Position | None] | None:
    """The message and its position (``None`` for a plain topic), or ``None`` if the envelope
    is malformed or over ``max_size`` bytes of data."""
    if not envelope or len(envelope) > max_size + _MAX_HEAD:
        return None
    kind = envelope[0]
    position: Position | None = None
    start = 1
    if kind in (ord("T"), ord("B")):
        first = envelope.find(b":", 1, _MAX_HEAD)
        second = envelope.find(b":", first + 1, _MAX_HEAD) if first > 0 else -1
        if second < 0:
            return None
        offset, epoch = envelope[1:first], envelope[first + 1 : second]
        if not offset.isdigit() or len(offset) > 19:
            return None
        try:
            position = Position(int(offset), epoch.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
        kind += ord("a") - ord("A")
        start = second + 1
    if len(envelope) - start > max_size:
        return None
    if kind == TEXT:
        try:
            return envelope[start:].decode(), position
        except UnicodeDecodeError:
            return None
    if kind == BINARY:
        return envelope[start:], position
    return None
