"""The compiled engine through its Python binding: in-memory bytes, no sockets."""

from __future__ import annotations

import pytest

from wschannel import _wschannel as engine


def pair(**options: object) -> tuple[engine.Connection, engine.Connection]:
    client = engine.Connection(True, seed=1, **options)  # type: ignore[arg-type]
    server = engine.Connection(False, **options)  # type: ignore[arg-type]
    return client, server


def test_sign_key_matches_rfc_example() -> None:
    assert engine.sign_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert engine.sign_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="


def test_server_receives_text_and_binary_in_one_read() -> None:
    client, server = pair()
    wire = client.send_text("héllo") + client.send_binary(b"\x00\x01") + client.send_text("")
    assert server.receive_data(wire) == ["héllo", b"\x00\x01", ""]


def test_client_sends_any_buffer() -> None:
    client, server = pair()
    wire = b"".join(
        [
            client.send_binary(bytearray(b"ab")),
            client.send_binary(memoryview(b"xcdx")[1:3]),
            client.send_binary(b"ef"),
        ]
    )
    assert server.receive_data(bytearray(wire)) == [b"ab", b"cd", b"ef"]


def test_server_reads_frames_split_at_every_byte() -> None:
    client, server = pair()
    wire = client.send_text("split me") + client.send_binary(bytes(range(200)))
    events: list[object] = []
    for i in range(len(wire)):
        events += server.receive_data(wire[i : i + 1])
    assert events == ["split me", bytes(range(200))]


def test_server_answers_ping_through_data_to_send() -> None:
    client, server = pair()
    events = server.receive_data(client.send_ping(b"hi"))
    assert isinstance(events[0], engine.Ping)
    assert events[0].data == b"hi"
    pong = client.receive_data(server.data_to_send())
    assert isinstance(pong[0], engine.Pong)
    assert pong[0].data == b"hi"


def test_server_echoes_close_and_expects_to_close_the_transport() -> None:
    client, server = pair()
    events = server.receive_data(client.send_close(3001, "you asked me to"))
    assert isinstance(events[0], engine.Close)
    assert (events[0].code, events[0].reason) == (3001, "you asked me to")
    assert not server.close_expected(), "the echo has not left the engine yet"
    echo_frame = server.data_to_send()
    assert server.close_expected()
    assert server.state == engine.CLOSED
    echo = client.receive_data(echo_frame)
    assert isinstance(echo[0], engine.Close)
    assert client.state == engine.CLOSED
    assert not client.close_expected()


def test_server_fails_unmasked_frame_with_1002() -> None:
    _, server = pair()
    events = server.receive_data(b"\x81\x02hi")
    assert isinstance(events[0], engine.Failure)
    assert events[0].code == 1002
    assert server.close_code == 1002
    reason = b"client frame is not masked"
    assert server.data_to_send() == b"\x88" + bytes([2 + len(reason)]) + b"\x03\xea" + reason


def test_server_answer_to_a_message_before_the_close_leaves_before_the_echo() -> None:
    client, server = pair()
    events = server.receive_data(client.send_text("Hello") + client.send_close(1000))
    assert events[0] == "Hello"
    answer = server.send_text("Hello")  # allowed: the echo is still in the engine
    echo = server.data_to_send()
    assert client.receive_data(answer + echo)[0] == "Hello"
    with pytest.raises(RuntimeError):
        server.send_text("late")


def test_server_fails_oversized_message_with_1009() -> None:
    client, server = pair(max_message_size=4)
    events = server.receive_data(client.send_binary(b"12345"))
    assert isinstance(events[-1], engine.Failure)
    assert events[-1].code == 1009


def test_close_refuses_codes_an_endpoint_may_not_send() -> None:
    client, _ = pair()
    for code in (999, 1004, 1005, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError, match=str(code)):
            client.send_close(code)
    with pytest.raises(ValueError, match="123"):
        client.send_close(1000, "x" * 124)
    assert client.state == engine.OPEN
    client.send_close(1000)
    with pytest.raises(RuntimeError, match="close frame was already sent"):
        client.send_text("late")


def test_eof_without_close_frame_reports_1006() -> None:
    client, _ = pair()
    client.receive_eof()
    assert client.close_code == 1006
    assert client.close_expected()


def test_handshake_round_trip_picks_protocol_in_client_order() -> None:
    client = engine.ClientHandshake(
        "example.com", "/chat", protocols=["one", "two", "three"], seed=5
    )
    server = engine.ServerHandshake()
    request = server.receive_data(client.request())
    assert request is not None
    assert (request.method, request.path) == ("GET", "/chat")
    assert server.check(request) is None
    response = server.accept(request, protocols=["three", "two", "x"])
    assert server.protocol == "two"
    assert client.receive_data(response + b"\x81\x00")
    assert client.protocol == "two"
    assert client.status == 101
    assert client.leftover() == b"\x81\x00"


def test_server_check_returns_shelf_rejections() -> None:
    server = engine.ServerHandshake()
    head = (
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 15\r\n\r\n"
    )
    request = server.receive_data(head)
    assert request is not None
    rejection = server.check(request)
    assert rejection is not None
    status, _, headers = rejection
    assert status == 426
    assert ("Sec-WebSocket-Version", "13") in headers


def test_client_handshake_error_carries_the_status() -> None:
    client = engine.ClientHandshake("example.com", "/", seed=5)
    with pytest.raises(engine.HandshakeError) as info:
        client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == 404
    assert "404" in str(info.value)


def test_reject_response_is_a_complete_http_response() -> None:
    response = engine.reject_response(403, [("X-Why", "origin")], b"no")
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"X-Why: origin\r\n" in response
    assert b"Content-Length: 2\r\n" in response
    assert response.endswith(b"\r\n\r\nno")
