"""``Topics``: named topics whose messages reach every subscriber in every process and node.

One ``Topics`` per process (a *node*). Connections join and leave topics; a publish goes to the
broker, which hands it to every node subscribed to the topic; each node decodes it once,
encodes its frame once, and writes that frame to its own subscribers with
:func:`wschannel.broadcast`'s shared-frame path. A node subscribes to the broker for a topic
while it has at least one local subscriber (counted), and unsubscribes when the last leaves.

Guarantees (docs/scaling.md has the whole story):

- **plain topics, at most once**: a message published after :meth:`Topics.join` returned
  reaches the subscriber once, in publish order from one publisher, unless the broker
  connection was down (the node says so: :class:`Outage`), the subscriber was too slow (the
  ``slow`` policy), or it left.
- **recoverable topics** (Redis only): each message gets a :class:`Position`; a client coming
  back with its last position gets what it missed from the bounded history, in order and
  without duplicates, then the live messages, or is told it must resynchronise
  (:attr:`Joined.must_resynchronise`). After a broker outage the node recovers its own gap the
  same way, and a node that sees a gap in the offsets fetches it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self

from .._sink import GuaranteeSink
from ..channel import WebSocketChannel
from ..defaults import DEFAULT_MAX_MESSAGE_SIZE
from ..server import broadcast
from ..status import CloseCode
from ._backoff import Backoff
from ._broker import Broker, BrokerUnavailable, History, Position, decode, encode

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Joined", "Outage", "Publication", "Topics", "TopicsStats", "json_frame"]

logger = logging.getLogger("wschannel.pubsub")

_TOPIC: Final = re.compile(r"[A-Za-z0-9_\-:@/]+(\.[A-Za-z0-9_\-:@/]+)*")
MAX_TOPIC_LENGTH: Final = 200
MAX_PRESENCE_INFO: Final = 1024
"""The longest ``presence=`` a member joins with (characters)."""
DEFAULT_PRESENCE_LIMIT: Final = 10_000
_ORIGIN_HEAD: Final = 1 + 12 + 19 + 1  # "x", the node, the channel's number, ":"
_RECOVERY_ATTEMPTS: Final = 6
_RECOVERY_BACKOFF: Final = Backoff(first=0.05, cap=1.0)
SLOW_CLOSE_REASON: Final = "too slow: messages were dropped"
RESYNCHRONISE_REASON: Final = "topic history lost: resynchronise"


@dataclass(frozen=True, slots=True)
class Publication:
    """A message of a topic as a node delivers it: ``data`` (``str``: text, ``bytes``:
    binary) and, for a recoverable topic, its ``position``."""

    topic: str
    data: str | bytes
    position: Position | None = None


def json_frame(publication: Publication) -> str | bytes:
    """The default ``frame``: a plain topic's message as published; a recoverable topic's as
    JSON text, ``{"topic", "offset", "epoch", "data"}`` (binary data as ``"data_base64"``), so
    that the client can keep the position of the last one."""
    position = publication.position
    if position is None:
        return publication.data
    body: dict[str, object] = {
        "topic": publication.topic,
        "offset": position.offset,
        "epoch": position.epoch,
    }
    if isinstance(publication.data, str):
        body["data"] = publication.data
    else:
        body["data_base64"] = base64.b64encode(publication.data).decode()
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Joined:
    """What :meth:`Topics.join` did. ``position``: for a recoverable topic, where the
    subscriber stands now (the last message it was sent, or the topic's last message if it
    asked for none); ``None`` for a plain topic. ``recovered``: how many missed messages were
    sent. ``must_resynchronise``: the history could not fill the gap (trimmed, or lost: a new
    epoch) — the client must get the state some other way, then go on from ``position``."""

    position: Position | None = None
    recovered: int = 0
    must_resynchronise: bool = False


@dataclass(slots=True)
class Outage:
    """The broker connection was down from ``started`` to ``ended`` (``time.time()``
    seconds; ``ended`` is ``None`` while down). Messages of the plain ``topics`` published
    in that time did not reach this node's subscribers (at most once); the ``recoverable``
    ones were fetched from the history once the broker was back."""

    broker: str
    error: str
    started: float
    ended: float | None = None
    topics: tuple[str, ...] = ()
    recoverable: tuple[str, ...] = ()


@dataclass(slots=True)
class TopicsStats:
    """A node's counters since it started."""

    published: int = 0
    """Messages this node published."""
    received: int = 0
    """Messages the broker handed this node."""
    delivered: int = 0
    """Frames written to this node's subscribers (a message to 1,000 subscribers: 1,000)."""
    dropped_slow: int = 0
    """Deliveries skipped because the subscriber's write buffer was full."""
    closed_slow: int = 0
    """Subscribers closed for being slow (``slow="close"``)."""
    malformed: int = 0
    """Envelopes from the broker that were dropped as malformed or too large."""
    outages: int = 0
    """Times the broker connection was lost."""
    recovered: int = 0
    """Messages sent from the history (joins with a position, and the node's own gaps)."""
    resynchronised: int = 0
    """Subscribers told to resynchronise after the node lost the history of their topic."""
    frame_errors: int = 0
    """Messages not sent because ``frame`` raised or returned neither text nor bytes."""


