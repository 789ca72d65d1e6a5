"""The compiled WebSocket engine (Rust, sans-I/O). Private: use the ``wschannel`` package.

Bytes in, events out; commands in, bytes out. Nothing here touches a socket, a clock or a
thread. Peer misbehaviour never raises: it becomes a :class:`Failure` event plus a close
frame in :meth:`Connection.data_to_send`. Only misuse of the API raises.
"""

from collections.abc import Callable, Sequence
from typing import Final, Self, final

from typing_extensions import Buffer

__version__: Final[str]

OPEN: Final[int]
CLOSING: Final[int]
CLOSED: Final[int]

DEFAULT_DEFLATE_LEVEL: Final[int]
"""The compression level of :class:`DeflateOptions` and :class:`Connection` when not given: 4."""

# What Connection.poll_action() returns besides bytes to write (the engine crate's session: Action).
STOP_SENDING: Final[int]
PAUSE_READING: Final[int]
RESUME_READING: Final[int]
AWAIT_CONSUMER: Final[int]
SAMPLE_UNSENT: Final[int]
END_STREAM: Final[int]
HALF_CLOSE: Final[int]
CLOSE_TRANSPORT: Final[int]
ABORT: Final[int]
DONE: Final[int]

def sign_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""

class HandshakeError(Exception):
    """The opening handshake failed (RFC 6455 §4): a malformed or unacceptable message.

    ``status`` is the HTTP status of the response for a client (0 if none was parsed),
    or the status the server should answer with.
    """

    status: int

@final
class DeflateOptions:
    """permessage-deflate settings (RFC 7692 §7.1): what a client offers, what a server accepts.

    Window bits are 8..=15; ``None`` means "no limit asked" (15). ``level`` is zlib's, 0..=9;
    the default is :data:`DEFAULT_DEFLATE_LEVEL`, 4 (see docs/asyncio.md for why not zlib's 6).
    """

    def __new__(
        cls,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | None = None,
        level: int = ...,
    ) -> Self: ...
    @property
    def level(self) -> int: ...

@final
class Ping:
    """A ping frame from the peer; the engine has already queued the pong."""

    data: bytes

@final
class Pong:
    """A pong frame from the peer."""

    data: bytes

@final
class Fragment:
    """A piece of a message received in pieces (:meth:`Connection.set_delivery`).

    ``data`` is ``str`` for text (whole characters: a character is never cut between two
    pieces) or ``bytes`` for binary; ``last`` is true on the message's last piece, which may
    be empty. Made in Python, it wraps a whole message as one piece (``last=True``).
    """

    data: str | bytes
    last: bool

    def __new__(cls, data: str | bytes, last: bool = True) -> Self: ...

@final
class Close:
    """The peer's close frame (RFC 6455 §5.5.1): code 1005 and ``''`` when it had no code.

    If this side had not sent a close frame yet, the echo is queued in ``data_to_send``.
    """

    code: int
    reason: str

@final
class Failure:
    """This side failed the connection because of the peer (RFC 6455 §7.1.7).

    A close frame with ``code`` and ``reason`` is queued in ``data_to_send``; the transport
    should be closed once it is written.
    """

    code: int
    reason: str

