"""One version number for the Python package and the Rust crates (CHANGELOG.md)."""

import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import wschannel

ROOT = Path(__file__).resolve().parent.parent


def test_engine_reports_the_package_version() -> None:
    # The binding's __version__ is its crate's version (CARGO_PKG_VERSION).
    assert wschannel.__version__ == metadata.version("wschannel")


def test_crates_and_package_declare_one_version() -> None:
    cargo, pyproject = ROOT / "Cargo.toml", ROOT / "pyproject.toml"
    if not (cargo.exists() and pyproject.exists()):
        pytest.skip("not run from a source tree")
    workspace = tomllib.loads(cargo.read_text())["workspace"]["package"]["version"]
    package = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert workspace == package
    for crate in ("wschannel", "wschannel-python"):
        manifest = tomllib.loads((ROOT / "crates" / crate / "Cargo.toml").read_text())
        assert manifest["package"]["version"] == {"workspace": True}
