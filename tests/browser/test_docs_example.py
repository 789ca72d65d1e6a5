"""The example of ``docs/browser.md`` on CPython: the same code, and the same output, as the
``docs_browser_example_prints_what_the_docs_say`` check under Pyodide."""

from __future__ import annotations

import pytest

from .harness import Peers, within
from .suite import docs_main


async def test_docs_browser_example_prints_the_same_on_cpython(
    capsys: pytest.CaptureFixture[str],
) -> None:
    peers = Peers()
    await peers.start()
    try:
        await within(docs_main(f"{peers.config()['echo']}/echo"))
    finally:
        await peers.stop()
    assert capsys.readouterr().out.splitlines() == ["'Hello'", "b'\\x01\\x02\\x03'", "1000 done"]