@final
class Connection:
    """One open WebSocket connection (RFC 6455 §5-7), after the opening handshake.

    ``max_message_size`` and ``max_frame_size`` bound what the peer may send (after
    decompression); exceeding them fails the connection with 1009. ``None`` disables a limit.
    """

    def __new__(
        cls,
        client: bool,
        *,
        max_message_size: int | None = ...,
        max_frame_size: int | None = None,
        deflate: str | None = None,
        deflate_level: int = ...,
        seed: int | None = None,
    ) -> Self:
        """``deflate`` is the negotiated ``Sec-WebSocket-Extensions`` value (from a handshake)
        or ``None`` for no compression; ``deflate_level`` is zlib's, 0..=9, by default
        :data:`DEFAULT_DEFLATE_LEVEL`. ``seed`` makes the masking keys deterministic (tests)."""

    @property
    def state(self) -> int: ...
    @property
    def client(self) -> bool: ...
    @property
    def close_sent(self) -> bool: ...
    @property
    def accepts_shared_frames(self) -> bool:
        """Whether a frame from :func:`encode_shared_frame` may be written to this connection
        as it is: a server without compression whose close frame has not left."""

    @property
    def close_received(self) -> bool: ...
    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame, or of our failure; ``None`` before either.
        With a session: the code to report (1001 after a keepalive timeout, 1006 once the
        transport ended without a close frame)."""

    @property
    def close_reason(self) -> str | None: ...
    @property
    def counters(self) -> tuple[int, int, int, int]:
        """``(messages_received, messages_sent, bytes_received, bytes_sent)`` so far.

        Messages: text and binary messages delivered by :meth:`receive_data`, and encoded by
        the ``send_*`` methods (plus :meth:`count_shared_frame`). Bytes, as on the wire after
        the opening handshake: every byte given to :meth:`receive_data` (or read by
        :class:`SocketIO`), and every frame this side encoded (messages, pings, pongs, close
        frames, the replies of :meth:`data_to_send`; headers and masks included, after
        compression)."""
    def count_shared_frame(self, size: int) -> None:
        """Count a frame of ``size`` bytes from :func:`encode_shared_frame`, written to this
        connection by the caller, as one message sent."""
    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated."""
    @property
    def holds_compression_state(self) -> bool:
        """Whether a compressor or decompressor is allocated now."""
    def release(self) -> None:
        """The connection is over: free its compression state and buffers now, not when the
        object is collected. Counters, close code and reason stay; nothing more can be
        received or sent."""
    def compact_if_idle(self) -> bool:
        """Free the compressor and decompressor if no message went either way since the last
        call (the next message rebuilds them from the kept history); True if it did."""
    def receive_data(
        self, data: Buffer
    ) -> list[str | bytes | Fragment | Ping | Pong | Close | Failure]:
        """Feed bytes read from the network; returns the complete events they finish.

        Text messages come out as ``str``, binary as ``bytes`` (or as :class:`Fragment`
        pieces after :meth:`set_delivery`). Automatic replies (pong,
        close echo, failure close) are queued for :meth:`data_to_send`, and only ever
        follow a non-message event in the returned list.
        """

    def receive_eof(self) -> None:
        """The peer closed the transport. Further data is an error."""

    def send_text(self, data: str) -> bytes:
        """One text message as one complete frame, ready to write."""

    def send_binary(self, data: Buffer) -> bytes:
        """One binary message as one complete frame, ready to write."""

    def send_fragment(self, data: str | Buffer, *, first: bool, fin: bool) -> bytes:
        """One fragment of a message sent in pieces (RFC 6455 §5.4), as a frame to write:
        ``str`` for text, a bytes-like object for binary. ``first`` starts a message,
        ``fin`` ends it; between them only control frames may be sent. Raises
        ``RuntimeError`` for a message started while one is open (also from
        :meth:`send_text` and :meth:`send_binary`) or a continuation with none open,
        ``TypeError`` for a fragment of the other kind. Compressed, each fragment ends with a
        sync flush (RSV1 on the first frame only)."""

    @property
    def max_message_size(self) -> int | None:
        """The limit on a whole message this connection was made with."""

    @property
    def sending_fragments(self) -> bool:
        """Whether a fragmented message is open (its last fragment not yet sent)."""

    def set_delivery(self, pieces: bool, *, max_message_size: int | None = None) -> None:
        """``pieces=True`` delivers messages as :class:`Fragment` pieces as they arrive (at
        most 1 MiB each, inflated incrementally, text cut only between characters), each
        message at most ``max_message_size`` bytes in total (``None``: no limit), at once (a
        message under way goes on in pieces); ``pieces=False``, whole messages (the
        default) from the next message that starts."""

    def send_ping(self, data: Buffer | None = None) -> bytes: ...
    def send_pong(self, data: Buffer | None = None) -> bytes: ...
    def send_close(self, code: int | None = None, reason: str = "") -> bytes:
        """Start the closing handshake. Raises ``ValueError`` for a code an endpoint may
        not send or a reason over 123 UTF-8 bytes, ``RuntimeError`` if a close was sent."""

    def data_to_send(self) -> bytes:
        """Every reply owed to the peer, in order (pongs, the close echo, the failure close),
        or ``b''``: write it after each ``receive_data``. Taking the close echo ends
        sending; to answer earlier messages before it, use :meth:`next_reply`."""

    def next_reply(self) -> bytes:
        """The reply to the oldest Ping, Close or Failure event not yet answered (a pong, the
        close echo, the failure close, or ``b''``). Call it once per such event, in order: a
        close frame counts as sent only once it has left, so answers to earlier messages
        still go out before it."""

    def close_expected(self) -> bool:
        """Whether this side should now close the transport: a server once the closing
        handshake is done, either side after a failure."""

    # The lifecycle (the engine crate's session): a driver calls start_session() once
    # the connection is open, then feeds it its inputs and follows poll_action().

    def start_session(
        self,
        *,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        close_timeout: float | None = ...,
        consumer_wait: float | None = None,
        pause_reading_while_writes_wait: bool | None = None,
        half_close: bool = True,
        compact_interval: float | None = None,
    ) -> None:
        """Start (or reconfigure) the lifecycle. From then on the replies to pings and close
        frames are the session's: they come out of :meth:`poll_action`, not
        :meth:`data_to_send`. Seconds; ``None`` turns a timer off. ``pong_timeout``
        defaults to ``ping_interval``; ``consumer_wait`` (how long a close reply waits for
        the consumer without a close timeout) to 10 s; ``pause_reading_while_writes_wait`` to
        True for a server."""

    def poll_action(self) -> bytes | int | None:
        """The next thing the driver must do: ``bytes`` to write, one of the action
        constants, or None. One at a time: what doing it changes (a write that fills the
        buffer, reported with :meth:`set_writes_waiting`) counts for the next. The
        constants: (``STOP_SENDING``, ``PAUSE_READING``, ``RESUME_READING``,
        ``AWAIT_CONSUMER``, ``SAMPLE_UNSENT``, ``END_STREAM``, ``HALF_CLOSE``,
        ``CLOSE_TRANSPORT``, ``ABORT``, ``DONE``)."""

    @property
    def has_actions(self) -> bool:
        """Whether :meth:`poll_action` has something."""

    @property
    def timeout(self) -> float | None:
        """Seconds until :meth:`handle_timeout` must be called (None: no deadline)."""

    def handle_timeout(self, unsent: int = 0) -> None:
        """Apply the deadlines that passed. ``unsent``: bytes written that the peer has not
        taken yet (the driver's buffer and the kernel's), for the close deadline."""

    def sample_unsent(self, unsent: int) -> None:
        """The answer to ``SAMPLE_UNSENT``: bytes written not yet taken by the peer."""

    def close(self, code: int | None = None, reason: str = "") -> None:
        """The user closes: the close frame comes out of :meth:`poll_action`. Raises like
        :meth:`send_close` for a bad code or reason; closing again does nothing."""

    def consumer_caught_up(self) -> None:
        """The consumer answered the messages that came before the peer's close (the answer
        to ``AWAIT_CONSUMER``)."""

    def set_consumer_full(self, full: bool) -> None:
        """Whether the consumer's buffer is full (reading pauses while it is)."""

    def set_writes_waiting(self, waiting: bool) -> None:
        """Whether the write buffer is over its limit."""

    def connection_lost(self) -> None:
        """The transport is gone: ``DONE`` follows; the close code is final."""

    @property
    def sending(self) -> bool:
        """Whether messages may still be sent (this side's close frame is not out)."""

    @property
    def phase(self) -> str | None:
        """The lifecycle's phase (``"open"``, ``"close-sent"``, ``"awaiting-consumer"``,
        ``"awaiting-eof"``, ``"lingering"``, ``"closing-transport"``, ``"closed"``), or None
        before :meth:`start_session`."""

    @property
    def latency(self) -> float | None:
        """The round-trip time of the last keepalive ping answered, in seconds."""

