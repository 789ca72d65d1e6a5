"""Redis as the broker: pub/sub for every topic, Streams for the history of recoverable ones.

Two connections per node, both from redis-py (its hiredis parser when installed):

- the **subscriber**: one connection in subscribed mode (``SUBSCRIBE``/``UNSUBSCRIBE``), read
  by one task, which hands each message to the node; a ``PING`` every ``health_interval``
  seconds notices a broker that vanished without closing TCP;
- the **client**: a small pool for ``PUBLISH`` and the two Lua scripts of recoverable topics.

Keys, under ``prefix`` (default ``wschannel``): the channel ``{prefix}:t:{topic}``, and for a
recoverable topic the stream ``{prefix}:h:{topic}`` (its history, entry IDs ``0-{offset}``)
and the hash ``{prefix}:m:{topic}`` (``e``: the epoch, ``o``: the last offset). One script
appends to the stream, counts the offset and publishes, atomically, so a live message and the
history never disagree on a position; the epoch is made when the hash is (a Redis that lost
its data, or a history that expired, starts a new epoch at offset 1).

Presence: for each topic, the sorted set ``{prefix}:p:{topic}`` holds the nodes that have
members there, each scored with the time (Redis's clock, in ms) its entry expires, and the
hash ``{prefix}:p:{topic}|{node}`` holds that node's members and their info (``|`` is in no
topic name, so the two never meet). A node writes its members as they join and leave, and
every ``presence_ttl / 3`` seconds a heartbeat pushes its expiry on (and writes the whole hash
again if Redis lost it, or a write failed meanwhile). A reader drops the nodes whose time is
past: a node that died is gone within ``presence_ttl``, its hash expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from typing import Any, Final

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ._backoff import Backoff
from ._broker import (
    Broker,
    BrokerUnavailable,
    History,
    Position,
    Receive,
    Recovery,
    StateChanged,
)

__all__ = ["RedisBroker"]

logger = logging.getLogger("wschannel.pubsub")

# KEYS: stream, meta, channel. ARGV: envelope (plain form), history size, ttl in ms (0: none),
# an epoch to use if the topic has none. Returns {offset, epoch}.
_PUBLISH: Final = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
local envelope = string.upper(string.sub(ARGV[1], 1, 1)) .. offset .. ':' .. epoch .. ':'
  .. string.sub(ARGV[1], 2)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '0-' .. offset, 'd', envelope)
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', KEYS[3], envelope)
return {offset, epoch}
"""

# KEYS: stream, meta. ARGV: the offset after which to read ('' for none), an epoch to use if
# the topic has none. Returns {epoch, last offset, entries after the offset}.
_RECOVER: Final = """
if redis.call('HSETNX', KEYS[2], 'e', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], 'o', 0)
end
local epoch = redis.call('HGET', KEYS[2], 'e')
local top = redis.call('HGET', KEYS[2], 'o') or '0'
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[1], '+')
end
return {epoch, top, entries}
"""


# KEYS: the topic's set, this node's hash. ARGV: node, ttl in ms, "replace", "add" or "remove",
# then members and their info (add, replace) or members (remove). Returns 1.
_PRESENCE_WRITE: Final = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[2])
if ARGV[3] == 'replace' then
  redis.call('DEL', KEYS[2])
end
if ARGV[3] == 'remove' then
  for i = 4, #ARGV do
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
else
  for i = 4, #ARGV - 1, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[1], expires, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: the topic's set, this node's hash. ARGV: node, ttl in ms. Returns 0 if the hash is
