from __future__ import annotations

import subprocess
import sys

import pytest

import wschannel
from wschannel import server


def test_package_exports_the_api() -> None:
    assert set(wschannel.__all__) >= {
        "connect",
        "serve",
        "sign_key",
        "WebSocketChannel",
        "WebSocketSink",
        "WebSocketChannelException",
        "StateError",
        "status",
        "CloseCode",
    }
    for name in wschannel.__all__:
        assert getattr(wschannel, name) is not None


def test_package_serve_is_the_server_module_serve() -> None:
    assert wschannel.serve is server.serve


@pytest.mark.parametrize(
    ("key", "accept"),
    [
        ("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
    ],
)
def test_sign_key_matches_rfc_6455_vectors(key: str, accept: str) -> None:
    assert wschannel.sign_key(key) == accept
    assert wschannel.WebSocketChannel.sign_key(key) == accept


def test_package_has_no_other_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = wschannel.no_such_name


def test_package_imports_without_the_compiled_engine() -> None:
    # Under Pyodide the engine is absent; simulate that in a fresh interpreter.
    code = """
import sys
sys.modules["wschannel._wschannel"] = None
import wschannel
from wschannel import status, CloseCode, StateError, WebSocketChannelException
from wschannel.channel import MessageStream, WebSocketChannel, WebSocketSink
assert status.GOING_AWAY == 1001 and CloseCode.GOING_AWAY == 1001
try:
    wschannel.sign_key("x")
except ImportError:
    print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_connect_without_running_loop_names_wschannel_sync() -> None:
    with pytest.raises(RuntimeError, match=r"wschannel\.sync"):
        wschannel.connect("ws://127.0.0.1:9")
