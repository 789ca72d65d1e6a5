"""Connect to a WebSocket server: each line of standard input goes out as a text message, and
each message that comes in is printed on standard output (text as it is, binary as its
length and its first bytes in hex). Notes about the connection go to standard error.

At the end of the input (ctrl-D on a terminal, or the end of a pipe) the command waits for
the server's answers: once none has come for --wait seconds, it closes the connection with
1000 and waits for the server's close. With --keep-open it goes on printing until the
server closes. ctrl-C closes with 1001 at once; a second ctrl-C quits.

exit status: 0 the connection closed with 1000; 1 it could not be opened; 2 a usage error;
3 it closed with another code (printed on standard error); 130 interrupted by ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ..defaults import DEFAULT_MAX_REDIRECTS
from ..exceptions import StateError, WebSocketChannelException, WebSocketConnectionClosed
from ..io import IOWebSocketChannel
from ..status import GOING_AWAY, NORMAL_CLOSURE

EXIT_CLOSED_NORMALLY = 0
EXIT_NOT_CONNECTED = 1
EXIT_CLOSED_OTHERWISE = 3
EXIT_INTERRUPTED = 130
#: Bytes of a binary message printed in hex (its length is always printed).
HEX_SHOWN = 32
#: Seconds without a message, after the input ended, before closing (``--wait``): a closed
#: channel drops what is still on its way (``stream_channel``'s guarantee 2), so the server
#: is given time to answer the last lines first.
DEFAULT_WAIT = 1.0
#: Lines read ahead of the connection: a large piped file is sent as the server takes it.
INPUT_AHEAD = 64
#: The longest line of piped input (the input ends at a longer one: memory stays bounded).
MAX_LINE = 16 << 20
READ_SIZE = 65536

#: The names of the close codes printed with them (RFC 6455 §7.4.1).
CODE_NAMES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "abnormal closure: no close frame",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failed",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the server's ws:// or wss:// URL")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header to add to the upgrade request (repeat for more)",
    )
    parser.add_argument(
        "-s",
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol to offer (repeat for more, the preferred first)",
    )
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer permessage-deflate (default: on)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="wss://: do not verify the server's certificate",
    )
    tls.add_argument(
        "--cafile",
        type=Path,
        metavar="PEM",
        help="wss://: trust the CA certificates in this file instead of the system's",
    )
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument(
        "--proxy",
        metavar="URL",
        help="go through this proxy: http://, https://, socks5:// or socks5h://, with "
        "user:password@ for its credentials (default: the environment's, e.g. https_proxy, "
        "all_proxy, except for hosts in no_proxy)",
    )
    proxy.add_argument(
        "--no-proxy",
        action="store_true",
        help="connect directly, whatever the environment says",
    )
    parser.add_argument(
        "--max-redirects",
        type=int,
        default=DEFAULT_MAX_REDIRECTS,
        metavar="N",
        help=f"redirects to follow during the opening handshake (default: "
        f"{DEFAULT_MAX_REDIRECTS}; 0: none)",
    )
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help="connect to this Unix socket (the URL still gives the Host header and the path)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="for TCP, TLS and the opening handshake together (default: 10)",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help="at the end of the input, close once no message has come for this long "
        f"(default: {DEFAULT_WAIT:g})",
    )
    parser.add_argument(
        "--keep-open",
        action="store_true",
        help="at the end of the input, keep printing messages until the server closes",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def headers_from(values: list[str], parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """``NAME: VALUE`` options as header pairs; a malformed one is a usage error."""
    headers = []
    for value in values:
        name, colon, content = value.partition(":")
        if not colon or not name.strip():
            parser.error(f"--header takes 'NAME: VALUE', not {value!r}")
        headers.append((name.strip(), content.strip()))
    return headers


def ssl_option(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ssl.SSLContext | bool | None:
    if args.insecure:
        return False
    if args.cafile is not None:
        try:
            return ssl.create_default_context(cafile=str(args.cafile))
        except (OSError, ssl.SSLError) as error:
            parser.error(f"--cafile {args.cafile}: {error}")
    return None


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    headers = headers_from(args.header, parser)
    tls = ssl_option(args, parser)
    console = Console(sys.stdout, sys.stderr, interactive=sys.stdin.isatty())
    with terminal_kept(console.interactive):
        try:
            return asyncio.run(Session(args, headers, tls, console).run())
        except KeyboardInterrupt:  # the second ctrl-C
            return EXIT_INTERRUPTED


@contextlib.contextmanager
def terminal_kept(interactive: bool) -> Iterator[None]:
    """Put the terminal's settings back at the end: the program may end while ``input()``
    (readline, which changes them) still waits for a line."""
    if not interactive:
        yield
        return
    import termios

    saved = termios.tcgetattr(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


class Console:
    """Where messages and notes are printed. On a terminal the typed line keeps its place:
    a message that comes in while a line is being typed is printed above it."""

    PROMPT = "> "

    def __init__(self, out: TextIO, err: TextIO, *, interactive: bool) -> None:
        self.out = out
        self.err = err
        self.interactive = interactive and out.isatty()
        self.prompting = False  # input() is showing the prompt (set by the reading thread)
        if isinstance(out, io.TextIOWrapper):
            out.reconfigure(errors="backslashreplace")  # any text prints, whatever the locale

    def message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            text = message
        else:
            shown = bytes(message[:HEX_SHOWN]).hex()
            more = "\N{HORIZONTAL ELLIPSIS}" if len(message) > HEX_SHOWN else ""
            text = f"[binary, {len(message)} bytes] {shown}{more}"
        self._print(self.out, ("< " if self.interactive else "") + text)

    def note(self, text: str) -> None:
        self._print(self.err, text)

    def output_closed(self) -> None:
        """Standard output's reader went away: what is still printed goes nowhere (and the
        interpreter does not complain at exit, flushing it)."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.out.fileno())
        os.close(devnull)

    def stop_prompting(self) -> None:
        """The input is over: erase the line being typed, if any, and stop showing it."""
        if self.prompting:
            self.prompting = False
            self.out.write("\r\x1b[K")
            self.out.flush()

    def _print(self, stream: TextIO, text: str) -> None:
        if self.prompting:
            import readline  # only on a terminal (input() uses it for line editing)

            # Erase the line being typed, print, then show that line again below.
            stream.write(f"\r\x1b[K{text}\n{self.PROMPT}{readline.get_line_buffer()}")
        else:
            stream.write(text + "\n")
        stream.flush()


