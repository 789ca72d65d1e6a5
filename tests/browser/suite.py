"""The checks that run inside Pyodide, in Chromium and in Node: ``wschannel.html`` for real.

This module is written into Pyodide's filesystem next to the pure-Python ``wschannel``
package (without its compiled module) and imported there; the pytest side
(``test_chromium.py``, ``test_node.py``) calls :func:`run` once per check through the page or
the Node runner, and asserts that the check passed. On CPython it is only imported for
:data:`CHECKS`' names.

The peers are the harness's servers on 127.0.0.1 (``harness.py``): wschannel's echo server
(Dart's fixture: every message back, the text ``close`` closes with 3001 'you asked me to';
``/record?id=...`` reports what the echo connection with that id received and how it was
closed), and a TCP listener that closes every connection it accepts (H8).

H1-H8 are Dart's ``test/html_test.dart``; the other checks are the channel behaviours of
``dart-web-socket-channel.md`` §2, §3.5 and §4.1 that apply in a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import logging
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import wschannel
from wschannel import WebSocketChannel, WebSocketChannelException, status
from wschannel.exceptions import StateError
from wschannel.html import BinaryType, HtmlWebSocketChannel

T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """Where the peers are, and how long one step may take."""

    echo: str
    """``ws://127.0.0.1:PORT``: wschannel's echo server (paths ``/echo``, ``/greet``,
    ``/record``)."""
    closer: str
    """``ws://127.0.0.1:PORT`` of a listener that closes every connection at once."""
    silent: str
    """``ws://127.0.0.1:PORT`` of a peer that upgrades ``/upgrade`` and then ignores
    everything, and never answers other paths."""
    timeout: float


Check = Callable[[Config], Awaitable[None]]
CHECKS: dict[str, Check] = {}
"""Every check, by name, in the order they are defined."""

_timeout = 10.0


def check(function: Check) -> Check:
    CHECKS[function.__name__] = function
    return function


async def run(name: str, config_json: str) -> str:
    """Run one check; a JSON ``{"ok": true}`` or ``{"ok": false, "error": traceback}``."""
    global _timeout
    config = Config(**json.loads(config_json))
    _timeout = config.timeout
    try:
        await asyncio.wait_for(CHECKS[name](config), 3 * config.timeout)
    except BaseException:
        return json.dumps({"ok": False, "error": traceback.format_exc()})
    return json.dumps({"ok": True})


# Helpers.


def equal(actual: object, expected: object) -> None:
    """``assert actual == expected``, saying both (there is no pytest in Pyodide)."""
    if actual != expected:
        raise AssertionError(f"{actual!r} != {expected!r}")


async def within(awaitable: Awaitable[T]) -> T:
    """Await within the step timeout."""
    return await asyncio.wait_for(awaitable, _timeout)


async def next_message(subscription: AsyncIterator[Any]) -> Any:
    return await within(anext(subscription))


async def drain(channel: WebSocketChannel) -> list[Any]:
    """Every message until the stream ends (within the step timeout)."""

    async def collect() -> list[Any]:
        return [message async for message in channel.stream]

    return await within(collect())


def echo_url(config: Config, path: str = "/echo") -> tuple[str, str]:
    """A URL of the echo server with a fresh id, and that id (for :func:`record`)."""
    ident = uuid.uuid4().hex
    return f"{config.echo}{path}?id={ident}", ident


async def record(config: Config, ident: str) -> dict[str, Any]:
    """What the echo connection ``ident`` received and how it closed, from the server."""
    channel = HtmlWebSocketChannel.connect(f"{config.echo}/record?id={ident}")
    [report] = await drain(channel)
    result: dict[str, Any] = json.loads(report)
    return result


def js() -> Any:
    import js as js_module  # type: ignore[import-not-found]

    return js_module


def is_blob(value: Any) -> bool:
    return str(js().Object.prototype.toString.call(value)) == "[object Blob]"


async def blob_bytes(blob: Any) -> bytes:
    buffer = await within(blob.arrayBuffer())
    data: bytes = buffer.to_bytes()
    return data


