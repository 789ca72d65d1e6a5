"""Reconnecting: ``async for channel in wschannel.connect(url)`` (and ``for channel in
wschannel.sync.connect(url)``) yields a connection, and another each time the loop comes
back, waiting between attempts that fail.

What is retried (:func:`retryable`): what may pass on its own — the network (refused,
reset, unreachable, a name that does not resolve yet), a connect timeout, a server answering
5xx or 429 (after its ``Retry-After``, :func:`retry_after`), a proxy that could not reach the
server. What is not: what the server or the configuration decided — any other status (403,
404...), a certificate that does not verify, a subprotocol that was not offered, a redirect
loop. A ``should_retry`` given to ``connect`` replaces :func:`retryable` as the rule. The
delays come from :func:`backoff` (or the ``reconnect_delays`` given to ``connect``), from its
start after each connection that opened; when they run out, the iteration ends (after a
connection) or raises the last error (after a failed attempt).

Pure Python, without the engine or any driver: below :mod:`wschannel.channel` (the asyncio
loop, :class:`Reconnecting`), used by :mod:`wschannel.sync` (:class:`SyncReconnecting`) and
by the trio and anyio client (:class:`Attempts`, in :mod:`wschannel._structured`). Each
attempt is logged to ``wschannel.client``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import logging
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, Generic, ParamSpec, Protocol, Self, TypeVar

from .exceptions import InvalidStatus, ProxyError, WebSocketChannelException
from .status import GOING_AWAY, INTERNAL_SERVER_ERROR, NORMAL_CLOSURE

__all__ = [
    "MAX_RETRY_AFTER",
    "Attempts",
    "Delays",
    "Reconnecting",
    "Redial",
    "RetryRule",
    "SyncReconnecting",
    "backoff",
    "check_delays",
    "check_reconnect_options",
    "check_rule",
    "reconnecting",
    "redialable",
    "retry_after",
    "retryable",
]

logger = logging.getLogger("wschannel.client")

Delays = Callable[[], Iterable[float]]
"""``reconnect_delays``: called for a new series of delays (seconds) between attempts."""

RetryRule = Callable[[Exception], bool]
"""``should_retry``: called with the exception of an attempt that failed; ``True`` to try
again (after the next delay), ``False`` to raise it. :func:`retryable` by default."""

MAX_RETRY_AFTER: Final = 3600.0
"""The longest ``Retry-After`` honoured, in seconds: a server cannot park a client for
longer (one that asks for more is waited for this long)."""

# SOCKS5 replies that a later attempt may not get (RFC 1928 §6): general failure, network
# unreachable, host unreachable, connection refused, TTL expired.
_SOCKS_TRANSIENT: Final = frozenset({0x01, 0x03, 0x04, 0x05, 0x06})


def backoff(
    first: float = 1.0, factor: float = 2.0, maximum: float = 60.0, jitter: float = 0.5
) -> Iterator[float]:
    """The default ``reconnect_delays``: an endless series of delays in seconds.

    The first is random between 0 and ``first`` (RFC 6455 §7.2.3: clients cut off at once do
    not all come back at once); then ``first * factor``, ``first * factor ** 2``... up to
    ``maximum``, each less a random part of at most ``jitter`` of it. With the defaults:
    0-1 s, then 1-2, 2-4, 4-8... up to 30-60 s. Raises ``ValueError`` for a negative
    ``first``, a ``factor`` under 1, a ``maximum`` under ``first`` or a ``jitter`` outside
    0..1.
    """
    if first < 0 or factor < 1 or maximum < first or not 0 <= jitter <= 1:
        raise ValueError(
            "backoff() needs first >= 0, factor >= 1, maximum >= first and 0 <= jitter <= 1; "
            f"got first={first}, factor={factor}, maximum={maximum}, jitter={jitter}."
        )
    return _backoff(first, factor, maximum, jitter)


def _backoff(first: float, factor: float, maximum: float, jitter: float) -> Iterator[float]:
    yield random.uniform(0, first)
    delay = first
    while True:
        delay = min(delay * factor, maximum)
        yield delay * (1 - jitter * random.random())


def retryable(error: BaseException) -> bool:
    """Whether a connection attempt that failed with ``error`` is worth another: see the
    module's docs."""
    if isinstance(error, ProxyError):
        if error.status is not None:
            return error.status >= 500 or error.status == 429
        if error.reply is not None:
            return error.reply in _SOCKS_TRANSIENT
        return isinstance(error.inner or error.__cause__, OSError)
    if isinstance(error, InvalidStatus):
        return error.status >= 500 or error.status == 429
    if isinstance(error, TimeoutError):
        return True  # connect_timeout
    if isinstance(error, WebSocketChannelException):
        inner = error.inner
        if _is_certificate_error(inner):
            return False
        if isinstance(inner, OSError | EOFError):
            return True
        # The engine's HandshakeError: status 0 when the answer was not HTTP at all (a
        # server starting, a proxy in between); 101 with a bad accept key is the server's.
        return getattr(inner, "status", None) == 0
    return False


