"""WebSocket close codes (RFC 6455 §7.4.1), as in Dart's ``status.dart``.

Meant to be imported as a module, like Dart's ``import '...status.dart' as status``::

    from wschannel import status
    await channel.sink.close(status.GOING_AWAY)

The twelve module constants are Dart's, renamed to UPPER_SNAKE. :class:`CloseCode` holds the
same codes plus 1012-1014 (registered by IANA after RFC 6455) as an :class:`~enum.IntEnum`, so
``CloseCode(channel.close_code)`` gives a readable name.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "ABNORMAL_CLOSURE",
    "GOING_AWAY",
    "INTERNAL_SERVER_ERROR",
    "INVALID_FRAME_PAYLOAD_DATA",
    "MESSAGE_TOO_BIG",
    "MISSING_MANDATORY_EXTENSION",
    "NORMAL_CLOSURE",
    "NO_STATUS_RECEIVED",
    "POLICY_VIOLATION",
    "PROTOCOL_ERROR",
    "TLS_HANDSHAKE_FAILED",
    "UNSUPPORTED_DATA",
    "CloseCode",
]

NORMAL_CLOSURE: Final = 1000
"""The purpose for which the connection was established has been fulfilled."""

GOING_AWAY: Final = 1001
"""An endpoint is going away: a server going down, a browser leaving the page."""

PROTOCOL_ERROR: Final = 1002
"""An endpoint is closing the connection because of a protocol error."""

UNSUPPORTED_DATA: Final = 1003
"""An endpoint received a type of data it cannot accept."""

NO_STATUS_RECEIVED: Final = 1005
"""No status code was present in the close frame. Never sent in a close frame."""

ABNORMAL_CLOSURE: Final = 1006
"""The connection was closed without a close frame. Never sent in a close frame."""

INVALID_FRAME_PAYLOAD_DATA: Final = 1007
"""A message's data was not consistent with its type, such as non-UTF-8 text."""

POLICY_VIOLATION: Final = 1008
"""A message violated the endpoint's policy."""

MESSAGE_TOO_BIG: Final = 1009
"""A message was too big to process."""

MISSING_MANDATORY_EXTENSION: Final = 1010
"""The client expected the server to negotiate an extension that it did not."""

INTERNAL_SERVER_ERROR: Final = 1011
"""The server met an unexpected condition that kept it from fulfilling the request."""

TLS_HANDSHAKE_FAILED: Final = 1015
"""The TLS handshake failed. Never sent in a close frame."""


class CloseCode(IntEnum):
    """Every registered close code (RFC 6455 §7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RECEIVED = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MISSING_MANDATORY_EXTENSION = 1010
    INTERNAL_SERVER_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE_FAILED = 1015
