"""Redirects of the opening handshake, for the clients of both flavours: which answers are
followed, where to, and what goes along. No I/O.

A server may answer the upgrade request with 301, 302, 303, 307 or 308 and a ``Location``
(RFC 9110 §15.4); the client then opens a new connection to that URL (resolved against the
current one, RFC 3986 §5; ``http``/``https`` are read as ``ws``/``wss``), up to
``max_redirects`` times. :class:`Redirects` keeps the chain and enforces the rules:

- a ``wss://`` connection is never redirected to ``ws://`` (a downgrade from TLS);
- a URL seen before in the chain ends it (a loop), as does one redirect too many; both
  errors name the chain;
- credentials go only to the origin (scheme, host, port) of the URL the caller gave: the
  ``Authorization`` from its ``user:password@``, and the caller's own ``Authorization``
  and ``Cookie`` headers, are not sent to another origin.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from .exceptions import WebSocketChannelException

__all__ = ["REDIRECT_STATUSES", "SENSITIVE_HEADERS", "Redirects", "origin", "redact"]

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses a client follows (RFC 9110 §15.4.2-4, 15.4.8-9)."""

SENSITIVE_HEADERS: Final = frozenset({"authorization", "cookie"})
"""The caller's headers sent only to the first URL's origin."""

_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}


def origin(url: str) -> tuple[str, str, int]:
    """A WebSocket URL's origin (RFC 6454): scheme, host in lower case, port."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def redact(url: str) -> str:
    """``url`` without its ``user:password@``, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Redirects:
    """The redirects of one connection attempt, from ``url``: at most ``max_redirects``."""

    __slots__ = ("chain", "max_redirects", "origin")

    def __init__(self, url: str, max_redirects: int) -> None:
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int):
            kind = type(max_redirects).__name__
            raise TypeError(f"max_redirects must be an int (0 follows none), not {kind}.")
        if max_redirects < 0:
            raise ValueError(
                f"max_redirects must be 0 or more (0 follows none), not {max_redirects}."
            )
        self.chain = [url]
        self.max_redirects = max_redirects
        self.origin = origin(url)

    @property
    def current(self) -> str:
        """The URL of the connection being opened."""
        return self.chain[-1]

    def follow(self, status: int, location: str | None) -> str | None:
        """The URL to connect to next after the answer ``status`` (with its ``Location``
        header), or ``None`` if ``status`` is not a redirect or redirects are off
        (``max_redirects=0``: the answer is the error). Raises
        :class:`WebSocketChannelException` for a redirect that cannot be followed."""
        if status not in REDIRECT_STATUSES or self.max_redirects == 0:
            return None
        current = self.current
        if location is None or not location.strip():
            raise WebSocketChannelException(
                f"{redact(current)} answered {status} without a Location to redirect to."
            )
        url = self._resolve(current, location.strip(), status)
        chain = " -> ".join(redact(hop) for hop in [*self.chain, url])
        if url in self.chain:
            raise WebSocketChannelException(f"Redirect loop: {chain}.")
        if len(self.chain) > self.max_redirects:
            raise WebSocketChannelException(
                f"More than {self.max_redirects} redirects (max_redirects): {chain}."
            )
        if origin(current)[0] == "wss" and origin(url)[0] == "ws":
            raise WebSocketChannelException(
                f"Refused the redirect from {redact(current)} to {redact(url)}: it gives up "
                "TLS (wss:// to ws://)."
            )
        self.chain.append(url)
        return url

    @staticmethod
    def _resolve(current: str, location: str, status: int) -> str:
        url = urllib.parse.urljoin(current, location)
        parts = urllib.parse.urlsplit(url)
        scheme = _SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise WebSocketChannelException(
                f"{redact(current)} answered {status}, a redirect to {location!r}, which is "
                "not a ws://, wss://, http:// or https:// URL."
            )
        return urllib.parse.urlunsplit(parts._replace(scheme=scheme, fragment=""))

    def describe(self) -> str:
        """The first URL, and where it redirected to if it did: for error messages."""
        first = redact(self.chain[0])
        if len(self.chain) == 1:
            return first
        return f"{first} (redirected to {redact(self.current)})"

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` has the origin of the first URL (where credentials go)."""
        return origin(url) == self.origin

    def headers_for(self, url: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The caller's ``headers`` to send to ``url``: all of them to the first URL's
        origin, less ``Authorization`` and ``Cookie`` elsewhere."""
        if self.same_origin(url):
            return headers
        return [(name, value) for name, value in headers if name.lower() not in SENSITIVE_HEADERS]
