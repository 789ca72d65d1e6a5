"""One behaviour suite for every flavour (issue 11): the same scenarios, the same expected bytes
and codes, whatever drives the channel.

Each test takes a ``lab`` (``tests/flavours.py``): one flavour (asyncio, uvloop, byte stream on
asyncio / anyio / trio, ``wschannel.trio``, blocking, adapter, ``testing.fake_pair``, and the
browser's:
``wschannel.html`` under Pyodide in Node) with our side in one role (client or server;
``memory`` for the fake pair), talking over a real TCP connection on 127.0.0.1 to a raw peer
scripted here. The peer is the judge: it sends hand-built frames and
checks the frames, masking and close codes it receives, so every flavour is held to the same
wire behaviour. The fake pair has no wire: there the peer is the other in-memory socket, and
the same channel-level results are checked (messages, ``close_code``/``close_reason``, the
sink rules); wire-only checks (a close frame's echo, keepalive, protocol violations, limits,
timeouts, a lost connection) do not apply to it and are skipped. The browser flavour runs the
same scenarios through an agent in Pyodide (a browser WebSocket has no keepalive or size
limit to set: those are skipped); it needs Node 20.10+ and Pyodide in
``tests/browser/node/node_modules`` (``tests/browser/setup.sh``) or ``WSCHANNEL_PYODIDE_DIR``,
and is skipped without them.

Where a flavour disagrees with the others today, its case is marked
``xfail(strict=True, reason="issue 11: ...")`` in :data:`KNOWN` with what it does instead, so it
turns into a failure once it is fixed; no expectation is special-cased per flavour.

No test sleeps to synchronise: every wait is for a frame, a message, an end or ``done``, each
bounded (``conftest.TIMEOUT``, scaled by ``WSCHANNEL_TEST_TIMEOUT_SCALE``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

import pytest
from conftest import SCALE, TIMEOUT, wait_until_sync
from flavours import (
    BINARY,
    CLOSE,
    FLAVOURS,
    PING,
    TEXT,
    Frame,
    Lab,
    Message,
    NodeAgent,
    Outcome,
    Peer,
    Timeout,
    binary,
    browser_missing,
    close_frame,
    make_lab,
    pong,
    text,
)

from wschannel import StateError

pytestmark = pytest.mark.filterwarnings(
    # The trio pipe case (xfail below): asyncio.gather fails before awaiting its coroutines.
    "ignore:coroutine '_pipe_into' was never awaited:RuntimeWarning"
)

CLOSE_TIMEOUT: Final = 0.5 * SCALE
"""``close_timeout`` where a scenario waits for it."""
PING_INTERVAL: Final = 0.25 * SCALE
"""``ping_interval`` when no pong comes."""
ANSWERED_PING_INTERVAL: Final = 0.5 * SCALE
"""``ping_interval`` when the peer answers: room for a loaded machine's round trip."""
SLICE: Final = 0.05 * SCALE
"""How long one look lasts when waiting for either of two things."""
GIVE_UP_BOUND: Final = 5 * CLOSE_TIMEOUT + 2 * SCALE
"""How long a side may take to give up a close the peer never answers: generous, not tight."""


# The cases: every flavour and role, with what is known to differ or not to apply.

KNOWN: Final[dict[tuple[str, str, str | None], tuple[str, type[BaseException]]]] = {
    # The browser's WebSocket speaks the protocol itself (Node's here): these differences are
    # the platform's, out of wschannel's reach.
    ("deferred_replies", "browser", None): (
        "issue 11: the browser's WebSocket (platform) echoes the peer's close itself as it "
        "reads it, before Python has the messages; the consumer's answers are dropped",
        AssertionError,
    ),
    ("protocol_failure", "browser", None): (
        "issue 11: the browser's WebSocket (platform) fails the connection by dropping TCP "
        "with no close frame, and reports 1006 (WHATWG), not 1002 or 1007",
        AssertionError,
    ),
    ("close_deadline", "browser", None): (
        "issue 11: HtmlWebSocketChannel gives up after close_timeout (done, 1006) but the "
        "browser's socket, closing, keeps its TCP connection open: the peer sees no end "
        "(a browser WebSocket has no abort)",
        AssertionError,
    ),
}
"""``(scenario, flavour, role or None for every role)``: the xfail reason (what the flavour
does instead) and the exception the difference shows up as."""

NOT_APPLICABLE: Final[dict[tuple[str, str], str]] = {}
"""``(scenario, flavour)``: why the scenario does not apply to the flavour."""

