#!/usr/bin/env bash
# Installs Autobahn|Testsuite's `wstest` once and prints its path (the last line of output).
# A second run only checks that it starts and prints the path.
#
#   compliance/install.sh            install if needed, print the path
#   compliance/install.sh --check    print the path if it is installed, else exit 1
#
# Where: $WSCHANNEL_AUTOBAHN_HOME, else ${WSCHANNEL_CACHE:-~/.cache/wschannel}/autobahn-testsuite
# (a Python 2.7 virtualenv; remove the folder to install again).
#
# wstest runs only on Python 2.7. The interpreter and its headers come from Debian
# (system-packages.txt: Debian 11 "bullseye", the last release with python2.7, pinned low;
# scripts/system-packages.sh says what it installs before it does). The rest comes from PyPI
# at the last versions that support Python 2.7: pip 20.3.4 (fetched as a wheel by Python 3's
# pip, then run from the wheel itself to install virtualenv 20.15.1 into a scratch folder),
# then, inside the new virtualenv, autobahntestsuite 25.10.1 (with Twisted 19.10 and the
# other dependencies pip resolves for 2.7; building their C extensions needs a C compiler).
#
# Most of wstest's CPU in the compression cases is zlib's. The path printed is a small script,
# $home/wstest, that runs the virtualenv's wstest with zlib-rs preloaded in place of the
# system's libz.so.1 (LD_PRELOAD; compliance/zlib, built by cargo from crates.io once, again
# when its files change): about 15 % less CPU for a role. Nothing else changes: wstest's
# frames and judgments are the same code, and what our side gets is deflate as before.
# Messages go to stderr; a failed step shows the output of the command that failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
home=${WSCHANNEL_AUTOBAHN_HOME:-${WSCHANNEL_CACHE:-$HOME/.cache/wschannel}/autobahn-testsuite}
venv_wstest=$home/venv/bin/wstest
wstest=$home/wstest
python3=${PYTHON3:-python3}
# What the preloaded library is built from: a new build when this changes.
zlib_stamp=$(cat "$here/zlib/Cargo.toml" "$here/zlib/Cargo.lock" "$here/zlib/src/lib.rs" | sha256sum)
zlib_stamp=${zlib_stamp%% *}

if [[ -x $wstest ]] && [[ $(cat "$home/libz-wstest.stamp" 2>/dev/null) == "$zlib_stamp" ]] \
    && "$wstest" --help >/dev/null 2>&1; then
    echo "$wstest"
    exit 0
elif [[ ${1:-} == --check ]]; then
    echo "compliance/install: wstest is not installed in $home" >&2
    exit 1
fi

say() { echo "compliance/install: $*" >&2; }
# Runs a step with its output kept aside; shows it when the step fails.
step() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        say "failed: $*"
        exit 1
    fi
}

started=$(date +%s)
if [[ -x $venv_wstest ]] && "$venv_wstest" --help >/dev/null 2>&1; then
    say "wstest is installed in $home/venv"
else
    bash "$here/../scripts/system-packages.sh" install conformance >&2
    # Debian's interpreter by its path: a pyenv shim called python2.7 may come first on PATH.
    python2=/usr/bin/python2.7

    say "installing wstest into $home (Python 2.7 virtualenv; about a minute)"
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1
    step "$python3" -m pip download --quiet --no-deps --only-binary=:all: --python-version 2.7 \
        --dest "$scratch/wheels" pip==20.3.4
    # A wheel is a zip file Python can import from: pip runs from its own wheel.
    step "$python2" "$scratch/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install --quiet \
        --target "$scratch/tools" virtualenv==20.15.1
    rm -rf "$home/venv"
    mkdir -p "$home"
    step env PYTHONPATH="$scratch/tools" "$python2" -m virtualenv --quiet "$home/venv"
    step "$home/venv/bin/pip" install --quiet autobahntestsuite==25.10.1
    step "$venv_wstest" --help
fi

say "building zlib-rs for wstest (compliance/zlib; cargo)"
zlib_target=${WSCHANNEL_CACHE:-$HOME/.cache/wschannel}/zlib-target
step env CARGO_TARGET_DIR="$zlib_target" cargo build --quiet --release --locked \
    --manifest-path "$here/zlib/Cargo.toml"
cp "$zlib_target/release/libz_wstest.so" "$home/libz-wstest.so"
cat >"$wstest.new" <<WRAPPER
#!/bin/sh
# wstest with zlib-rs in place of the system's zlib (compliance/install.sh writes this).
LD_PRELOAD="$home/libz-wstest.so\${LD_PRELOAD:+:\$LD_PRELOAD}" exec "$venv_wstest" "\$@"
WRAPPER
chmod +x "$wstest.new"
mv "$wstest.new" "$wstest"
step "$wstest" --help
echo "$zlib_stamp" >"$home/libz-wstest.stamp"
say "wstest ready in $(($(date +%s) - started)) s"
echo "$wstest"