@final
class SocketIO:
    """Reads and writes one open connection's non-blocking socket (Unix only).

    The socket stays owned by the caller. ``wake`` is called with no arguments when the
    queue of unsent bytes stops being empty, when it grows past ``high``, and when a write
    fails (then :meth:`take_error` returns the error).
    """

    def __new__(
        cls, fd: int, conn: Connection, wake: Callable[[], object], *, high: int = 65536
    ) -> SocketIO: ...
    @property
    def pending(self) -> int:
        """Bytes waiting to be sent (gathered or queued)."""
    @property
    def high_water(self) -> int:
        """The most bytes that have waited in the queue at once (what the kernel did not
        take; the answers gathered during one read's handling are not counted)."""
    high: int
    defer: Callable[[], object] | None
    """Called when a send outside a read's handling starts gathering; it must arrange for
    :meth:`uncork` to be called soon. None (the default): such sends go out at once."""
    def take_error(self) -> OSError | None:
        """The error of the first write that failed, taken."""
    def receive(self) -> list[str | bytes | Fragment | Ping | Pong | Close | Failure] | None:
        """Reads what the socket has into the connection: its events, or None at EOF."""
    def uncork(self) -> None:
        """Sends, in one ``sendmsg``, what was sent while the messages that :meth:`receive`
        returned were handled (gathered up to 64 KiB); call it once they are handled."""
    def send_text(self, data: str) -> None:
        """Encodes and sends a text message."""
    def send_binary(self, data: Buffer) -> None:
        """Encodes and sends a binary message."""
    def send(self, data: Buffer, *, gather: bool = True) -> None:
        """Sends bytes that are already frames; with ``gather=False`` they do not start a
        gathering (they join one under way, to keep the order)."""
    def send_shared(self, frame: bytes) -> None:
        """Sends a frame from :func:`encode_shared_frame` as ``send(frame, gather=False)``
        does, and counts it in the connection as one message sent."""
    def flush(self) -> int:
        """Sends as much of the queue as the kernel takes: the bytes still waiting."""
    def discard(self) -> None:
        """Drops what is queued and whatever is sent from now on."""
    # TLS in the engine (rustls): a SocketIO made by tls_client or tls_server runs the TLS
    # handshake, then reads plaintext for the opening handshake, then is attached to the
    # engine's connection; the queue holds ciphertext.
    @staticmethod
    def tls_client(
        fd: int,
        config: TlsClientConfig,
        server_name: str,
        wake: Callable[[], object],
        *,
        high: int = 65536,
    ) -> SocketIO:
        """A TLS client over a connected non-blocking socket; the server's certificate is
        checked against ``server_name`` (a host name or an IP address)."""
    @staticmethod
    def tls_server(
        fd: int, config: TlsServerConfig, wake: Callable[[], object], *, high: int = 65536
    ) -> SocketIO:
        """A TLS server over an accepted non-blocking socket."""
    def handshake(self) -> int:
        """Moves the TLS handshake on with what the socket has: 0 while it goes on, 1 once
        done, 2 if the server asked for a client certificate (connect again with Python's
        ``ssl``). Raises ``ssl.SSLError`` (``ssl.SSLCertVerificationError``) or ``OSError``."""
    def receive_plain(self) -> bytes | None:
        """After the TLS handshake, before :meth:`attach`: the plaintext read (``b""`` if
        none), or None at the peer's end."""
    def attach(self, conn: Connection) -> None:
        """Hands the reads to the engine's connection once the opening handshake is over."""
    @property
    def peer_closed(self) -> bool:
        """Whether the peer ended the TLS session (``close_notify``)."""
    @property
    def tls(self) -> bool:
        """Whether this is a TLS connection."""
    @property
    def tls_version(self) -> tuple[str, str] | None:
        """The TLS version and cipher suite agreed, as ``ssl`` names them."""
    @property
    def alpn_protocol(self) -> bytes | None:
        """The ALPN protocol agreed, if any."""
    def close_notify(self) -> None:
        """Sends the TLS ``close_notify`` alert, behind what is queued."""

