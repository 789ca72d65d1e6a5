"""The connections' timers, kept in one daemon thread of this process.

Every connection has a session timer (keepalive pings and their deadlines, close and open
deadlines, compaction): it fires rarely, and is re-armed only when a deadline moves.

- The blocking flavour runs the callbacks in the timer thread (they never block: they queue
  frames or shut a socket down), so a connection whose writes are stuck still times out.
- The asyncio flavour (:func:`call_later_in_loop`) has the timer thread hand the callback to
  its event loop (``call_soon_threadsafe``). Not ``loop.call_later``: while asyncio's own
  heap holds any timer, each turn of its loop (one per message, when messages come one at a
  time) computes a timeout from it, and that cost about 5,000 interpreter instructions per
  turn, a fifth of an echo server's whole cost per message (callgrind, request/response on
  one core: 28,000 instructions per message with keepalive on, 22,800 without). The thread
  costs a wake-up when a timer fires, nothing per message.

No asyncio here: ``wschannel.sync`` imports this module.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

logger = logging.getLogger("wschannel")

TIMER_THREAD: Final = "wschannel-timers"
"""The timer thread's name."""

_COMPACT_EVERY: Final = 1024
"""Pushes between two sweeps of the cancelled entries out of the heap (a connection that
re-arms often leaves one behind each time; they would otherwise wait for their deadline)."""


class TimerHandle:
    """A callback scheduled with :meth:`Timers.call_later`; ``cancel()`` it to drop it."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # what it would have called is not kept alive by the heap


def _nothing() -> None:
    pass


class Timers:
    """One daemon thread that runs the callbacks of every connection's timers when due,
    started with the first timer (and again in a child process after ``fork``)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # the thread and its lock do not survive a fork
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._pushes = 0
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Call ``callback()`` in the timer thread after ``delay`` seconds."""
        handle = TimerHandle(callback)
        with self._lock:
            heap = self._heap
            self._pushes += 1
            if self._pushes % _COMPACT_EVERY == 0:
                heap[:] = [entry for entry in heap if not entry[2].cancelled]
                heapq.heapify(heap)
            entry = (time.monotonic() + delay, next(self._counter), handle)
            heapq.heappush(heap, entry)
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = self._thread = threading.Thread(
                    target=self._run, name=TIMER_THREAD, daemon=True
                )
                thread.start()
            if heap[0] is entry:
                self._wakeup.notify()
        return handle

    def _run(self) -> None:
        lock, heap = self._lock, self._heap
        while True:
            with lock:
                while True:
                    now = time.monotonic()
                    if heap and heap[0][0] <= now:
                        handle = heapq.heappop(heap)[2]
                        break
                    self._wakeup.wait(heap[0][0] - now if heap else None)
            if not handle.cancelled:
                try:
                    handle.callback()
                except Exception:
                    logger.exception("Unexpected error in a WebSocket timer")


timers = Timers()
"""The timers of every connection in this process."""


def call_later_in_loop(loop: Any, delay: float, callback: Callable[[], object]) -> TimerHandle:
    """Call ``callback()`` in ``loop`` (an asyncio event loop) after ``delay`` seconds, unless
    the handle is cancelled first (in the loop's thread, as every caller does)."""

    def due() -> None:
        if handle.cancelled:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to time out
            loop.call_soon_threadsafe(run)

    def run() -> None:
        if not handle.cancelled:
            callback()

    handle = timers.call_later(delay, due)
    return handle