@dataclass(eq=False, slots=True)
class _Topic:
    name: str
    history: History | None
    channels: dict[WebSocketChannel, None] = field(default_factory=dict)  # joined, in order
    ready: list[WebSocketChannel] = field(default_factory=list)  # joined and caught up
    # Joined, reading the history: the live messages held for each (None: too many held).
    catching_up: dict[WebSocketChannel, list[Publication] | None] = field(default_factory=dict)
    last: Position | None = None  # the last message this node delivered (recoverable)
    recovering: list[bytes] | None = None  # live envelopes held while the node recovers
    overflowed: bool = False  # more came while it recovered than the history holds: dropped
    # Caught up from the history further than the node's live messages have come: each
    # gets the live ones after its offset only, then joins the ready ones.
    ahead: dict[WebSocketChannel, Position] = field(default_factory=dict)
    members: dict[WebSocketChannel, tuple[str, str]] = field(default_factory=dict)  # presence
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def refresh(self) -> None:
        self.ready = [c for c in self.channels if c not in self.catching_up and c not in self.ahead]


Frame = Callable[[Publication], "str | Buffer"]
Resynchronise = Callable[[WebSocketChannel, str, Position], None]


def _close_to_resynchronise(channel: WebSocketChannel, topic: str, position: Position) -> None:
    channel.sink.close(CloseCode.SERVICE_RESTART, RESYNCHRONISE_REASON)