async def opened(web_socket: Any) -> None:
    """Wait for a browser WebSocket's ``open`` event."""
    from pyodide.ffi import create_once_callable  # type: ignore[import-not-found]

    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_open(event: Any) -> None:
        if not future.done():
            future.set_result(None)

    web_socket.addEventListener("open", create_once_callable(on_open))
    if int(web_socket.readyState) == 0:
        await within(future)


async def echo_roundtrip(channel: WebSocketChannel, messages: list[Any]) -> None:
    """Send ``messages``, check that each comes back equal and of the same type, close."""
    subscription = aiter(channel.stream)
    for message in messages:
        channel.sink.add(message)
    for message in messages:
        expected = message if isinstance(message, str | bytes) else bytes(message)
        received = await next_message(subscription)
        assert type(received) is type(expected), (type(received), type(expected))
        equal(received, expected)
    await within(channel.sink.close(status.NORMAL_CLOSURE))


# Dart's test/html_test.dart.


@check
async def h1_communicates_using_an_existing_web_socket(config: Config) -> None:
    web_socket = js().WebSocket.new(f"{config.echo}/echo")
    equal(str(web_socket.binaryType), "blob")  # the platform's default
    channel = HtmlWebSocketChannel(web_socket)
    assert channel.inner_web_socket is web_socket
    await within(channel.ready)
    subscription = aiter(channel.stream)
    channel.sink.add("foo")
    equal(await next_message(subscription), "foo")
    channel.sink.add(bytes([1, 2, 3, 4, 5]))
    blob = await next_message(subscription)
    assert is_blob(blob), blob  # the wrapper does not force a binary type
    equal(await blob_bytes(blob), bytes([1, 2, 3, 4, 5]))
    web_socket.binaryType = "arraybuffer"
    channel.sink.add(bytes([1, 2, 3, 4, 5]))
    equal(await next_message(subscription), bytes([1, 2, 3, 4, 5]))
    await within(channel.sink.close())


@check
async def h2_communicates_using_an_existing_open_web_socket(config: Config) -> None:
    web_socket = js().WebSocket.new(f"{config.echo}/echo")
    await opened(web_socket)
    equal(int(web_socket.readyState), 1)
    channel = HtmlWebSocketChannel(web_socket)
    assert channel.ready.done()  # already open: ready at once
    await within(channel.ready)
    subscription = aiter(channel.stream)
    channel.sink.add("foo")
    equal(await next_message(subscription), "foo")
    await within(channel.sink.close())


@check
async def h3_communicates_using_a_connecting_web_socket(config: Config) -> None:
    web_socket = js().WebSocket.new(f"{config.echo}/echo")
    equal(int(web_socket.readyState), 0)
    channel = HtmlWebSocketChannel(web_socket)
    assert not channel.ready.done()
    await within(channel.ready)
    await within(channel.sink.close())


@check
async def h4_wrapping_a_closing_web_socket_fails_ready(config: Config) -> None:
    web_socket = js().WebSocket.new(f"{config.echo}/echo")
    web_socket.close()
    equal(int(web_socket.readyState), 2)
    channel = HtmlWebSocketChannel(web_socket)
    try:
        await within(channel.ready)
    except WebSocketChannelException as exc:
        equal(exc.message, "WebSocket state error: 2")
        assert exc.inner is None
    else:
        raise AssertionError("ready succeeded on a closing WebSocket")
    await within(channel.sink.done)  # done never hangs
    assert channel.close_code is None


@check
async def h5_connect_defaults_to_binary_lists(config: Config) -> None:
    channel = HtmlWebSocketChannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    equal(str(channel.inner_web_socket.binaryType), "arraybuffer")
    await echo_roundtrip(channel, ["foo", bytes([1, 2, 3, 4, 5])])


@check
async def h6_connect_defaults_to_binary_lists_platform_independent(config: Config) -> None:
    for connect in (WebSocketChannel.connect, wschannel.connect):
        channel = connect(f"{config.echo}/echo")
        assert isinstance(channel, HtmlWebSocketChannel)
        await within(channel.ready)
        await echo_roundtrip(channel, ["foo", bytes([1, 2, 3, 4, 5])])