NO_WIRE: Final = "not applicable: an in-memory pair has no wire, no "

for _scenario, _what in {
    "keepalive_timeout": "pings",
    "keepalive_answered": "pings",
    "close_deadline": "closing handshake to time out",
    "abrupt_loss": "transport to lose",
    "protocol_failure": "frames to get wrong",
    "message_too_big": "max_message_size",
}.items():
    NOT_APPLICABLE[_scenario, "fake_pair"] = NO_WIRE + _what
NOT_APPLICABLE["deferred_replies", "fake_pair"] = (
    "not applicable: an in-memory pair has no closing handshake (the WebSocket interface's "
    "close() ends the closer's own events), so nothing can follow the peer's close"
)


for _scenario, _what in {
    "keepalive_timeout": "ping_interval",
    "keepalive_answered": "ping_interval",
    "message_too_big": "max_message_size",
}.items():
    NOT_APPLICABLE[_scenario, "browser"] = f"not applicable: the browser's WebSocket has no {_what}"

BROWSER_MISSING: Final = browser_missing()


def cases(scenario: str) -> list[Any]:
    """``pytest.param((flavour, role))`` for every flavour and role, marked from :data:`KNOWN`
    and :data:`NOT_APPLICABLE`."""
    params = []
    for flavour, roles in FLAVOURS.items():
        for role in roles:
            marks: list[pytest.MarkDecorator] = []
            skip = NOT_APPLICABLE.get((scenario, flavour))
            known = KNOWN.get((scenario, flavour, role)) or KNOWN.get((scenario, flavour, None))
            if skip is None and flavour == "browser" and BROWSER_MISSING is not None:
                skip = BROWSER_MISSING
            if skip is not None:
                marks.append(pytest.mark.skip(reason=skip))
            elif known is not None:
                reason, raises = known
                marks.append(pytest.mark.xfail(strict=True, reason=reason, raises=raises))
            params.append(pytest.param((flavour, role), marks=marks, id=f"{flavour}-{role}"))
    return params


@pytest.fixture(scope="module")
def browser_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    """One Node process with Pyodide loaded, for every browser case of the module."""
    agent = NodeAgent(tmp_path_factory.mktemp("browser"))
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    flavour, role = request.param
    agent = request.getfixturevalue("browser_node") if flavour == "browser" else None
    lab = make_lab(flavour, role, agent)
    try:
        yield lab
    finally:
        lab.stop()


# Helpers on the peer's side.


def frames_until_close(peer: Peer, timeout: float = TIMEOUT) -> list[Frame]:
    """Every frame up to and including the close frame."""
    frames: list[Frame] = []
    while len(frames) < 100:
        frame = peer.read_frame(timeout)
        frames.append(frame)
        if frame.opcode == CLOSE:
            return frames
    raise AssertionError(f"no close frame among {frames}")


def next_answering_pings(peer: Peer) -> Frame:
    """The next frame other than a ping; pings on the way are answered."""
    for _ in range(100):
        frame = peer.read_frame()
        if frame.opcode != PING:
            return frame
        peer.send(pong(frame.payload))
    raise AssertionError("only pings came")