class Topics:
    """The topics of one node (process), fanned out through ``broker``.

    - ``broker``: a :class:`~wschannel.pubsub.RedisBroker` or
      :class:`~wschannel.pubsub.NatsBroker`; ``None`` for one process on its own (a publish
      goes straight to the local subscribers).
    - ``recoverable``: which topics keep a history (Redis only): a mapping from topic name to
      :class:`History`, or a function of the name returning one or ``None``.
    - ``slow``: what happens to a subscriber whose write buffer is full (over its
      ``write_limit``: it does not read) when a message comes: ``"close"`` (default) skips it
      and closes it with 1013 (try again later), so that it reconnects and, on a recoverable
      topic, recovers; ``"drop"`` skips it for that message only (counted in
      :attr:`stats`). Either way it never holds up the others, and its buffer never grows
      past ``write_limit`` plus one message.
    - ``frame``: turns a :class:`Publication` into what the subscribers are sent, once per
      message per node (default :func:`json_frame`).
    - ``max_message_size``: the largest message published or accepted from the broker.
    - ``on_outage``: called with an :class:`Outage` when the broker connection comes back
      (after a warning is logged).
    - ``on_resynchronise(channel, topic, position)``: called for each subscriber of a
      recoverable topic whose history this node lost (a new epoch, or trimmed past its gap);
      by default the channel is closed with 1012 (service restart), and the client joins
      again with its position and is told to resynchronise.

    Use it as an async context manager, or call :meth:`start` and :meth:`close`. Call it
    from its event loop's thread.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        recoverable: Mapping[str, History] | Callable[[str], History | None] | None = None,
        slow: Literal["close", "drop"] = "close",
        frame: Frame = json_frame,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        on_outage: Callable[[Outage], None] | None = None,
        on_resynchronise: Resynchronise | None = None,
    ) -> None:
        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"broker must be a Broker (RedisBroker, NatsBroker), not {broker!r}.")
        if slow not in ("close", "drop"):
            raise ValueError(f'slow must be "close" or "drop", not {slow!r}.')
        if recoverable is not None and (broker is None or not broker.recoverable):
            name = "no broker" if broker is None else broker.name
            raise ValueError(
                f"Recoverable topics need a broker with history (RedisBroker), not {name}."
            )
        if type(max_message_size) is not int or max_message_size < 1:
            raise ValueError("max_message_size must be a positive int.")
        self.broker = broker
        self.slow = slow
        self.max_message_size = max_message_size
        self.stats = TopicsStats()
        self._recoverable = recoverable
        self._frame = frame
        self._on_outage = on_outage
        self._on_resynchronise = on_resynchronise or _close_to_resynchronise
        self._topics: dict[str, _Topic] = {}
        self._memberships: dict[WebSocketChannel, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outage: Outage | None = None
        # A name for this node, and a number for each channel that joined: a message published
        # with ``exclude=`` carries both, so the node skips that channel when it comes back.
        self.node = secrets.token_hex(6)
        self._numbers: dict[WebSocketChannel, int] = {}
        self._by_number: dict[int, WebSocketChannel] = {}
        self._next_number = 0
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker (:class:`BrokerUnavailable` if it cannot be reached)."""
        if self._started:
            raise RuntimeError("Topics.start() was called already.")
        self._started = True
        if self.broker is not None:
            await self.broker.start(self._receive, self._broker_state)

    async def close(self) -> None:
        """Disconnect from the broker. The channels stay open; they get no more messages."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, BrokerUnavailable):
                await task
        if self.broker is not None:
            await self.broker.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- what a handler calls ----------------------------------------------------------------

    def history(self, topic: str) -> History | None:
        """The history kept for ``topic`` (``None``: a plain topic)."""
        recoverable = self._recoverable
        if recoverable is None:
            return None
        if callable(recoverable):
            return recoverable(topic)
        return recoverable.get(topic)

    async def join(
        self,
        channel: WebSocketChannel,
        topic: str,
        *,
        since: Position | None = None,
        presence: str | None = None,
    ) -> Joined:
        """Subscribe ``channel`` to ``topic``; return once a publish from anywhere reaches it
        (while the broker is down: at once, and it does once the broker is back).

        ``since``, for a recoverable topic: the position of the last message the client got;
        the ones after it are sent first (or :attr:`Joined.must_resynchronise` says they
        cannot be). ``presence``: list the channel among the topic's members
        (:meth:`presence`, on every node) with this text (a user name, JSON: up to
        1,024 characters); ``None`` (default): not listed. The channel leaves its topics by
        itself when it closes.
        """
        self._check_open()
        _check_topic(topic)
        if not isinstance(channel, WebSocketChannel):
            raise TypeError(f"join() takes a WebSocketChannel, not {type(channel).__name__}.")
        if since is not None and not isinstance(since, Position):
            raise TypeError(f"since must be a Position, not {type(since).__name__}.")
        history = self.history(topic)
        if since is not None and history is None:
            raise ValueError(f"{topic!r} is not a recoverable topic: join it without since.")
        if presence is not None:
            self._check_presence(presence)
        memberships = self._memberships.get(channel)
        if memberships is not None and topic in memberships:
            raise ValueError(f"The channel has joined {topic!r} already: leave it first.")
        if channel.sink.done.done():
            return Joined()  # closed already: nothing to deliver to
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic(topic, history)
        if memberships is None:
            memberships = self._memberships[channel] = set()
            channel.sink.done.add_done_callback(lambda done: self._gone(channel, done))
        memberships.add(topic)
        if channel not in self._numbers:
            self._next_number += 1
            self._numbers[channel] = self._next_number
            self._by_number[self._next_number] = channel
        t.channels[channel] = None
        if history is not None:
            t.catching_up[channel] = []
        member = None
        if presence is not None:
            member = (f"{self.node}.{self._numbers[channel]}", presence)
            t.members[channel] = member
        t.refresh()
        try:
            await self._subscribe(t)
            if member is not None and self.broker is not None and t.members.get(channel):
                await self.broker.add_member(topic, *member)
            if history is None:
                return Joined()
            return await self._catch_up(t, channel, since)
        except BaseException:
            self.leave(channel, topic)
            raise

    def leave(self, channel: WebSocketChannel, topic: str) -> None:
        """Unsubscribe ``channel`` from ``topic`` (nothing if it had not joined). The node
        unsubscribes from the broker in the background when its last subscriber leaves."""
        memberships = self._memberships.get(channel)
        if memberships is None or topic not in memberships:
            return
        memberships.discard(topic)
        if not memberships:
            del self._memberships[channel]
        t = self._topics.get(topic)
        if t is None:
            return
        t.channels.pop(channel, None)
        t.catching_up.pop(channel, None)
        t.ahead.pop(channel, None)
        member = t.members.pop(channel, None)
        if member is not None and self.broker is not None:
            self._spawn(self.broker.remove_member(topic, member[0]))
        t.refresh()
        if not t.channels:
            self._spawn(self._unsubscribe(t))

    def topics_of(self, channel: WebSocketChannel) -> frozenset[str]:
        """The topics ``channel`` has joined on this node."""
        return frozenset(self._memberships.get(channel, ()))

    def subscribers(self, topic: str) -> int:
        """How many of this node's connections have joined ``topic``."""
        t = self._topics.get(topic)
        return 0 if t is None else len(t.channels)

    async def presence(self, topic: str, *, limit: int = DEFAULT_PRESENCE_LIMIT) -> dict[str, str]:
        """Who is in ``topic`` on every node: the channels that joined it with ``presence=``,
        as ``{member: presence}``; ``member`` names the node and the channel
        (``"3f2a…b1.7"``), so two connections of one user are two members. At most ``limit``
        members.

        Through Redis, each node keeps its members in a hash the others read, refreshed by a
        heartbeat: a node that dies without a word is gone from the answer within the
        broker's ``presence_ttl``. Through NATS, the nodes are asked and the answers that come
        within ``presence_timeout`` are gathered (a dead node does not answer). Raises
        :class:`~wschannel.pubsub.BrokerUnavailable` when the broker cannot be reached.
        """
        self._check_open()
        _check_topic(topic)
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be a positive int, not {limit!r}.")
        if self.broker is None:
            t = self._topics.get(topic)
            members = dict(t.members.values()) if t is not None else {}
            return dict(sorted(members.items())[:limit])
        if not self.broker.has_presence:
            raise NotImplementedError(
                f"{self.broker.name} keeps no presence: use RedisBroker or NatsBroker."
            )
        return await self.broker.members(topic, limit)

    def _check_presence(self, presence: str) -> None:
        if not isinstance(presence, str):
            raise TypeError(f"presence is a str (a name, or JSON), not {type(presence).__name__}.")
        if len(presence) > MAX_PRESENCE_INFO:
            raise ValueError(
                f"presence is at most {MAX_PRESENCE_INFO} characters, not {len(presence)}: "
                "keep an id there and the rest elsewhere."
            )
        if self.broker is not None and not self.broker.has_presence:
            raise ValueError(
                f"{self.broker.name} keeps no presence: join without presence=, or use "
                "RedisBroker or NatsBroker."
            )

    @property
    def topics(self) -> frozenset[str]:
        """The topics this node has local subscribers for (and subscribes to at the broker)."""
        return frozenset(name for name, t in self._topics.items() if t.channels)

    async def publish(
        self,
        topic: str,
        message: str | Buffer,
        *,
        exclude: WebSocketChannel | None = None,
    ) -> Position | None:
        """Send ``message`` (``str``: text, bytes-like: binary) to every subscriber of
        ``topic`` on every node. Returns its :class:`Position` on a recoverable topic.

        ``exclude``: a channel of this node that does not get it (the sender, in a chat: the
        message carries the node's name and the channel's number, and only this node skips
        it). Plain topics only: a recoverable topic's subscribers count its offsets, so each
        is sent every message.

        Raises :class:`~wschannel.pubsub.BrokerUnavailable` if the broker cannot be reached
        (the message is not sent), ``ValueError`` for a bad topic name or a message over
        ``max_message_size``, ``TypeError`` for another message type.
        """
        self._check_open()
        _check_topic(topic)
        if exclude is not None:
            if not isinstance(exclude, WebSocketChannel):
                raise TypeError(f"exclude is a WebSocketChannel, not {type(exclude).__name__}.")
            if self.history(topic) is not None:
                raise ValueError(
                    f"{topic!r} is recoverable: its subscribers count the offsets, so none can "
                    "be excluded (publish without exclude=, and let the client skip its own)."
                )
        data: str | bytes
        if isinstance(message, str):
            data = message
        else:
            try:
                data = bytes(memoryview(message))
            except TypeError:
                raise TypeError(
                    f"Cannot publish {type(message).__name__}: send str (text) or a bytes-like "
                    "object (binary)."
                ) from None
        envelope = encode(data)
        if len(envelope) - 1 > self.max_message_size:
            raise ValueError(
                f"The message is {len(envelope) - 1} bytes, over max_message_size "
                f"({self.max_message_size}): send less, or raise max_message_size on every node."
            )
        number = None if exclude is None else self._numbers.get(exclude)
        if number is not None:  # a channel that never joined gets nothing anyway
            envelope = b"x%s%d:%s" % (self.node.encode(), number, envelope)
        broker = self.broker
        position = None
        if broker is None:
            self._receive(topic, envelope)
        elif (history := self.history(topic)) is None:
            await broker.publish(topic, envelope)
        else:
            position = await broker.publish_recoverable(topic, envelope, history)
        self.stats.published += 1  # not counted if the broker could not take it
        return position

    # -- the broker's side -------------------------------------------------------------------

    def _receive(self, topic: str, envelope: bytes) -> None:
        """An envelope for ``topic``, from the broker (or from :meth:`publish` without one)."""
        self.stats.received += 1
        t = self._topics.get(topic)
        if t is None or not t.channels:
            return  # left meanwhile: the unsubscription is on its way
        excluded = None
        if envelope[:1] == b"x":  # published with exclude=: from which node and channel
            colon = envelope.find(b":", 13, _ORIGIN_HEAD)
            number = envelope[13:colon]
            if colon < 0 or not number.isdigit():
                self.stats.malformed += 1
                logger.warning("Dropped a malformed message for topic %r from the broker", topic)
                return
            if envelope[1:13] == self.node.encode():
                excluded = self._by_number.get(int(number))
            envelope = envelope[colon + 1 :]
        if t.recovering is not None:
            assert t.history is not None
            if len(t.recovering) < t.history.size:
                t.recovering.append(envelope)
            else:
                t.overflowed = True
            return
        self._deliver(t, envelope, excluded)

    def _deliver(
        self, t: _Topic, envelope: bytes, excluded: WebSocketChannel | None = None
    ) -> None:
        decoded = decode(envelope, self.max_message_size)
        if decoded is None or (decoded[1] is None) != (t.history is None):
            self.stats.malformed += 1
            logger.warning("Dropped a malformed message for topic %r from the broker", t.name)
            return
        data, position = decoded
        if position is not None:
            last = t.last
            if last is not None and position.epoch == last.epoch:
                if position.offset <= last.offset:
                    return  # sent already (from the history)
                if position.offset > last.offset + 1:  # a gap: fetch it, hold the rest
                    t.recovering = [envelope]
                    self._spawn(self._recover_topic(t))
                    return
            elif last is not None:  # the history was lost: a new epoch
                self._resynchronise(t, list(t.ready), position)
            t.last = position
        publication = Publication(t.name, data, position)
        for channel, waiting in t.catching_up.items():
            if waiting is not None:  # held: at most the history's size, then it resynchronises
                if len(waiting) < (t.history.size if t.history else 0):
                    waiting.append(publication)
                else:
                    t.catching_up[channel] = None
        frame = self._framed(publication)
        if frame is not None:
            self._fan_out(t, frame, excluded)
        if t.ahead and position is not None:
            self._reach(t, position, frame)

    def _reach(self, t: _Topic, position: Position, frame: str | Buffer | None) -> None:
        """A live message at ``position``: the channels that the history took further than
        the node's live messages get it if it is past their position, and are ready then."""
        for channel, at in list(t.ahead.items()):
            if at.epoch == position.epoch and position.offset <= at.offset:
                continue  # sent to it from the history already
            del t.ahead[channel]
            if frame is not None:
                channel.sink.add(frame)
        t.refresh()

    def _framed(self, publication: Publication) -> str | Buffer | None:
        """``frame(publication)``; ``None`` (logged, counted) if it raised or gave neither
        text nor bytes: one application bug must not stop the node's deliveries."""
        try:
            frame = self._frame(publication)
            if not isinstance(frame, str):
                memoryview(frame)
        except Exception:
            self.stats.frame_errors += 1
            logger.exception("frame() failed for a message of %r: not sent", publication.topic)
            return None
        return frame

    def _fan_out(
        self, t: _Topic, message: str | Buffer, excluded: WebSocketChannel | None = None
    ) -> None:
        ready = t.ready
        if excluded is not None and excluded in t.channels:
            ready = [channel for channel in ready if channel is not excluded]
        if not ready:
            return
        sent = broadcast(ready, message)
        self.stats.delivered += sent
        if sent < len(ready):
            self._skipped(t, ready)

    def _skipped(self, t: _Topic, ready: list[WebSocketChannel]) -> None:
        """Some subscribers did not get the message: the slow ones meet the policy."""
        for channel in ready:
            sink = channel.sink
            if not isinstance(sink, GuaranteeSink) or sink._closed or sink._disconnected:
                continue
            if not sink._write_buffer_full():
                continue
            self.stats.dropped_slow += 1
            if self.slow == "close":
                self.stats.closed_slow += 1
                logger.info("Closing a subscriber of %r: too slow", t.name)
                for topic in list(self._memberships.get(channel, ())):
                    self.leave(channel, topic)
                sink.close(CloseCode.TRY_AGAIN_LATER, SLOW_CLOSE_REASON)

    def _broker_state(self, up: bool, error: BaseException | None) -> None:
        broker = self.broker
        assert broker is not None
        if not up:
            if self._outage is None:
                self.stats.outages += 1
                self._outage = Outage(broker.name, repr(error), time.time())
                logger.warning("Lost the connection to the broker (%s): %r", broker.name, error)
            return
        outage, self._outage = self._outage, None
        if outage is None:
            return
        outage.ended = time.time()
        live = [t for t in self._topics.values() if t.channels]
        outage.topics = tuple(sorted(t.name for t in live if t.history is None))
        outage.recoverable = tuple(sorted(t.name for t in live if t.history is not None))
        logger.warning(
            "The broker (%s) is back after %.1f s: messages published meanwhile to %s did not "
            "reach this node's subscribers; %s recovered from the history",
            broker.name,
            outage.ended - outage.started,
            ", ".join(outage.topics) or "no plain topic",
            ", ".join(outage.recoverable) or "no recoverable topic",
        )
        for t in live:
            if t.history is not None and t.recovering is None:
                t.recovering = []
                self._spawn(self._recover_topic(t))
        if self._on_outage is not None:
            try:
                self._on_outage(outage)
            except Exception:
                logger.exception("on_outage() raised")

    # -- history -----------------------------------------------------------------------------

    async def _catch_up(
        self, t: _Topic, channel: WebSocketChannel, since: Position | None
    ) -> Joined:
        """Send ``channel`` what it missed after ``since``, then what came live meanwhile."""
        broker = self.broker
        assert broker is not None
        while t.recovering is not None:  # the node fills its own gap first
            t.recovered.clear()
            await t.recovered.wait()
        recovery = await broker.recover(t.name, since)
        if t.last is None or t.last.epoch != recovery.position.epoch:
            t.last = recovery.position
        if channel not in t.channels:
            return Joined()  # it left (or closed) meanwhile
        held = t.catching_up.pop(channel, [])
        if held is None:  # more came live meanwhile than the history holds
            t.refresh()
            logger.info("A subscriber of %r fell behind while it recovered", t.name)
            return Joined(t.last, 0, True)
        sent = 0
        position = recovery.position
        if since is not None and recovery.complete:
            position = since
            for envelope in recovery.envelopes:
                decoded = decode(envelope, self.max_message_size)
                if decoded is None or decoded[1] is None:
                    self.stats.malformed += 1
                    continue
                data, stored = decoded
                assert stored is not None
                position = stored
                frame = self._framed(Publication(t.name, data, stored))
                if frame is not None:
                    channel.sink.add(frame)
                    sent += 1
        for publication in held:
            at = publication.position
            assert at is not None
            if at.epoch == position.epoch and at.offset <= position.offset:
                continue
            position = at
            frame = self._framed(publication)
            if frame is not None:
                channel.sink.add(frame)
        last = t.last
        if last is not None and last.epoch == position.epoch and last.offset < position.offset:
            # The history went further than the live messages this node has had: those up
            # to ``position`` are still on their way here, and this channel has them.
            t.ahead[channel] = position
        t.refresh()
        self.stats.recovered += sent
        must = since is not None and not recovery.complete
        return Joined(position, sent, must)

    async def _recover_topic(self, t: _Topic) -> None:
        """Fill this node's gap in ``t`` from the history, then deliver what was held."""
        broker = self.broker
        assert broker is not None and t.recovering is not None
        attempt = 0
        while True:
            try:
                recovery = await broker.recover(t.name, t.last)
                break
            except BrokerUnavailable:
                if self._outage is None and attempt < _RECOVERY_ATTEMPTS:
                    await asyncio.sleep(_RECOVERY_BACKOFF.delay(attempt))
                    attempt += 1
                    continue
                # Down again (the reconnection recovers), or still failing: deliver what was
                # held, and say so.
                logger.warning("Could not recover %r from the history after an outage", t.name)
                held, t.recovering = t.recovering, None
                t.recovered.set()
                if t.overflowed and t.last is not None:
                    self._resynchronise(t, list(t.ready), t.last)
                t.overflowed = False
                for envelope in held:
                    self._deliver(t, envelope)
                return
        if t.overflowed:  # more came meanwhile than the history holds: start afresh
            t.overflowed = False
            t.recovering = None
            t.recovered.set()
            self._resynchronise(t, list(t.ready), recovery.position)
            t.last = None  # the next live message sets it
            return
        if t.last is not None and recovery.complete:
            for envelope in recovery.envelopes:
                self._deliver(t, envelope)
                self.stats.recovered += 1
        elif t.last is not None:
            self._resynchronise(t, list(t.ready), recovery.position)
            t.last = recovery.position
        held, t.recovering = t.recovering, None
        for index, envelope in enumerate(held or ()):
            self._deliver(t, envelope)
            if t.recovering is not None:  # another gap: the new recovery takes the rest
                t.recovering.extend(held[index + 1 :])
                return
        t.recovered.set()

    def _resynchronise(
        self, t: _Topic, channels: list[WebSocketChannel], position: Position
    ) -> None:
        logger.warning(
            "Lost the history of %r (now at %s in epoch %s): %d subscribers must resynchronise",
            t.name,
            position.offset,
            position.epoch,
            len(channels),
        )
        for channel in channels:
            self.stats.resynchronised += 1
            try:
                self._on_resynchronise(channel, t.name, position)
            except Exception:
                logger.exception("on_resynchronise() raised for a subscriber of %r", t.name)

    # -- subscriptions -----------------------------------------------------------------------

    async def _subscribe(self, t: _Topic) -> None:
        if self.broker is None:
            return
        async with t.lock:
            if not t.subscribed and t.channels:
                await self.broker.subscribe(t.name)
                t.subscribed = True

    async def _unsubscribe(self, t: _Topic) -> None:
        async with t.lock:
            if t.channels:
                return  # joined again meanwhile
            if t.subscribed and self.broker is not None:
                t.subscribed = False
                await self.broker.unsubscribe(t.name)
            if not t.channels and self._topics.get(t.name) is t:
                del self._topics[t.name]

    def _gone(self, channel: WebSocketChannel, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved: the channel's owner reports it
        for topic in list(self._memberships.get(channel, ())):
            self.leave(channel, topic)
        number = self._numbers.pop(channel, None)
        if number is not None:
            del self._by_number[number]

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        if self._closed:
            coroutine.close()
            return
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("These Topics are closed: make a new Topics.")
        if not self._started:
            raise RuntimeError("Start the Topics first: `async with Topics(...)` or start().")


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or len(topic) > MAX_TOPIC_LENGTH or not _TOPIC.fullmatch(topic):
        raise ValueError(
            f"A topic is 1 to {MAX_TOPIC_LENGTH} characters: letters, digits and _-:@/, in "
            f"parts joined by single dots; not {topic!r}."
        )
