#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (--disable-gil) once, into
# ${WSCHANNEL_CACHE:-~/.cache/wschannel}/python3.13t, from Debian 13's source package of
# python3.13 (the upstream tarball inside it, without Debian's patches). Does nothing when the
# build is already there. Needs root for apt-get (a deb-src entry and the build dependencies);
# says what it installs before it does. About 10 minutes on 2 cores, run under nice.
#
# Prints the interpreter's path as its last line.
set -euo pipefail

CACHE="${WSCHANNEL_CACHE:-$HOME/.cache/wschannel}"
PREFIX="$CACHE/python3.13t"
PYTHON="$PREFIX/bin/python3.13t"
JOBS="${JOBS:-$(nproc)}"

say() { printf 'build-python-ft: %s\n' "$*" >&2; }

# The cached build is good if it runs without the GIL.
if [ -x "$PYTHON" ] && "$PYTHON" -c 'import sys, sysconfig; assert sysconfig.get_config_var("Py_GIL_DISABLED"); assert not sys._is_gil_enabled()' 2>/dev/null; then
    say "cached: $PYTHON"
    echo "$PYTHON"
    exit 0
fi

# Debian's source package for python3.13 lives in trixie; a deb-src entry (sources only, so
# no binary package can come from trixie) lets apt-get source fetch it.
SRC_LIST=/etc/apt/sources.list.d/wschannel-trixie-src.sources
if [ ! -e "$SRC_LIST" ]; then
    say "adding a deb-src entry for Debian 13 (trixie): $SRC_LIST"
    cat > "$SRC_LIST" <<'SOURCES'
# Added by wschannel's .ci/build-python-ft.sh: sources only (apt-get source python3.13).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    say "apt-get update"
    apt-get update -qq
fi

# What CPython's build needs for the modules the test suite and pip use (ssl, zlib, ctypes,
# bz2, lzma, sqlite3, readline, curses, uuid, pyexpat) and for apt-get source (dpkg-dev).
NEEDED=(dpkg-dev build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev
        libbz2-dev liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev uuid-dev
        libexpat1-dev)
MISSING=()
for pkg in "${NEEDED[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        MISSING+=("$pkg")
    fi
done
if [ "${#MISSING[@]}" -gt 0 ]; then
    say "installing these Debian packages (build dependencies): ${MISSING[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
else
    say "build dependencies: all installed"
fi

WORK="$CACHE/python3.13t-build"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
say "apt-get source --download-only python3.13 (about 23 MB) into $WORK"
apt-get source --download-only -qq python3.13
ORIG=$(ls python3.13_*.orig.tar.* | head -n 1)
say "unpacking $ORIG (upstream CPython)"
tar -xf "$ORIG"
SRC=$(find . -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)
if [ -z "$SRC" ]; then
    SRC=$(find . -maxdepth 1 -mindepth 1 -type d | head -n 1)
fi
cd "$SRC"
say "configure --disable-gil --prefix=$PREFIX"
nice ./configure -q --prefix="$PREFIX" --disable-gil --with-ensurepip=install > "$WORK/configure.log" 2>&1 \
    || { tail -n 40 "$WORK/configure.log" >&2; exit 1; }
say "make -j$JOBS (nice; several minutes; log: $WORK/make.log)"
start=$SECONDS
if ! nice make -j"$JOBS" > "$WORK/make.log" 2>&1; then
    tail -n 40 "$WORK/make.log" >&2
    exit 1
fi
say "built in $((SECONDS - start)) s; make install"
nice make install > "$WORK/install.log" 2>&1 || { tail -n 40 "$WORK/install.log" >&2; exit 1; }
"$PYTHON" -c 'import sys, ssl, zlib, ctypes, sqlite3; assert not sys._is_gil_enabled(), "the GIL is on"; print(sys.version)' >&2
cd "$CACHE"
rm -rf "$WORK"
say "done: $PYTHON"
echo "$PYTHON"