def expect_message_while(peer: Peer, running: Outcome) -> Message:
    """The peer's next message, or the error ``running`` failed with first."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return peer.expect_message(timeout=SLICE)
        except Timeout:
            if running.done():
                running.result()  # raises its error
                raise AssertionError("it ended before the message came") from None
            if time.monotonic() > deadline:
                raise


def summary(frames: list[Frame]) -> list[object]:
    """Frames as comparable values: a message, or ``('close', code)``, or the frame."""
    values: list[object] = []
    for frame in frames:
        if frame.opcode == CLOSE:
            values.append(("close", frame.close[0]))
        elif frame.opcode in (TEXT, BINARY):
            values.append(frame.message)
        else:
            values.append(frame)
    return values


# (1) Deferred replies: answers to messages before a peer's close go out before the echo.


@pytest.mark.parametrize("lab", cases("deferred_replies"), indirect=True)
def test_answers_to_messages_before_the_peers_close_precede_the_echo(lab: Lab) -> None:
    side, peer = lab.open()
    side.consume(answer_prefix="re:")
    peer.send(text("1"), text("2"), text("3"), close_frame(4001, "bye"))
    frames = frames_until_close(peer)
    assert summary(frames) == ["re:1", "re:2", "re:3", ("close", 4001)]
    peer.finish()
    assert side.wait_done() is None
    assert (side.close_code, side.close_reason) == (4001, "bye")


# (2) A peer's close behind messages nobody consumes: echoed in time, messages kept.


@pytest.mark.parametrize("lab", cases("queued_at_peer_close"), indirect=True)
def test_peer_close_behind_unconsumed_messages_is_echoed_and_keeps_them(lab: Lab) -> None:
    side, peer = lab.open(close_timeout=CLOSE_TIMEOUT)
    peer.send(text("a"), binary(b"b"), text("c"), close_frame(4002, "queued"))
    if peer.wire:
        assert peer.expect_close(timeout=GIVE_UP_BOUND)[0] == 4002
    peer.finish()
    assert side.consume().rest() == ["a", b"b", "c"]
    assert side.wait_done() is None
    assert (side.close_code, side.close_reason) == (4002, "queued")


# (3) Keepalive.


@pytest.mark.parametrize("lab", cases("keepalive_timeout"), indirect=True)
def test_keepalive_closes_with_1001_when_no_pong_comes(lab: Lab) -> None:
    side, peer = lab.open(ping_interval=PING_INTERVAL, close_timeout=TIMEOUT)
    frames = frames_until_close(peer)
    assert frames[0].opcode == PING, frames
    assert all(frame.opcode == PING for frame in frames[:-1]), frames
    assert frames[-1].close[0] == 1001
    # Known before the peer answers; but the adapter learns it from the inner channel's
    # events, a turn or more of its loop after the frame left (3.13t in CI read None).
    wait_until_sync(lambda: side.close_code is not None, what="the close code reported")
    assert side.close_code == 1001
    peer.answer_close(frames[-1])
    peer.finish()
    assert side.wait_done() is None
    assert (side.close_code, side.close_reason) == (1001, "")


@pytest.mark.parametrize("lab", cases("keepalive_answered"), indirect=True)
def test_keepalive_keeps_a_peer_that_answers_open(lab: Lab) -> None:
    side, peer = lab.open(ping_interval=ANSWERED_PING_INTERVAL)
    for _ in range(3):  # three intervals: a missed pong would have closed by now
        frame = peer.read_frame()
        assert frame.opcode == PING, frame
        peer.send(pong(frame.payload))
    side.add("alive")
    assert next_answering_pings(peer).message == "alive"
    assert side.close_code is None
    side.close(1000)
    frame = next_answering_pings(peer)
    assert frame.close == (1000, "")
    peer.answer_close(frame)
    peer.finish()
    assert side.wait_done() is None


# (4) The total close deadline: a peer that never answers our close.


@pytest.mark.parametrize("lab", cases("close_deadline"), indirect=True)
def test_close_gives_up_when_the_peer_never_answers(lab: Lab) -> None:
    side, peer = lab.open(close_timeout=CLOSE_TIMEOUT)
    started = time.monotonic()
    side.close(1000, "bye")
    assert peer.expect_close() == (1000, "bye")
    # The peer neither answers nor closes TCP.
    assert side.wait_done(timeout=GIVE_UP_BOUND) is None, time.monotonic() - started
    assert (side.close_code, side.close_reason) == (1006, "")
    assert peer.expect_eof() in ("eof", "reset")


# (5) Abrupt loss.


@pytest.mark.parametrize("lab", cases("abrupt_loss"), indirect=True)
def test_abrupt_loss_ends_the_stream_with_1006(lab: Lab) -> None:
    side, peer = lab.open()
    consumer = side.consume()
    peer.send(text("before"))
    assert consumer.next() == "before"
    peer.reset()
    assert consumer.rest() == []
    assert side.wait_done() is None
    assert (side.close_code, side.close_reason) == (1006, "")


# (6) Protocol failures.

FAILURES: Final = {
    "reserved-bits": (Frame(TEXT, b"x", rsv=0x40), 1002),
    "unknown-opcode": (Frame(0x3, b"x"), 1002),
    "wrong-masking": (None, 1002),  # unmasked to a server, masked to a client
    "invalid-utf8": (Frame(TEXT, b"\xff\xfe"), 1007),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("lab", cases("protocol_failure"), indirect=True)
def test_protocol_failure_closes_with_its_code(lab: Lab, failure: str) -> None:
    side, peer = lab.open()
    consumer = side.consume()
    bad, code = FAILURES[failure]
    if bad is None:
        bad = Frame(TEXT, b"x", masked=not peer.client)
    peer.send(bad)
    assert peer.expect_close()[0] == code
    peer.close()
    assert consumer.rest() == []
    assert side.wait_done() is None
    assert side.close_code == code


# (7) Limits.


@pytest.mark.parametrize("lab", cases("message_too_big"), indirect=True)
def test_message_over_max_message_size_closes_with_1009(lab: Lab) -> None:
    side, peer = lab.open(max_message_size=1000)
    consumer = side.consume()
    peer.send(binary(b"\x01" * 1000))
    assert consumer.next() == b"\x01" * 1000
    peer.send(binary(b"\x02" * 1001))
    assert peer.expect_close()[0] == 1009
    peer.close()
    assert consumer.rest() == []
    assert side.wait_done() is None
    assert side.close_code == 1009


# (8) The sink rules.


@pytest.mark.parametrize("lab", cases("add_after_close"), indirect=True)
def test_add_after_close_raises_state_error_and_close_twice_is_fine(lab: Lab) -> None:
    side, peer = lab.open()
    side.close(4000, "done")
    with pytest.raises(StateError):
        side.add("late")
    side.close()
    side.close(4001, "again")
    frame = peer.read_frame()
    assert frame.close == (4000, "done")
    peer.answer_close(frame)
    peer.finish()
    assert side.wait_done() is None
    with pytest.raises(StateError):
        side.add("later")


@pytest.mark.parametrize("lab", cases("echo_reported"), indirect=True)
def test_our_close_reports_the_peers_answer(lab: Lab) -> None:
    side, peer = lab.open()
    side.close(4000, "done")
    frame = peer.read_frame()
    assert frame.close == (4000, "done")
    peer.answer_close(frame)
    peer.finish()
    assert side.wait_done() is None
    assert side.close_code == 4000


class Boom(Exception):
    """The error a test gives ``add_error``."""


@pytest.mark.parametrize("lab", cases("add_error"), indirect=True)
def test_add_error_closes_without_a_code_and_fails_done(lab: Lab) -> None:
    side, peer = lab.open()
    consumer = side.consume()
    error = Boom("mine")
    side.add_error(error)
    frame = peer.read_frame()
    assert frame.close == (None, "")
    peer.answer_close(frame)
    peer.finish()
    assert side.wait_done() is error
    assert consumer.rest() == []


@pytest.mark.parametrize("lab", cases("add_stream"), indirect=True)
def test_add_stream_sends_everything_in_order_then_add_works(lab: Lab) -> None:
    side, peer = lab.open()
    side.add_stream(["one", b"two", "three"])
    side.add("after")
    assert [peer.expect_message() for _ in range(4)] == ["one", b"two", "three", "after"]
    side.close(1000)
    frame = peer.read_frame()
    assert frame.close == (1000, "")
    peer.answer_close(frame)
    peer.finish()
    assert side.wait_done() is None


@pytest.mark.parametrize("lab", cases("pipe"), indirect=True)
def test_pipe_connects_two_channels_until_both_end(lab: Lab) -> None:
    first, first_peer = lab.open()
    second, second_peer = lab.open()
    piping = first.pipe(second)
    first_peer.send(text("from the first"))
    assert expect_message_while(second_peer, piping) == "from the first"
    second_peer.send(binary(b"from the second"))
    assert expect_message_while(first_peer, piping) == b"from the second"
    # The first peer closes: the first stream ends, so the second sink closes (no code).
    first_peer.send(close_frame(4001, "end"))
    if first_peer.wire:
        assert first_peer.expect_close()[0] == 4001
    first_peer.finish()
    frame = second_peer.read_frame()
    assert frame.close == (None, "")
    second_peer.answer_close(frame)
    second_peer.finish()
    piping.result(TIMEOUT)
    assert first.wait_done() is None
    assert second.wait_done() is None
    assert (first.close_code, first.close_reason) == (4001, "end")


# (9) The peer's close code and reason, reported exactly; later adds are dropped silently.


@pytest.mark.parametrize(
    ("code", "reason", "reported"),
    [(4321, "ünïcødé reason", (4321, "ünïcødé reason")), (None, "", (1005, ""))],
    ids=["with-code", "without-code"],
)
@pytest.mark.parametrize("lab", cases("peer_close"), indirect=True)
def test_peer_close_code_and_reason_are_reported_exactly(
    lab: Lab, code: int | None, reason: str, reported: tuple[int, str]
) -> None:
    side, peer = lab.open()
    peer.send(close_frame(code, reason))
    if peer.wire:
        assert peer.expect_close()[0] == code
    side.add("dropped silently")  # after the peer's close: no error, nothing sent
    peer.finish()
    assert side.wait_done() is None
    assert (side.close_code, side.close_reason) == reported
    side.add("still dropped")
