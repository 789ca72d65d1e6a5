from __future__ import annotations

import pytest

from wschannel.exceptions import StateError, WebSocketChannelException


def test_exception_without_message() -> None:
    error = WebSocketChannelException()
    assert error.message is None
    assert error.inner is None
    assert str(error) == ""
    assert repr(error) == "WebSocketChannelException()"


def test_exception_with_message() -> None:
    error = WebSocketChannelException("it failed")
    assert error.message == "it failed"
    assert error.inner is None
    assert str(error) == "it failed"
    assert repr(error) == "WebSocketChannelException('it failed')"


def test_exception_from_inner_keeps_the_cause() -> None:
    inner = ConnectionRefusedError(111, "Connection refused")
    error = WebSocketChannelException.from_inner(inner)
    assert error.inner is inner
    assert error.__cause__ is inner
    assert error.message == str(inner)


def test_exception_from_inner_without_text_uses_the_type_name() -> None:
    error = WebSocketChannelException.from_inner(ConnectionResetError())
    assert error.message == "ConnectionResetError"


def test_exception_raised_from_inner_shows_both_in_traceback() -> None:
    inner = OSError("boom")
    with pytest.raises(WebSocketChannelException) as info:
        raise WebSocketChannelException.from_inner(inner)
    assert info.value.__cause__ is inner


def test_state_error_is_a_runtime_error() -> None:
    assert issubclass(StateError, RuntimeError)
    with pytest.raises(RuntimeError, match="after closing"):
        raise StateError("Cannot add event after closing.")