class Session:
    """One connection: the input read by a thread, sent in order; messages printed."""

    def __init__(
        self,
        args: argparse.Namespace,
        headers: list[tuple[str, str]],
        tls: ssl.SSLContext | bool | None,
        console: Console,
    ) -> None:
        self.args = args
        self.headers = headers
        self.tls = tls
        self.console = console
        self.interrupted = False
        self.received = asyncio.Event()  # set by each message

    async def run(self) -> int:
        args = self.args
        try:
            channel = IOWebSocketChannel.connect(
                args.url,
                protocols=args.subprotocol,
                headers=self.headers,
                ssl=self.tls,
                compression=args.compression,
                connect_timeout=args.connect_timeout,
                unix_socket=args.unix,
                proxy=None if args.no_proxy else (args.proxy or True),
                max_redirects=args.max_redirects,
            )
        except ValueError as error:  # the URL, the proxy's or a header
            self.console.note(f"wschannel connect: {error}")
            return EXIT_NOT_CONNECTED
        try:
            await channel.ready
        except (WebSocketChannelException, TimeoutError, OSError) as error:
            cause = str(error) if args.url in str(error) else f"{args.url}: {error}"
            self.console.note(f"wschannel connect: could not connect: {cause}")
            return EXIT_NOT_CONNECTED
        loop = asyncio.get_running_loop()
        self._on_ctrl_c(loop, channel)  # before saying so: a script may signal at once
        self.console.note(self._opened(channel))
        receiving = loop.create_task(self._receive(channel))
        sending = loop.create_task(self._send(channel))
        await asyncio.wait((receiving, sending), return_when=asyncio.FIRST_COMPLETED)
        await receiving  # the stream ends when the connection closes
        sending.cancel()
        await channel.sink.done  # the closing handshake: close_code is known then
        return self._closed(channel)

    def _opened(self, channel: IOWebSocketChannel) -> str:
        details = [f"subprotocol {channel.protocol}"] if channel.protocol else []
        if self.console.interactive:
            details.append("ctrl-D to close")
        return f"connected to {self.args.url}" + (f" ({', '.join(details)})" if details else "")

    def _on_ctrl_c(self, loop: asyncio.AbstractEventLoop, channel: IOWebSocketChannel) -> None:
        def interrupt() -> None:
            self.interrupted = True
            loop.remove_signal_handler(signal.SIGINT)  # the next ctrl-C: KeyboardInterrupt
            self.console.note("closing (ctrl-C again to quit at once)")
            channel.sink.close(GOING_AWAY)

        loop.add_signal_handler(signal.SIGINT, interrupt)

    async def _receive(self, channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            self.received.set()
            try:
                self.console.message(message)
            except BrokenPipeError:  # the reader of our output is gone (`| head -1`): done
                self.console.output_closed()
                channel.sink.close(NORMAL_CLOSURE)
                return

    async def _send(self, channel: IOWebSocketChannel) -> None:
        lines = InputLines(asyncio.get_running_loop(), self.console)
        try:
            while (line := await lines.get()) is not None and not self.interrupted:
                channel.sink.add(line)
                await channel.sink.flush()  # the server's pace, not the input's
        except (WebSocketConnectionClosed, StateError):
            return  # closed meanwhile (by the server, or ctrl-C): nothing more can be sent
        if self.args.keep_open or self.interrupted:
            return
        await self._quiet(self.args.wait)
        channel.sink.close(NORMAL_CLOSURE)

    async def _quiet(self, seconds: float) -> None:
        """Return once no message has come for ``seconds``."""
        while True:
            self.received.clear()
            try:
                await asyncio.wait_for(self.received.wait(), seconds)
            except TimeoutError:
                return

    def _closed(self, channel: IOWebSocketChannel) -> int:
        self.console.stop_prompting()
        code = channel.close_code
        name = CODE_NAMES.get(code, "") if code is not None else ""
        reason = f": {channel.close_reason}" if channel.close_reason else ""
        self.console.note(f"closed: {code}{f' ({name})' if name else ''}{reason}")
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_CLOSED_NORMALLY if code == NORMAL_CLOSURE else EXIT_CLOSED_OTHERWISE


class InputLines:
    """Standard input, line by line, read by a daemon thread (a read blocked on a terminal
    must not keep the program alive once the connection is over). The thread reads at most
    ``INPUT_AHEAD`` lines ahead of :meth:`get`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, console: Console) -> None:
        self.loop = loop
        self.console = console
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.room = threading.Semaphore(INPUT_AHEAD)
        threading.Thread(target=self._read, name="wschannel-input", daemon=True).start()

    async def get(self) -> str | None:
        """The next line (without its line break), or ``None`` at the end of the input."""
        line = await self.lines.get()
        self.room.release()
        return line

    def _hand_over(self, line: str | None) -> bool:
        self.room.acquire()
        try:
            self.loop.call_soon_threadsafe(self.lines.put_nowait, line)
        except RuntimeError:  # the loop is closed: the connection is over
            return False
        return True

    def _read(self) -> None:
        for line in self._typed() if self.console.interactive else self._piped():
            if not self._hand_over(line):
                return
        self._hand_over(None)

    def _typed(self) -> Iterator[str]:
        import readline  # noqa: F401 (line editing and history for input())

        self.console.prompting = True
        try:
            while True:
                yield input(Console.PROMPT)
        except EOFError:
            self.console.prompting = False
            self.console.out.write("\n")  # after the prompt, where ctrl-D left the cursor

    def _piped(self) -> Iterator[str]:
        """Lines from file descriptor 0, read with ``os.read``: a daemon thread blocked in
        ``sys.stdin``'s buffered reader holds its lock, which aborts the interpreter at exit."""
        buffer = bytearray()
        number = 0
        while chunk := _read(0):
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                number += 1
                yield from self._decoded(number, bytes(buffer[start:end]))
                start = end + 1
            del buffer[:start]
            if len(buffer) > MAX_LINE:
                self.console.note(
                    f"wschannel connect: line {number + 1} is longer than {MAX_LINE >> 20} MiB: "
                    "the input ends there"
                )
                return
        if buffer:
            yield from self._decoded(number + 1, bytes(buffer))

    def _decoded(self, number: int, line: bytes) -> Iterator[str]:
        try:
            yield line.removesuffix(b"\r").decode()
        except UnicodeDecodeError:
            self.console.note(f"wschannel connect: line {number} is not UTF-8 text: skipped")


def _read(fd: int) -> bytes:
    """A chunk of ``fd``; ``b""`` at its end, or when there is none (closed: ``<&-``)."""
    try:
        return os.read(fd, READ_SIZE)
    except OSError:
        return b""
