"""Check the engine crate's declared minimum Rust (``rust-version``) against its dependencies.

No older toolchain can be installed on these machines (rustup's downloads are out of reach),
so the minimum is checked in the two ways that need none:

- every dependency the engine crate builds with (normal and build dependencies, default
  features, this machine's target) declares a ``rust-version`` no newer than the engine's:
  a newer one would mean the engine cannot build with its own minimum;
- clippy's ``incompatible_msrv`` lint (``make lint``) flags the engine's own use of a std
  API newer than the minimum.

The optional ``tokio`` feature is reported, not checked: tokio raises its minimum in minor
releases, and a cargo that resolves by ``rust-version`` (1.84 and later) picks an older one.

Usage: ``python scripts/check_msrv.py [--rust-version X.Y]`` (exit status 1 when a
dependency needs a newer Rust than the declared one, or than X.Y if given).
"""

from __future__ import annotations

import json
import subprocess
import sys


def version(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in (text or "0").split("."))


def dependencies(package: str, features: list[str]) -> set[tuple[str, str]]:
    """(name, version) of every package ``package`` builds with on this machine."""
    listed = subprocess.run(
        [
            "cargo",
            "tree",
            "-q",
            "-p",
            package,
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            *features,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = set()
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            found.add((fields[0], fields[1].removeprefix("v")))
    return found


def main(argv: list[str]) -> int:
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    declared = {(p["name"], p["version"]): p.get("rust_version") for p in metadata["packages"]}
    engine = declared[next((n, v) for n, v in declared if n == "wschannel")]
    if argv[:1] == ["--rust-version"]:  # what a lower minimum would need (a dry run)
        engine = argv[1]
    print(f"check_msrv: checking against rust-version {engine}")
    failed = False
    for label, features in (("default features", []), ("feature tokio", ["--features", "tokio"])):
        newer = sorted(
            (version(declared.get(dep)), dep)
            for dep in dependencies("wschannel", features)
            if dep[0] != "wschannel" and version(declared.get(dep)) > version(engine)
        )
        if not newer:
            print(f"check_msrv: {label}: no dependency needs a newer Rust")
            continue
        names = ", ".join(f"{n} {v} (rust-version {declared[n, v]})" for _, (n, v) in newer)
        if features:
            print(f"check_msrv: {label} (not checked): {names}")
        else:
            print(f"check_msrv: {label}: needs a newer Rust than {engine}: {names}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