@check
async def h7_connect_can_use_blobs(config: Config) -> None:
    channel = HtmlWebSocketChannel.connect(f"{config.echo}/echo", binary_type=BinaryType.BLOB)
    await within(channel.ready)
    subscription = aiter(channel.stream)
    channel.sink.add(bytes([1, 2, 3, 4, 5]))
    blob = await next_message(subscription)
    assert is_blob(blob), blob
    equal(await blob_bytes(blob), bytes([1, 2, 3, 4, 5]))
    await within(channel.sink.close())


@check
async def h8_connect_wraps_a_connection_error(config: Config) -> None:
    channel = HtmlWebSocketChannel.connect(config.closer)
    try:
        await within(channel.ready)
    except WebSocketChannelException as exc:
        equal(exc.message, "WebSocket connection failed.")
    else:
        raise AssertionError("ready succeeded against a listener that closes at once")
    try:
        await drain(channel)
    except WebSocketChannelException as exc:
        equal(exc.message, "WebSocket connection failed.")
    else:
        raise AssertionError("the stream ended without the connection error")
    await within(channel.sink.done)
    equal((channel.close_code, channel.close_reason, channel.protocol), (None, None, None))


# The package under Pyodide.


@check
async def package_imports_without_its_compiled_module(config: Config) -> None:
    equal(sys.platform, "emscripten")
    assert "pyodide" in sys.modules
    import wschannel.channel
    import wschannel.exceptions
    import wschannel.html
    import wschannel.status

    equal(wschannel.status.GOING_AWAY, 1001)
    equal(wschannel.CloseCode(1000).name, "NORMAL_CLOSURE")
    assert issubclass(wschannel.StateError, RuntimeError)
    import wschannel.adapter
    import wschannel.testing

    assert "wschannel._wschannel" not in sys.modules
    for module in ("wschannel.io", "wschannel.server", "wschannel.bytestream", "wschannel.sync"):
        try:
            importlib.import_module(module)  # these need the engine
        except ModuleNotFoundError as exc:
            equal(exc.name, "wschannel._wschannel")
        else:
            raise AssertionError(f"{module} imported: the compiled module is in Pyodide")


# The channel behaviours that apply in a browser.


