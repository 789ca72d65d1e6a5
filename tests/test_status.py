from __future__ import annotations

import pytest

from wschannel import status
from wschannel.status import CloseCode

DART_CONSTANTS = {
    "NORMAL_CLOSURE": 1000,
    "GOING_AWAY": 1001,
    "PROTOCOL_ERROR": 1002,
    "UNSUPPORTED_DATA": 1003,
    "NO_STATUS_RECEIVED": 1005,
    "ABNORMAL_CLOSURE": 1006,
    "INVALID_FRAME_PAYLOAD_DATA": 1007,
    "POLICY_VIOLATION": 1008,
    "MESSAGE_TOO_BIG": 1009,
    "MISSING_MANDATORY_EXTENSION": 1010,
    "INTERNAL_SERVER_ERROR": 1011,
    "TLS_HANDSHAKE_FAILED": 1015,
}


@pytest.mark.parametrize(("name", "code"), DART_CONSTANTS.items())
def test_status_has_each_dart_constant(name: str, code: int) -> None:
    assert getattr(status, name) == code
    assert CloseCode[name] == code


def test_status_exports_exactly_the_dart_constants_and_close_code() -> None:
    assert sorted(status.__all__) == sorted([*DART_CONSTANTS, "CloseCode"])


def test_close_code_adds_the_iana_codes_1012_to_1014() -> None:
    assert CloseCode(1012) is CloseCode.SERVICE_RESTART
    assert CloseCode(1013) is CloseCode.TRY_AGAIN_LATER
    assert CloseCode(1014) is CloseCode.BAD_GATEWAY
    assert len(CloseCode) == 15


def test_close_code_compares_equal_to_int() -> None:
    code: int = CloseCode.GOING_AWAY
    assert code == 1001
    assert CloseCode(status.NORMAL_CLOSURE).name == "NORMAL_CLOSURE"