# gone (expired, or Redis lost it: the node writes it again), 1 once its expiry is pushed on.
_PRESENCE_REFRESH: Final = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS: the topic's set. ARGV: the most members to return. Drops the nodes whose time is past,
# then returns the members of the others and their info, flat.
_PRESENCE_READ: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
local limit = 2 * tonumber(ARGV[1])
local found = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', KEYS[1] .. '|' .. node)
  for i = 1, #fields do
    if #found >= limit then
      return found
    end
    found[#found + 1] = fields[i]
  end
end
return found
"""

_PRESENCE_CHUNK: Final = 500  # members per script call when a node writes a topic's whole hash


def _epoch() -> str:
    return secrets.token_hex(4)


class RedisBroker(Broker):
    """Redis 7 (pub/sub, and Streams for recoverable topics) as the broker.

    - ``url``: as for redis-py (``redis://host:port/db``, ``rediss://`` for TLS,
      ``unix:///path``).
    - ``prefix``: the first part of every key and channel name, to share a Redis.
    - ``connect_timeout``: seconds for one connection attempt (and for a publish's answer).
    - ``backoff``: the delays between reconnection attempts.
    - ``health_interval``: seconds between pings on the subscriber connection; no answer
      within three of them counts as the broker being gone.
    - ``presence_ttl``: seconds a node's members stay listed (:meth:`Topics.presence`)
      without its heartbeat (every third of it): a node that dies is gone within this.
    """

    name = "redis"
    recoverable = True
    has_presence = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        prefix: str = "wschannel",
        connect_timeout: float = 2.0,
        backoff: Backoff | None = None,
        health_interval: float = 5.0,
        presence_ttl: float = 30.0,
    ) -> None:
        if not prefix or any(char in prefix for char in " \r\n"):
            raise ValueError(f"prefix must be a non-empty name without spaces, not {prefix!r}.")
        if not health_interval > 0:
            raise ValueError("health_interval must be a positive number of seconds.")
        if not presence_ttl >= 0.3:
            raise ValueError("presence_ttl must be a number of seconds, at least 0.3.")
        self.url = url
        self.prefix = prefix
        self.backoff = backoff or Backoff()
        self.health_interval = health_interval
        no_retry = Retry(NoBackoff(), 0)
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "retry": no_retry,
        }
        self._client = Redis.from_url(url, socket_timeout=connect_timeout, **options)
        # RESP2: messages and confirmations come as plain replies (RESP3 makes them pushes).
        self._subscriber_pool = ConnectionPool.from_url(
            url, socket_timeout=None, protocol=2, **options
        )
        self._publish_script = self._client.register_script(_PUBLISH)
        self._recover_script = self._client.register_script(_RECOVER)
        self._presence_write = self._client.register_script(_PRESENCE_WRITE)
        self._presence_refresh = self._client.register_script(_PRESENCE_REFRESH)
        self._presence_read = self._client.register_script(_PRESENCE_READ)
        self.presence_ttl = presence_ttl
        self.connect_timeout = connect_timeout
        self.node = secrets.token_hex(6)
        self._members: dict[str, dict[str, str]] = {}  # topic → this node's members → info
        self._stale: set[str] = set()  # topics whose hash a failed write left behind
        self._presence_lock = asyncio.Lock()  # one node's presence writes, in order
        self._heartbeat: asyncio.Task[None] | None = None
        self._topics: set[str] = set()
        self._confirming: dict[bytes, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._receive: Receive | None = None
        self._state_changed: StateChanged | None = None
        self._task: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None
        self._outbox: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None
        self._closed = False
        self._answered = 0.0  # the loop time of the subscriber connection's last answer

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, prefix={self.prefix!r})"

    def _channel(self, topic: str) -> bytes:
        return f"{self.prefix}:t:{topic}".encode()

    def _keys(self, topic: str) -> list[str]:
        return [f"{self.prefix}:h:{topic}", f"{self.prefix}:m:{topic}"]

    async def start(self, receive: Receive, state_changed: StateChanged) -> None:
        if self._receive is not None:
            raise RuntimeError("This RedisBroker was started already: make one per Topics.")
        self._receive, self._state_changed = receive, state_changed
        try:
            await self._client.ping()
            conn, _ = await self._connect()  # no topic yet: nothing to confirm
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Cannot reach Redis at {self.url}: {exc}") from exc
        self._conn = conn
        self._task = asyncio.create_task(self._run(conn), name=f"{self!r} subscriber")

    async def _connect(self) -> tuple[AbstractConnection, list[asyncio.Future[None]]]:
        """A subscriber connection that subscribes to every topic; the futures resolve as
        Redis confirms each (read by :meth:`_read`)."""
        conn = self._subscriber_pool.connection_class(**self._subscriber_pool.connection_kwargs)
        await conn.connect()  # type: ignore[no-untyped-call]
        channels = [self._channel(topic) for topic in self._topics]
        waiters = [self._expect(channel) for channel in channels]
        if channels:
            await conn.send_command("SUBSCRIBE", *channels)
        return conn, waiters

    def _expect(self, channel: bytes) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._confirming.setdefault(channel, []).append(waiter)
        return waiter

    async def _announce(
        self, conn: AbstractConnection, waiters: list[asyncio.Future[None]]
    ) -> None:
        """Say the broker is back once it confirmed every subscription (so that a history
        read after this misses nothing published since)."""
        await asyncio.gather(*waiters)
        if self._conn is conn and not self._closed:
            assert self._state_changed is not None
            self._state_changed(True, None)

    async def _run(self, conn: AbstractConnection | None) -> None:
        attempt = 0
        while not self._closed:
            try:
                if conn is None:
                    conn, waiters = await self._connect()
                    attempt = 0
                    self._conn = conn
                    self._announcing = asyncio.create_task(self._announce(conn, waiters))
                self._conn = conn
                await self._read(conn)
            except (RedisError, OSError, TimeoutError) as exc:
                if self._closed:
                    return
                if self._conn is not None:
                    self._conn = None
                    self._release_confirming()
                    assert self._state_changed is not None
                    self._state_changed(False, exc)
                if conn is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await conn.disconnect()
                    # The client's pooled connections went with the broker: drop them, so
                    # that the commands after the reconnection do not fail on a stale one.
                    with contextlib.suppress(RedisError, OSError):
                        await self._client.connection_pool.disconnect()
                conn = None
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        receive = self._receive
        assert receive is not None
        pinger = asyncio.create_task(self._ping(conn))
        prefix = f"{self.prefix}:t:".encode()
        skip = len(prefix)
        self._answered = loop.time()
        try:
            while True:
                response = await conn.read_response(timeout=math.inf)
                self._answered = loop.time()
                if not isinstance(response, list) or len(response) < 2:
                    continue
                kind = response[0]
                if kind == b"message" and len(response) == 3:
                    channel, data = response[1], response[2]
                    if (
                        isinstance(channel, bytes)
                        and channel.startswith(prefix)
                        and isinstance(data, bytes)
                    ):
                        receive(channel[skip:].decode("utf-8", "replace"), data)
                elif kind == b"subscribe":
                    for waiter in self._confirming.pop(response[1], ()):
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            pinger.cancel()

    async def _ping(self, conn: AbstractConnection) -> None:
        """Ping while subscribed; a broker silent for three intervals is gone: the read ends."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            if loop.time() - self._answered > 3 * self.health_interval:
                logger.warning(
                    "Redis at %s has not answered for %.0f s",
                    self.url,
                    loop.time() - self._answered,
                )
                await conn.disconnect()
                return
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command("PING")

    def _release_confirming(self) -> None:
        """The connection is gone: nobody waits for a confirmation (the topics are subscribed
        to again once it is back)."""
        for waiters in self._confirming.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._confirming.clear()

    async def subscribe(self, topic: str) -> None:
        self._topics.add(topic)
        conn = self._conn
        if conn is None:
            return
        channel = self._channel(topic)
        waiter = self._expect(channel)
        try:
            await conn.send_command("SUBSCRIBE", channel)
        except (RedisError, OSError):
            return  # the reader notices, and subscribes again once the broker is back
        await waiter

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command("UNSUBSCRIBE", self._channel(topic))

    async def publish(self, topic: str, envelope: bytes) -> None:
        """Publishes made while others are on their way go together, in order, in one
        pipeline on one connection (so one node's publishes keep their order)."""
        waiter = asyncio.get_running_loop().create_future()
        self._outbox.append((self._channel(topic), envelope, waiter))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_outbox())
        await waiter

    async def _send_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                if len(batch) == 1:
                    await self._client.publish(batch[0][0], batch[0][1])
                else:
                    pipeline = self._client.pipeline(transaction=False)
                    for channel, envelope, _ in batch:
                        pipeline.publish(channel, envelope)
                    await pipeline.execute()
            except (RedisError, OSError) as exc:
                error = BrokerUnavailable(f"Cannot publish to Redis at {self.url}: {exc}")
                error.__cause__ = exc
                for _, _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            for _, _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)

    async def publish_recoverable(self, topic: str, envelope: bytes, history: History) -> Position:
        ttl = 0 if history.ttl is None else math.ceil(history.ttl * 1000)
        keys: list[str | bytes] = [*self._keys(topic), self._channel(topic)]
        try:
            offset, epoch = await self._publish_script(
                keys=keys, args=[envelope, history.size, ttl, _epoch()]
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Cannot publish to Redis at {self.url}: {exc}") from exc
        return Position(int(offset), epoch.decode())

    async def recover(self, topic: str, since: Position | None) -> Recovery:
        after = "" if since is None else str(since.offset)
        try:
            epoch, top, entries = await self._recover_script(
                keys=self._keys(topic), args=[after, _epoch()]
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"Cannot read history from Redis at {self.url}: {exc}") from exc
        position = Position(int(top), epoch.decode())
        envelopes: list[bytes] = []
        first = None
        for entry_id, fields in entries:
            if first is None:
                first = int(entry_id.split(b"-")[1])
            envelopes.append(fields[1] if len(fields) > 1 else b"")
        complete = since is None or (
            since.epoch == position.epoch
            and since.offset <= position.offset
            and (since.offset == position.offset or first == since.offset + 1)
            and len(envelopes) == position.offset - since.offset
        )
        return Recovery(position, envelopes, complete)

    # -- presence ---------------------------------------------------------------------------

    def _presence_keys(self, topic: str) -> list[str | bytes]:
        key = f"{self.prefix}:p:{topic}"
        return [key, f"{key}|{self.node}"]

    def _ttl_ms(self) -> int:
        return math.ceil(self.presence_ttl * 1000)

    async def add_member(self, topic: str, member: str, info: str) -> None:
        async with self._presence_lock:
            self._members.setdefault(topic, {})[member] = info
            if self._heartbeat is None and not self._closed:
                self._heartbeat = asyncio.create_task(self._beat(), name=f"{self!r} presence")
            await self._write_presence(topic, "add", [member, info])

    async def remove_member(self, topic: str, member: str) -> None:
        async with self._presence_lock:
            members = self._members.get(topic)
            if members is None or members.pop(member, None) is None:
                return
            if not members:
                del self._members[topic]
            await self._write_presence(topic, "remove", [member])

    async def _write_presence(self, topic: str, how: str, args: list[str]) -> None:
        """A presence write; if it fails, the heartbeat writes the topic's whole hash again."""
        if topic in self._stale:
            return  # the heartbeat writes it whole
        try:
            await self._presence_write(
                keys=self._presence_keys(topic), args=[self.node, self._ttl_ms(), how, *args]
            )
        except (RedisError, OSError) as exc:
            logger.debug("Presence of %r not written to Redis (%r): the heartbeat will", topic, exc)
            self._stale.add(topic)

    async def _rewrite_presence(self, topic: str) -> None:
        members = list(self._members.get(topic, {}).items())
        keys, ttl = self._presence_keys(topic), self._ttl_ms()
        how = "replace"
        for start in range(0, max(1, len(members)), _PRESENCE_CHUNK):
            flat = [text for pair in members[start : start + _PRESENCE_CHUNK] for text in pair]
            await self._presence_write(keys=keys, args=[self.node, ttl, how, *flat])
            how = "add"

    async def _beat(self) -> None:
        """Every third of ``presence_ttl``: push this node's expiry on for each topic it has
        members in, writing the whole hash where Redis lost it or a write failed."""
        while not self._closed:
            await asyncio.sleep(self.presence_ttl / 3)
            async with self._presence_lock:
                ttl = self._ttl_ms()
                try:
                    for topic in list(self._stale):
                        await self._rewrite_presence(topic)
                        self._stale.discard(topic)
                    for topic in list(self._members):
                        keys = self._presence_keys(topic)
                        if not await self._presence_refresh(keys=keys, args=[self.node, ttl]):
                            await self._rewrite_presence(topic)
                except (RedisError, OSError) as exc:
                    logger.debug("Presence heartbeat to Redis failed (%r): next time", exc)
                    self._stale.update(self._members)

    async def members(self, topic: str, limit: int) -> dict[str, str]:
        try:
            found = await self._presence_read(keys=self._presence_keys(topic)[:1], args=[limit])
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"Cannot read presence from Redis at {self.url}: {exc}"
            ) from exc
        members: dict[str, str] = {}
        for index in range(0, min(len(found), 2 * limit) - 1, 2):
            member, info = found[index], found[index + 1]
            if isinstance(member, bytes) and isinstance(info, bytes):
                members[member.decode("utf-8", "replace")] = info.decode("utf-8", "replace")
        return dict(sorted(members.items()))

    async def _forget_presence(self) -> None:
        """On close: this node's members leave every topic at once (best effort: otherwise
        they expire within ``presence_ttl``)."""
        async with self._presence_lock:
            topics, self._members = list(self._members), {}
            for topic in topics:
                with contextlib.suppress(RedisError, OSError):
                    keys = self._presence_keys(topic)
                    await self._presence_write(
                        keys=keys, args=[self.node, self._ttl_ms(), "replace"]
                    )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._members:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await self._forget_presence()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._conn.disconnect()
            self._conn = None
        self._release_confirming()
        await self._client.aclose()
        await self._subscriber_pool.aclose()