@final
class TlsClientConfig:
    """How a TLS client in the engine verifies servers: the CA certificates it trusts (DER),
    the versions and cipher suites (OpenSSL names) it may use, the ALPN protocols it offers.
    Verification is always on and the host name always checked."""

    def __new__(
        cls,
        roots: Sequence[bytes],
        *,
        ciphers: Sequence[str] | None = None,
        tls12: bool = True,
        tls13: bool = True,
        alpn: Sequence[bytes] = ...,
    ) -> Self: ...

@final
class TlsServerConfig:
    """A TLS server's certificate chain and private key, from PEM files (``keyfile=None``:
    the key is in ``certfile``)."""

    def __new__(
        cls, certfile: str, keyfile: str | None = None, *, alpn: Sequence[bytes] = ...
    ) -> Self: ...

@final
class ClientHandshake:
    """The client's opening handshake (RFC 6455 §4.1)."""

    def __new__(
        cls,
        host: str,
        resource: str,
        *,
        protocols: Sequence[str] = ...,
        headers: Sequence[tuple[str, str]] = ...,
        deflate: DeflateOptions | None = None,
        max_header_size: int = 16384,
        max_headers: int = 128,
        seed: int | None = None,
    ) -> Self:
        """``host`` is the ``Host`` header value, ``resource`` the path and query."""

    def request(self) -> bytes:
        """The HTTP upgrade request to write."""

    def receive_data(self, data: Buffer) -> bool:
        """Feed response bytes; ``True`` once the response is complete and valid.

        Raises :class:`HandshakeError` for an invalid or refused response.
        """

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def protocol(self) -> str | None: ...
    @property
    def extensions(self) -> str | None:
        """The accepted permessage-deflate parameters, for :class:`Connection`'s ``deflate``."""

    def leftover(self) -> bytes:
        """Bytes received after the response: the first frames, for the connection."""

