"""``serve_workers``: one WebSocket server on every core — several worker processes that
share one port (``SO_REUSEPORT``: the kernel spreads the connections over them), started by
one call.

Each worker is a fresh Python process (``multiprocessing``'s *spawn*), so ``app`` must be
importable by name: a function at the top level of a module, not a lambda or a closure (and
the program that calls ``serve_workers`` keeps its work under ``if __name__ ==
"__main__":``); ``functools.partial(app, settings)`` sends it settings that pickle. ``app``
is called once in each worker and returns an async context manager that gives the worker's
handler: that is where a worker connects to its broker (:class:`wschannel.pubsub.Topics`),
as processes share nothing else::

    @contextlib.asynccontextmanager
    async def app():
        async with Topics(RedisBroker()) as topics:
            async def handler(channel):
                ...
            yield handler

    if __name__ == "__main__":
        serve_workers(app, "127.0.0.1", 8000, workers=2)

SIGINT or SIGTERM to the parent stops every worker, each closing its connections with 1001
(going away). A worker that dies is logged and not replaced: the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from multiprocessing.process import BaseProcess
from ssl import SSLContext
from types import TracebackType
from typing import Any, Self

from .server import Handler, serve

__all__ = ["Workers", "serve_workers"]

logger = logging.getLogger("wschannel.workers")

App = Callable[[], AbstractAsyncContextManager[Handler]]
"""Called in each worker: an async context manager that gives the worker's handler."""

_START_TIMEOUT = 30.0


def _worker(
    app: App, host: str, port: int, options: dict[str, Any], ready: Any, index: int
) -> None:
    """A worker process: serve on the shared port until SIGTERM or SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def stopping() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.add_signal_handler(signal.SIGTERM, stopping)
        serving = dict(options)
        if serving.get("ssl") is not None:  # the function that makes this worker's context
            serving["ssl"] = serving["ssl"]()
        async with (
            app() as handler,
            serve(handler, host, port, reuse_port=True, **serving) as server,
        ):
            ready.send(("ready", index, os.getpid(), server.port))
            ready.close()
            await stop

    try:
        asyncio.run(main())
    except BaseException as exc:
        with contextlib.suppress(OSError, ValueError):
            ready.send(("failed", index, os.getpid(), repr(exc)))
        raise


def _check_sendable(name: str, function: Callable[..., object]) -> None:
    try:
        pickle.dumps(function)
    except Exception as exc:
        raise ValueError(
            f"{name} cannot be sent to the worker processes ({exc}): make it a function at the "
            "top level of a module, and give functools.partial only arguments that pickle "
            "(str, numbers, dataclasses of them)."
        ) from None


class Workers:
    """Worker processes serving ``app`` on one port (see the module's docstring); a context
    manager: it starts them on entry (once every one listens) and stops them on exit.

    - ``workers``: how many (default: the number of CPUs).
    - ``port``: 0 for a free one (then :attr:`port` names it).
    - ``ssl``: for ``wss://``, a function that makes the ``ssl.SSLContext``, called once in
      each worker (a context is not sent to a process): a function at the top level of a
      module, or a ``functools.partial`` of one, e.g. ``partial(server_context,
      "cert.pem")``.
    - ``serve_options``: passed to each worker's :func:`wschannel.serve` (``ping_interval``,
      ``max_message_size``, …; not ``reuse_port`` or ``sock``).
    """

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int | None = None,
        ssl: Callable[[], SSLContext] | None = None,
        **serve_options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError("app must be a function returning an async context manager.")
        target: Any = app
        while isinstance(target, functools.partial):  # partial(app, settings): settings sent
            target = target.func
        if getattr(target, "__name__", "<lambda>") in ("<lambda>",) or "<locals>" in getattr(
            target, "__qualname__", ""
        ):
            raise ValueError(
                "app must be a function at the top level of a module (each worker process "
                "imports it by name), or a functools.partial of one; not a lambda or a nested "
                "function."
            )
        _check_sendable("app", app)
        if ssl is not None:
            if isinstance(ssl, SSLContext) or not callable(ssl):
                raise TypeError(
                    "ssl is a function that makes the SSLContext in each worker (a context is "
                    "not sent to a process): a top-level function, or a functools.partial of one."
                )
            _check_sendable("ssl", ssl)
        count = workers if workers is not None else (os.cpu_count() or 1)
        if type(count) is not int or count < 1:
            raise ValueError(f"workers must be a positive int, not {workers!r}.")
        for name in ("reuse_port", "sock"):
            if name in serve_options:
                raise ValueError(f"serve_workers() sets no {name}: see its docstring.")
        if ssl is not None:
            serve_options["ssl"] = ssl
        self.app = app
        self.host = host
        self.port = port
        self.workers = count
        self.options = serve_options
        self.processes: list[BaseProcess] = []
        self._reserved: socket.socket | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the workers; return once each listens. ``RuntimeError`` if one fails."""
        if self.processes:
            raise RuntimeError("These workers are started already.")
        # Hold the port (bound, not listening) so that port 0 names one port for all.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((self.host, self.port))
        self.port = reserved.getsockname()[1]
        self._reserved = reserved
        context = multiprocessing.get_context("spawn")
        receivers = []
        for index in range(self.workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker,
                args=(self.app, self.host, self.port, self.options, sender, index),
                name=f"wschannel worker {index}",
                daemon=True,
            )
            process.start()
            sender.close()
            self.processes.append(process)
            receivers.append(receiver)
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            for receiver in receivers:
                if not receiver.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"A worker did not start within {_START_TIMEOUT:.0f} s.")
                try:
                    state, index, pid, detail = receiver.recv()
                except EOFError:
                    raise RuntimeError("A worker exited before it listened.") from None
                if state != "ready":
                    raise RuntimeError(f"Worker {index} (pid {pid}) failed to start: {detail}")
        except BaseException:
            self.stop()
            raise
        finally:
            for receiver in receivers:
                receiver.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker (each closes its connections with 1001), wait up to
        ``timeout`` seconds, then kill those left."""
        self._stopping = True
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("Worker %s did not stop within %.0f s: killed", process.pid, timeout)
                process.kill()
                process.join()
        self.processes = []
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    def wait(self) -> None:
        """Block until every worker has exited, logging each that dies."""
        sentinels: dict[Any, BaseProcess] = {p.sentinel: p for p in self.processes}
        while sentinels:
            for sentinel in multiprocessing.connection.wait(list(sentinels)):
                process = sentinels.pop(sentinel)
                process.join()
                if not self._stopping:
                    logger.error(
                        "Worker %s exited with %s; %d carry on",
                        process.pid,
                        process.exitcode,
                        len(sentinels),
                    )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_workers(
    app: App,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    workers: int | None = None,
    ready: Callable[[int], object] | None = None,
    **serve_options: Any,
) -> None:
    """Serve ``app`` on ``host``:``port`` from ``workers`` processes (default: one per CPU),
    until SIGINT or SIGTERM; then stop them all. ``ready(port)`` is called once every worker
    listens (with port 0: the one chosen). See :class:`Workers`."""
    with Workers(app, host, port, workers=workers, **serve_options) as running:
        logger.info("Serving on %s:%d with %d workers", running.host, running.port, running.workers)
        if ready is not None:
            ready(running.port)
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                running.stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            running.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
