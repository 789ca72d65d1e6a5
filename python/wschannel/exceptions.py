"""The exceptions ``wschannel`` raises.

.. code-block:: text

    Exception
     ├── WebSocketChannelException    a connection could not be established
     │    ├── InvalidStatus           the server answered the upgrade with another status
     │    └── ProxyError              the proxy refused the tunnel, or could not be reached
     └── WebSocketException           the low-level socket layer (wschannel.adapter) failed
          └── WebSocketConnectionClosed   sending or closing after the connection closed
    RuntimeError
     └── StateError                   the channel was used in a way its state forbids
    TimeoutError (built-in)           connect_timeout elapsed
    ValueError (built-in)             an invalid close code or reason, or URL
    TypeError (built-in)              a message of a type that cannot be sent

Only the failure to connect is reported as an error on a channel (on ``ready`` and, once, on
``stream``). What happens to an open connection is not an error: the stream ends, and
``close_code``/``close_reason`` tell why (RFC 6455 §7.1.5). The low-level sockets that
:class:`~wschannel.adapter.AdapterWebSocketChannel` wraps raise :class:`WebSocketException`;
channel users see one only as the ``inner`` of a :class:`WebSocketChannelException`.
"""

from __future__ import annotations

from typing import Self

__all__ = [
    "InvalidStatus",
    "ProxyError",
    "StateError",
    "WebSocketChannelException",
    "WebSocketConnectionClosed",
    "WebSocketException",
]


class WebSocketChannelException(Exception):
    """A WebSocket connection could not be established.

    ``message`` describes the failure; ``inner`` is the error that caused it (an
    :class:`OSError`, an :class:`ssl.SSLError`, a handshake error...), or ``None``. When
    ``inner`` is set it is also the ``__cause__``, so tracebacks show both.
    """

    message: str | None
    inner: BaseException | None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(*(() if message is None else (message,)))
        self.message = message
        self.inner = None

    @classmethod
    def from_inner(cls, inner: BaseException) -> Self:
        """Wrap ``inner``: its text becomes ``message`` and it becomes ``__cause__``."""
        error = cls(str(inner) or type(inner).__name__)
        error.inner = inner
        error.__cause__ = inner
        return error

    def __str__(self) -> str:
        return self.message or ""

    def __repr__(self) -> str:
        if self.message is None:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}({self.message!r})"


class InvalidStatus(WebSocketChannelException):
    """The server answered the opening handshake with an HTTP status other than 101
    (RFC 6455 §4.1: 404, 403, 429, 503...).

    ``status`` is that status and ``headers`` the response's headers, in order (a
    ``Retry-After``, a ``Location``...); ``inner`` is the handshake error that reported it.
    """

    status: int
    headers: list[tuple[str, str]]

    def __init__(self, message: str, status: int, headers: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers

    def header(self, name: str) -> str | None:
        """The value of the response's first header called ``name`` (any case), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @classmethod
    def refused(
        cls, inner: BaseException, status: int, headers: list[tuple[str, str]]
    ) -> InvalidStatus:
        """The error for a refusal that ``inner`` (the handshake's error) reported."""
        error = cls(str(inner) or f"The server answered with status {status}.", status, headers)
        error.inner = inner
        error.__cause__ = inner
        return error


class StateError(RuntimeError):
    """An operation that the channel's state forbids, such as adding to a closed sink.

    The messages are Dart's (``"Cannot add event after closing."``).
    """


class WebSocketException(Exception):
    """A low-level WebSocket (:class:`wschannel.adapter.WebSocket`) failed, e.g. to connect.

    ``message`` says why; ``str()`` is the message, ``repr()`` names the class.
    """

    message: str

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class WebSocketConnectionClosed(WebSocketException):
    """A low-level WebSocket was used after it was closed, by this side or by the peer."""

    def __init__(self, message: str = "Connection Closed") -> None:
        super().__init__(message)


class ProxyError(WebSocketChannelException):
    """The proxy a client goes through refused the tunnel, answered wrongly, or could not be
    reached (:mod:`wschannel._proxy`).

    ``proxy`` is the proxy's URL without credentials; ``status`` the HTTP status of an HTTP
    proxy's refusal (``407``, ``403``...), ``reply`` the reply code of a SOCKS5 proxy's
    (``0x02``: not allowed by its rules...); each ``None`` when it does not apply.
    """

    proxy: str
    status: int | None
    reply: int | None

    def __init__(
        self, message: str, *, proxy: str, status: int | None = None, reply: int | None = None
    ) -> None:
        super().__init__(message)
        self.proxy = proxy
        self.status = status
        self.reply = reply
