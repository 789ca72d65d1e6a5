"""The package's layers, seen from a fresh interpreter: what an import loads.

pyproject's [tool.importlinter] contracts check the imports written in the files (make lint);
these check what Python really loads, lazy imports and the package's ``__init__`` included.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# The asyncio drivers and what only they use.
DRIVERS = (
    "wschannel._adapter",
    "wschannel._direct",
    "wschannel.adapter",
    "wschannel.asgi",
    "wschannel.bytestream",
    "wschannel.html",
    "wschannel.io",
    "wschannel.server",
)


def loaded_after(code: str) -> set[str]:
    """The ``wschannel`` modules loaded once ``code`` has run in a fresh interpreter."""
    program = f"""{code}
import sys
print(" ".join(sorted(m for m in sys.modules if m.startswith("wschannel"))))
"""
    # A bound, not an expectation: it takes under a second, but on this 2-core machine with
    # six busy processes beside it, a new interpreter took 31-38 s to import the package
    # (every module alike slowed, GIL or none), and one CI run passed 60 s.
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_blocking_flavour_loads_no_asyncio_driver() -> None:
    loaded = loaded_after("import wschannel.sync")
    assert "wschannel.sync.connection" in loaded
    assert loaded.isdisjoint(DRIVERS), sorted(loaded.intersection(DRIVERS))


def test_the_package_loads_no_driver_before_one_is_used() -> None:
    loaded = loaded_after("import wschannel")
    assert "wschannel._platform" in loaded
    assert loaded.isdisjoint(DRIVERS), sorted(loaded.intersection(DRIVERS))
    assert "wschannel._wschannel" not in loaded


@pytest.mark.parametrize(
    "module",
    ["wschannel.channel", "wschannel.stream_channel", "wschannel.adapter", "wschannel.testing"],
)
def test_pure_python_modules_import_without_the_engine(module: str) -> None:
    # As under Pyodide: the engine is absent, so no import on the way may need it.
    block_engine = 'import sys\nsys.modules["wschannel._wschannel"] = None'
    loaded = loaded_after(f"{block_engine}\nimport {module}")
    assert module in loaded
    assert "wschannel.io" not in loaded


def test_the_abstract_channel_reaches_the_platform_the_package_installed() -> None:
    import wschannel._platform
    from wschannel import channel

    assert channel.installed_platform() is wschannel._platform
    assert wschannel.connect is wschannel._platform.connect


def test_the_channel_module_still_offers_every_name_it_had() -> None:
    import wschannel.channel

    # The split moved the stream, the sinks and stream_channel's toolkit to their own
    # modules; the names imported from wschannel.channel stay there.
    for name in wschannel.channel.__all__:
        assert getattr(wschannel.channel, name) is not None, name
    assert {"MessageStream", "GuaranteeSink", "StreamChannel", "json_document"} <= set(
        wschannel.channel.__all__
    )
