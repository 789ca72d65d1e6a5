"""The trio and anyio clients (wschannel.trio, wschannel.anyio) as the flavours of the client
suites that run each case with every client (test_proxy.py, test_redirects.py): connect, send
a message and return its echo, or return the error the connection failed with. Each call is a
``trio.run`` (``anyio.run`` on its asyncio backend for ``anyio``), bounded by TIMEOUT.
"""

from __future__ import annotations

from typing import Any

from conftest import TIMEOUT

STRUCTURED = ("trio", "anyio")
"""The flavours this module runs."""


def _run(flavour: str, function: Any) -> Any:
    if flavour == "trio":
        import trio

        return trio.run(function)
    import anyio

    return anyio.run(function, backend="asyncio")


def _library(flavour: str) -> Any:
    if flavour == "trio":
        import wschannel.trio

        return wschannel.trio
    import wschannel.anyio

    return wschannel.anyio


def _fail_after(flavour: str, seconds: float) -> Any:
    if flavour == "trio":
        import trio

        return trio.fail_after(seconds)
    import anyio

    return anyio.fail_after(seconds)


def echo_through(flavour: str, url: str, message: str = "hello", **options: Any) -> object:
    """Connect to the echo server at ``url`` with ``options``, send ``message``; the echo."""
    library = _library(flavour)

    async def run() -> object:
        with _fail_after(flavour, 2 * TIMEOUT):
            async with library.connect(url, **options) as channel:
                channel.sink.add(message)
                return await anext(aiter(channel.stream))

    return _run(flavour, run)


def connect_error(flavour: str, url: str, **options: Any) -> BaseException:
    """The error connecting to ``url`` with ``options`` raised."""
    library = _library(flavour)
    options.setdefault("connect_timeout", TIMEOUT)

    async def run() -> BaseException:
        with _fail_after(flavour, 2 * TIMEOUT):
            try:
                channel = await library.connect(url, **options)
            except Exception as exc:
                return exc
            await channel.sink.close()
        raise AssertionError(f"connected to {url}")

    result: BaseException = _run(flavour, run)
    return result


def connect_call(flavour: str) -> Any:
    """``connect`` of the flavour, called inside its event loop (misuse raises at the
    call)."""
    library = _library(flavour)

    def connect(url: str, **options: Any) -> None:
        async def run() -> None:
            library.connect(url, **options)

        _run(flavour, run)

    return connect