@check
async def echoes_text_non_ascii_binary_and_empty_messages_in_order(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    await echo_roundtrip(
        channel,
        [
            "Hello, wschannel!",
            "🎨⛳🌈 Grüße — 日本語",
            bytes(range(256)),
            "",
            b"",
            bytearray(b"a bytearray"),
            memoryview(b"a memoryview"),
            "x" * 120_000,
            bytes(range(250)) * 4000,  # 1 000 000 bytes
            *(f"message {i}" if i % 2 else f"message {i}".encode() for i in range(20)),
        ],
    )


@check
async def listen_delivers_messages_and_the_end(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    received: list[Any] = []
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    channel.stream.listen(received.append, on_done=lambda: ended.set_result(None))
    channel.sink.add("one")  # before ready: sent once open
    channel.sink.add(b"two")
    channel.sink.add("close")
    await within(ended)
    equal(received, ["one", b"two"])
    equal((channel.close_code, channel.close_reason), (3001, "you asked me to"))


@check
async def messages_come_as_whole_pieces_and_send_fragments_says_why_not(config: Config) -> None:
    """Streaming (issue 13) in the browser: fragments() and delivery="pieces" give each
    message as one last piece (wschannel.Fragment is the html module's here, without the
    engine); send_fragments raises NotImplementedError at the call, naming the limit."""
    channel = wschannel.connect(f"{config.echo}/echo", delivery="pieces")
    assert isinstance(channel, HtmlWebSocketChannel)
    await within(channel.ready)
    subscription = aiter(channel.stream)
    channel.sink.add("whole")
    channel.sink.add(b"bytes")
    first = await next_message(subscription)
    assert type(first) is wschannel.Fragment, type(first)
    equal((first.data, first.last), ("whole", True))
    equal(await next_message(subscription), wschannel.Fragment(b"bytes"))
    try:
        channel.send_fragments([b"a", b"b"])
    except NotImplementedError as exc:
        assert "cannot send a message in fragments" in str(exc), str(exc)
    else:
        raise AssertionError("send_fragments did not raise")
    await within(channel.sink.close())
    other = wschannel.connect(f"{config.echo}/echo")
    assert isinstance(other, HtmlWebSocketChannel)
    await within(other.ready)
    pieces = other.fragments()
    other.sink.add("one")
    piece = await within(anext(pieces))
    equal((piece.data, piece.last), ("one", True))
    await within(other.sink.close())


@check
async def protocol_is_none_until_open_and_without_negotiation(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    equal((channel.protocol, channel.close_code, channel.close_reason), (None, None, None))
    await within(channel.ready)
    assert channel.protocol is None  # the browser's '' is None
    equal((channel.close_code, channel.close_reason), (None, None))
    assert isinstance(channel, HtmlWebSocketChannel)
    equal(channel.buffered_amount, 0)
    await within(channel.sink.close())
    chat = wschannel.connect(f"{config.echo}/echo", protocols=["nonsense", "chat"])
    await within(chat.ready)
    equal(chat.protocol, "chat")
    await within(chat.sink.close())


@check
async def server_close_sets_code_and_reason_and_sink_drops(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    channel.sink.add("close")
    equal(await drain(channel), [])
    equal((channel.close_code, channel.close_reason), (3001, "you asked me to"))
    await within(channel.sink.done)
    channel.sink.add("dropped")  # guarantee 3: after the peer closed, add() drops silently
    await within(channel.sink.close())  # and close() just returns done
    seen = await record(config, ident)
    equal(seen["messages"], ["close"])
    # The platform echoed the code (Chromium echoes the reason too, Node's undici does not).
    equal(seen["close_code"], 3001)
    assert seen["close_reason"] in ("you asked me to", ""), seen["close_reason"]


@check
async def client_close_code_and_reason_reach_the_server(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    await within(channel.ready)
    channel.sink.add("hi")
    subscription = aiter(channel.stream)
    equal(await next_message(subscription), "hi")
    await within(channel.sink.close(4321, "raisin ✓"))
    equal((channel.close_code, channel.close_reason), (4321, "raisin ✓"))  # the echo
    seen = await record(config, ident)
    equal(seen["messages"], ["hi"])
    equal((seen["close_code"], seen["close_reason"]), (4321, "raisin ✓"))


@check
async def close_without_code_reaches_the_server_as_1005(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    await within(channel.ready)
    await within(channel.sink.close())
    equal((channel.close_code, channel.close_reason), (1005, ""))
    seen = await record(config, ident)
    equal((seen["close_code"], seen["close_reason"]), (1005, ""))


@check
async def codes_a_browser_cannot_send_go_out_as_1000(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    await within(channel.ready)
    await within(channel.sink.close(status.GOING_AWAY, "bye"))
    seen = await record(config, ident)
    equal((seen["close_code"], seen["close_reason"]), (1000, "bye"))
    equal((channel.close_code, channel.close_reason), (1000, "bye"))


@check
async def close_while_connecting_is_sent_once_open(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    channel.sink.add("early")
    done = channel.sink.close(3678, "raisin")
    await within(channel.ready)
    await within(done)
    seen = await record(config, ident)
    equal(seen["messages"], ["early"])
    equal((seen["close_code"], seen["close_reason"]), (3678, "raisin"))


@check
async def close_while_a_failing_connect_resolves_done(config: Config) -> None:
    channel = wschannel.connect(config.closer)
    await within(channel.sink.close(3000, "never sent"))
    try:
        await within(channel.ready)
    except WebSocketChannelException:
        pass
    else:
        raise AssertionError("ready succeeded against a listener that closes at once")


@check
async def done_resolves_after_close_timeout_when_the_peer_never_answers(config: Config) -> None:
    channel = HtmlWebSocketChannel.connect(f"{config.silent}/upgrade", close_timeout=0.3)
    await within(channel.ready)
    channel.sink.add("ignored")
    await within(channel.sink.close(3000, "no answer will come"))
    equal((channel.close_code, channel.close_reason), (1006, ""))


@check
async def close_while_connecting_gives_up_after_close_timeout(config: Config) -> None:
    channel = HtmlWebSocketChannel.connect(f"{config.silent}/unanswered", close_timeout=0.3)
    await within(channel.sink.close())
    try:
        await within(channel.ready)
    except WebSocketChannelException as exc:
        equal(exc.message, "The connection attempt was cancelled.")
    else:
        raise AssertionError("ready succeeded against a peer that never answers")
    equal(channel.close_code, None)


@check
async def add_after_close_raises_state_error(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    done = channel.sink.close()
    misuses: list[Callable[[], object]] = [
        lambda: channel.sink.add("late"),
        lambda: channel.sink.add_error(ValueError("late")),
    ]
    for misuse in misuses:
        try:
            misuse()
        except StateError as exc:
            equal(str(exc), "Cannot add event after closing.")
        else:
            raise AssertionError("add after close did not raise")
    assert channel.sink.close() is done  # closing again returns done
    await within(done)


@check
async def invalid_close_codes_and_reasons_raise_and_keep_the_connection(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    for code, reason in ((5000, None), (999, None), (1005, None), (1006, None), (1004, None)):
        try:
            channel.sink.close(code, reason)
        except ValueError:
            pass
        else:
            raise AssertionError(f"close({code}) did not raise")
    try:
        channel.sink.close(3000, "é" * 62)  # 124 UTF-8 bytes
    except ValueError:
        pass
    else:
        raise AssertionError("a 124-byte reason did not raise")
    subscription = aiter(channel.stream)
    channel.sink.add("still open")
    equal(await next_message(subscription), "still open")
    await within(channel.sink.close())


@check
async def unsupported_message_types_raise_type_error(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    for value in (None, 42, object(), ["list"]):
        try:
            channel.sink.add(value)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raise AssertionError(f"add({value!r}) did not raise TypeError")
    await within(channel.sink.close())


@check
async def second_subscription_raises_state_error(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    aiter(channel.stream)
    subscriptions: list[Callable[[], object]] = [
        lambda: aiter(channel.stream),
        lambda: channel.stream.listen(print),
    ]
    for subscribe in subscriptions:
        try:
            subscribe()
        except StateError as exc:
            equal(str(exc), "Stream has already been listened to.")
        else:
            raise AssertionError("a second subscription did not raise")
    await within(channel.sink.close())


@check
async def closing_the_sink_ends_the_stream_at_once(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    subscription = aiter(channel.stream)
    channel.sink.add("first")
    channel.sink.add("second")
    equal(await next_message(subscription), "first")
    done = channel.sink.close()
    try:
        message = await next_message(subscription)
    except StopAsyncIteration:
        pass
    else:
        raise AssertionError(f"the stream went on after close(): {message!r}")
    await within(done)


@check
async def cancelling_the_subscription_keeps_the_connection(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")
    await within(channel.ready)
    subscription = channel.stream.listen(lambda message: None)
    subscription.cancel()
    channel.sink.add("close")  # the server still closes, and the channel still sees it
    await within(channel.sink.done)
    equal((channel.close_code, channel.close_reason), (3001, "you asked me to"))


@check
async def add_error_closes_without_a_code_and_fails_done(config: Config) -> None:
    url, ident = echo_url(config)
    channel = wschannel.connect(url)
    await within(channel.ready)
    error = RuntimeError("the sender failed")
    channel.sink.add_error(error)
    try:
        await within(channel.sink.done)
    except RuntimeError as exc:
        assert exc is error
    else:
        raise AssertionError("done did not fail with the added error")
    seen = await record(config, ident)
    equal(seen["close_code"], 1005)


@check
async def add_stream_sends_everything_then_resolves(config: Config) -> None:
    channel = wschannel.connect(f"{config.echo}/echo")

    async def source() -> AsyncIterator[str | bytes]:
        for i in range(10):
            yield f"streamed {i}" if i % 2 else bytes([i]) * 100_000
            await asyncio.sleep(0)

    await within(channel.sink.add_stream(source()))
    subscription = aiter(channel.stream)
    for i in range(10):
        expected = f"streamed {i}" if i % 2 else bytes([i]) * 100_000
        equal(await next_message(subscription), expected)
    await within(channel.sink.flush())
    await within(channel.sink.close())


@check
async def channel_is_awaitable_and_an_async_context_manager(config: Config) -> None:
    channel = await within(wschannel.connect(f"{config.echo}/echo"))
    assert channel.ready.done()
    await within(channel.sink.close())
    async with wschannel.connect(f"{config.echo}/echo") as context:
        context.sink.add("inside")
        equal(await next_message(aiter(context.stream)), "inside")
    await within(context.sink.done)
    equal(context.close_code, 1000)  # leaving the block closes with 1000 (issue 13)


@check
async def invalid_url_raises_value_error(config: Config) -> None:
    for url in ("ws://[::1", "ftp://127.0.0.1/"):
        try:
            wschannel.connect(url)
        except ValueError:
            pass
        else:
            raise AssertionError(f"connect({url!r}) did not raise ValueError")


@check
async def connect_names_the_options_the_browser_cannot_honour(config: Config) -> None:
    try:
        wschannel.connect(f"{config.echo}/echo", protocols=["chat"], connect_timeout=1.0)
    except TypeError as exc:
        message = str(exc)
        assert "cannot honour connect_timeout=1.0 (" in message, message
        assert "protocols=" not in message, message
    else:
        raise AssertionError("connect() took an option the browser cannot honour")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@check
async def async_for_reconnects_and_retries_what_the_browser_could_not_open(
    config: Config,
) -> None:
    channels = []
    async for channel in wschannel.connect(f"{config.echo}/echo", reconnect_delays=lambda: [0]):
        channels.append(channel)  # and come back at once: the loop closes it, reconnects
        if len(channels) == 2:
            break
    equal(channels[0].close_code, 1000)
    channels[1].sink.add("the second")
    equal(await next_message(aiter(channels[1].stream)), "the second")
    await within(channels[1].sink.close())
    # The browser says only that an attempt failed: retried, until the delays run out.
    records = Records()
    logger = logging.getLogger("wschannel.client")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        async for _ in wschannel.connect(config.closer, reconnect_delays=lambda: [0, 0]):
            raise AssertionError("a connection to the closer opened")
    except WebSocketChannelException as exc:
        equal(exc.message, "WebSocket connection failed.")
    else:
        raise AssertionError("the loop ended without the last attempt's error")
    finally:
        logger.removeHandler(records)
    failed = [message for message in records.messages if "failed (attempt" in message]
    equal(len(failed), 3)


# The README's example, as written but for two lines: WebSocketChannel.connect
# (the platform's channel) instead of IOWebSocketChannel.connect (wschannel.io needs the
# engine), and an await instead of asyncio.run (Pyodide's event loop is already running).
# The server greets first.


@check
async def readme_example_runs_with_the_platform_channel(config: Config) -> None:
    url, ident = echo_url(config, "/greet")

    async def main() -> None:
        channel = WebSocketChannel.connect(url)
        async for message in channel.stream:  # noqa: B007 (as in the README)
            channel.sink.add("received!")
            await channel.sink.close(status.GOING_AWAY)

    await within(main())
    seen = await record(config, ident)
    equal(seen["messages"], ["received!"])
    equal(seen["close_code"], status.NORMAL_CLOSURE)  # a browser sends 1001 as 1000


@check
async def readme_callback_example_runs_with_the_platform_channel(config: Config) -> None:
    url, ident = echo_url(config, "/greet")
    channel = WebSocketChannel.connect(url)

    def on_message(message: Any) -> None:
        channel.sink.add("received!")
        channel.sink.close(status.GOING_AWAY)

    channel.stream.listen(on_message)  # also on_error=, on_done=
    await within(channel.sink.done)
    seen = await record(config, ident)
    equal(seen["messages"], ["received!"])


# The example of docs/browser.md, as written there.


async def docs_main(url: str) -> None:
    async with wschannel.connect(url) as channel:  # waits for ready, closes on exit
        channel.sink.add("Hello")
        channel.sink.add(b"\x01\x02\x03")
        async for message in channel.stream:  # str for text, bytes for binary
            print(repr(message))
            if isinstance(message, bytes):
                channel.sink.close(status.NORMAL_CLOSURE, "done")
    print(channel.close_code, channel.close_reason)  # the server's answer to our close


@check
async def docs_browser_example_prints_what_the_docs_say(config: Config) -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        await within(docs_main(f"{config.echo}/echo"))
    equal(output.getvalue().splitlines(), ["'Hello'", "b'\\x01\\x02\\x03'", "1000 done"])