@final
class Request:
    """An HTTP request received by a server (RFC 6455 §4.2.1)."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    def header(self, name: str) -> str | None:
        """The first value of a header, case-insensitively."""

    def leftover(self) -> bytes: ...

@final
class ServerHandshake:
    """The server's opening handshake (RFC 6455 §4.2)."""

    def __new__(cls, *, max_header_size: int = 16384, max_headers: int = 128) -> Self: ...
    def receive_data(self, data: Buffer) -> Request | None:
        """Feed request bytes; the request once complete. Raises :class:`HandshakeError`
        (with the status to answer, 400 or 431) for a malformed or oversized request."""

    def check(
        self, request: Request, *, allowed_origins: Sequence[str] | None = None
    ) -> tuple[int, str, list[tuple[str, str]]] | None:
        """``None`` if the request is an acceptable upgrade, else the rejection to send:
        ``(status, message, headers)`` — 404, 400, 403 or 426, in shelf_web_socket's order."""

    def accept(
        self,
        request: Request,
        *,
        protocols: Sequence[str] = ...,
        deflate: DeflateOptions | None = None,
        headers: Sequence[tuple[str, str]] = ...,
    ) -> bytes:
        """The 101 response. Picks the first protocol in the client's order that
        ``protocols`` has, and negotiates permessage-deflate; see ``protocol``/``extensions``."""

    @property
    def protocol(self) -> str | None: ...
    @property
    def extensions(self) -> str | None: ...

def encode_shared_frame(data: str | Buffer) -> bytes:
    """One uncompressed, unmasked frame (text for ``str``, else binary) that every server
    connection with :attr:`Connection.accepts_shared_frames` can send: a broadcast encodes
    its message once."""

def reject_response(
    status: int, headers: Sequence[tuple[str, str]] = ..., body: bytes = ...
) -> bytes:
    """A complete HTTP/1.1 response that refuses an upgrade and closes the connection."""