def _is_certificate_error(error: BaseException | None) -> bool:
    try:
        import ssl
    except ImportError:  # a Python without ssl: no certificate to check
        return False
    return isinstance(error, ssl.SSLCertVerificationError)


def retry_after(error: BaseException, now: float | None = None) -> float | None:
    """The seconds a refusal asks the client to wait (its ``Retry-After``: seconds or an
    HTTP date, RFC 9110 §10.2.3), at most :data:`MAX_RETRY_AFTER`; ``None`` if it asks
    nothing (or nothing valid). ``now``: the current time as a POSIX timestamp (tests)."""
    value = error.header("Retry-After") if isinstance(error, InvalidStatus) else None
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(int(value[:12]))  # a longer number is over the bound anyway
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110: an HTTP date is in GMT
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = max(0.0, when.timestamp() - current)
    return min(seconds, MAX_RETRY_AFTER)


def describe(url: str) -> str:
    """``url`` for a log line: without its user and password."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "?"
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# How a channel remembers the connect call that made it, to make another.

C = TypeVar("C")
P = ParamSpec("P")


class Redial(Generic[C]):
    """How to make another channel like one made by ``connect``: the same call again.

    Kept with every channel ``connect`` makes, so it costs little there: the call's
    arguments are read (its URL, its ``reconnect_delays``) only when the channel is iterated.
    """

    __slots__ = ("_args", "_connect", "_kwargs", "_signature")

    def __init__(
        self,
        connect: Callable[..., C],
        signature: inspect.Signature,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._connect = connect
        self._signature = signature
        self._args = args
        self._kwargs = kwargs

    def call(self) -> C:
        """Connect again, the same way."""
        return self._connect(*self._args, **self._kwargs)

    def arguments(self) -> tuple[str, Delays, RetryRule]:
        """The URL, the ``reconnect_delays`` and the ``should_retry`` of the call."""
        bound = self._signature.bind(*self._args, **self._kwargs)
        bound.apply_defaults()
        delays: Delays = bound.arguments["reconnect_delays"]
        rule: RetryRule = bound.arguments.get("should_retry", retryable)
        return str(bound.arguments["url"]), delays, rule


def check_delays(delays: object) -> None:
    """``TypeError`` at the call for a ``reconnect_delays`` that is not a function."""
    if not callable(delays):
        raise TypeError(
            "reconnect_delays must be a function returning the delays in seconds (called "
            "again after each connection that opened), such as wschannel.backoff or "
            f"lambda: [1, 2, 5]; got {delays!r}."
        )


def check_rule(rule: object) -> None:
    """``TypeError`` at the call for a ``should_retry`` that is not a function."""
    if not callable(rule):
        raise TypeError(
            "should_retry must be a function taking the exception of a failed attempt and "
            "returning whether to try again, such as wschannel.retryable (the default) or "
            "lambda error: isinstance(error, InvalidStatus) and error.status == 404 or "
            f"wschannel.retryable(error); got {rule!r}."
        )


def check_reconnect_options(options: dict[str, Any]) -> None:
    """:func:`check_delays` and :func:`check_rule` for the options of a call that has them."""
    if "reconnect_delays" in options:
        check_delays(options["reconnect_delays"])
    if "should_retry" in options:
        check_rule(options["should_retry"])


class _Redialable(Protocol):
    _redial: Redial[Any] | None


R = TypeVar("R", bound=_Redialable)


def redialable(connect: Callable[P, R]) -> Callable[P, R]:
    """Decorate a ``connect(url, ..., reconnect_delays=...)``: each channel it returns keeps
    the call (``_redial``), so that iterating the channel makes the next ones the same way."""
    signature = inspect.signature(connect)

    @functools.wraps(connect)
    def redialing_connect(*args: P.args, **kwargs: P.kwargs) -> R:
        check_reconnect_options(kwargs)
        channel = connect(*args, **kwargs)
        channel._redial = Redial(redialing_connect, signature, args, kwargs)
        return channel

    return redialing_connect


class Attempts:
    """The attempts of one iteration: the delays between them, which errors are retried
    (``rule``: ``should_retry``), and the log."""

    __slots__ = ("_delays", "_rule", "_series", "count", "url")

    def __init__(self, url: str, delays: Delays, rule: RetryRule = retryable) -> None:
        self._series = delays
        self._rule = rule
        self.url = describe(url)
        self._delays: Iterator[float] | None = None
        self.count = 0  # attempts since the last connection that opened

    def opened(self) -> None:
        if self.count > 1:
            logger.info("Connected to %s after %d attempts", self.url, self.count)
        self.count = 0
        self._delays = None  # the next reconnection starts the series again

    def after_loss(self, close_code: int | None) -> float | None:
        """The delay before reconnecting after a connection that opened (None: stop)."""
        delay = self._next()
        if delay is None:
            logger.info("Connection to %s closed (%s); not reconnecting", self.url, close_code)
        else:
            logger.info(
                "Connection to %s closed (%s); reconnecting in %.2f s", self.url, close_code, delay
            )
        return delay

    def after_failure(self, error: Exception) -> float:
        """The delay before the next attempt after ``error``; raises it if it is not worth
        another, or when the delays ran out."""
        if not self._rule(error):
            logger.info("Connecting to %s failed for good: %s", self.url, _one_line(error))
            raise error
        delay = self._next()
        if delay is None:
            logger.info(
                "Connecting to %s failed (attempt %d), no more attempts: %s",
                self.url,
                self.count,
                _one_line(error),
            )
            raise error
        asked = retry_after(error)
        if asked is not None and asked > delay:
            delay = asked
        logger.info(
            "Connecting to %s failed (attempt %d); retrying in %.2f s: %s",
            self.url,
            self.count,
            delay,
            _one_line(error),
        )
        return delay

    def attempt(self) -> None:
        self.count += 1
        logger.debug("Connecting to %s (attempt %d)", self.url, self.count)

    def _next(self) -> float | None:
        if self._delays is None:
            self._delays = iter(self._series())
        delay = next(self._delays, None)
        if delay is not None and not delay >= 0:
            raise ValueError(f"reconnect_delays gave {delay!r}: delays are seconds, >= 0.")
        return delay


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


# asyncio.


class _Sink(Protocol):
    def close(self, code: int | None = None, reason: str | None = None) -> Awaitable[None]: ...

    @property
    def done(self) -> Awaitable[None]: ...


class _Channel(Protocol):
    @property
    def ready(self) -> asyncio.Future[None]: ...

    @property
    def sink(self) -> _Sink: ...

    @property
    def close_code(self) -> int | None: ...


A = TypeVar("A", bound=_Channel)


class Reconnecting(AsyncIterator[A]):
    """``async for channel in connect(url)``: the first channel once open, then, each time
    the loop comes back, the previous one closed (1000 if still open) and a new one.

    Stops when the loop does (``break``, an exception: the channel is left as it is, so use
    ``async with channel:`` in the loop to close it), when the delays run out after a
    connection, or by raising an attempt's error (not retryable, or no delay left).
    """

    __slots__ = ("_attempts", "_current", "_first", "_redial")

    def __init__(self, first: A, redial: Redial[A]) -> None:
        self._first: A | None = first
        self._redial = redial
        self._current: A | None = None
        self._attempts = Attempts(*redial.arguments())

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> A:
        attempts = self._attempts
        current, self._current = self._current, None
        if current is not None:
            await _close(current)
            delay = attempts.after_loss(current.close_code)
            if delay is None:
                raise StopAsyncIteration
            await asyncio.sleep(delay)
            channel = self._redial.call()
        else:
            first, self._first = self._first, None
            if first is None:
                raise StopAsyncIteration
            channel = first
        while True:
            attempts.attempt()
            try:
                await channel.ready
            except Exception as error:
                await asyncio.sleep(attempts.after_failure(error))
                channel = self._redial.call()
            else:
                attempts.opened()
                self._current = channel
                return channel


async def _close(channel: _Channel) -> None:
    """Close a channel the loop came back with (1000 if still open) and wait until closed."""
    sink = channel.sink
    await sink.close(NORMAL_CLOSURE)
    await sink.done


# Blocking.


class _SyncChannel(Protocol):
    @property
    def close_code(self) -> int | None: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


S = TypeVar("S", bound=_SyncChannel)


class SyncReconnecting(Iterator[S]):
    """``for channel in wschannel.sync.connect(url)``: :class:`Reconnecting` for threads. The
    first channel is given open (``None``: the first attempt is made here too, retried as
    the others); attempts block the iterating thread, delays sleep it."""

    __slots__ = ("_attempts", "_current", "_first", "_redial", "_started")

    def __init__(self, first: S | None, redial: Redial[S]) -> None:
        self._first = first
        self._redial = redial
        self._current: S | None = None
        self._started = False
        self._attempts = Attempts(*redial.arguments())

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> S:
        attempts = self._attempts
        current, self._current = self._current, None
        if current is not None:
            current.close(NORMAL_CLOSURE)  # returns once closed
            delay = attempts.after_loss(current.close_code)
            if delay is None:
                raise StopIteration
            time.sleep(delay)
        elif self._started:
            raise StopIteration
        else:
            self._started = True
            first, self._first = self._first, None
            if first is not None:
                attempts.attempt()
                attempts.opened()
                self._current = first
                return first
        while True:
            attempts.attempt()
            try:
                channel = self._redial.call()
            except Exception as error:
                time.sleep(attempts.after_failure(error))
            else:
                attempts.opened()
                self._current = channel
                return channel


def reconnecting(connect: Callable[P, S]) -> Callable[P, Iterator[S]]:
    """The iterating twin of a blocking ``connect`` (decorated with :func:`redialable`): the
    same arguments, and an iterator of channels (:class:`SyncReconnecting`) whose first
    attempt is retried as the others."""
    signature = inspect.signature(connect)

    def reconnect(*args: P.args, **kwargs: P.kwargs) -> Iterator[S]:
        check_reconnect_options(kwargs)
        return SyncReconnecting(None, Redial(connect, signature, args, kwargs))

    return reconnect


def close_code_for(error: BaseException | None) -> int:
    """The close code of a ``with``/``async with`` block that ends: 1000 (normal closure);
    1011 (internal error) when it raised an exception; 1001 (going away) when the program or
    task is being stopped (a ``BaseException`` that is not an ``Exception``: a cancelled
    task, ``KeyboardInterrupt``, ``SystemExit``), as ``wschannel.trio`` closes."""
    if error is None:
        return NORMAL_CLOSURE
    return INTERNAL_SERVER_ERROR if isinstance(error, Exception) else GOING_AWAY
