"""What a message is, and what may be sent, and how a sink's ``done`` ends: shared by every
flavour, asyncio or blocking.

Plain Python, without asyncio and without the engine: :mod:`wschannel.sync` uses it as much
as the asyncio channels do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Message", "binary_view", "check_close_args", "settle"]

Message: TypeAlias = str | bytes
"""A message from the peer: ``str`` for a text message, ``bytes`` for a binary one."""

_MAX_REASON_BYTES: Final = 123


def binary_view(data: object) -> Buffer:
    """A binary message as one flat buffer of its raw bytes, without a copy where it is
    contiguous; ``TypeError`` for an object that is not bytes-like (design.md decision 6)."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"Cannot send {type(data).__name__}: send str (text) or a bytes-like object (binary)."
        ) from None
    if view.c_contiguous and view.format in ("B", "b", "c") and view.ndim == 1:
        return view
    if view.c_contiguous:
        return view.cast("B")  # e.g. array("i"): its raw bytes
    return view.tobytes()


def check_close_args(code: int | None, reason: str | None) -> None:
    """Raise ``ValueError`` unless an endpoint may send this close code and reason.

    RFC 6455 §7.4: 1000-1003 and 1007-1014 (registered codes an endpoint may send), and
    3000-4999 (libraries and applications). The reason is at most 123 UTF-8 bytes
    (RFC 6455 §5.5: a control frame's payload is at most 125 bytes) and needs a code.
    """
    if code is None:
        if reason:
            raise ValueError("A close reason needs a close code.")
        return
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"A close code must be an int, not {type(code).__name__}.")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(
            f"Invalid close code {code}: use 1000-1003, 1007-1014 or 3000-4999 (RFC 6455 §7.4)."
        )
    if reason is not None and len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
        raise ValueError(f"A close reason must be at most {_MAX_REASON_BYTES} UTF-8 bytes.")


def settle(done: Any, error: BaseException | None) -> None:
    """The connection is over: ``done`` (a sink's, an asyncio or a ``concurrent.futures``
    future) resolves, or fails with the error the sink was given (``add_error``); nothing if
    it is settled already."""
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(None)
