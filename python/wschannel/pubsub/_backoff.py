"""The delays between reconnection attempts, shared by the brokers."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt *n* (from 0) waits a random time between half
    and all of ``min(cap, first * 2**n)`` seconds, so that nodes cut off together do not
    reconnect in step."""

    first: float = 0.05
    cap: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(
                f"Backoff needs 0 < first <= cap, not first={self.first!r}, cap={self.cap!r}."
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.first * 2 ** min(attempt, 30))
        return random.uniform(ceiling / 2, ceiling)
