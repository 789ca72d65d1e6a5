#!/usr/bin/env bash
# The Debian packages the tests need, from system-packages.txt (one line each: what it is
# for and how to tell it is there).
#
#   scripts/system-packages.sh list    [STEP...]   each package, present or missing, and why
#   scripts/system-packages.sh check   [STEP...]   the missing ones; exit status 1 if any
#   scripts/system-packages.sh install [--quiet] [STEP...]
#                                                  says which are missing and why, then
#                                                  installs them with apt-get (--quiet: no
#                                                  line when none is missing)
#
# STEP limits it to the packages of those `make` targets (test-python, conformance...).
# install runs apt-get as root, or through sudo; without either it stops and prints the
# command to run. A package of an older Debian release (the suite column, e.g. python2.7 from
# bullseye) first gets that release added as an apt source, pinned to priority 100: apt takes
# from it only what this system's release does not have.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
list_file=$root/system-packages.txt

usage() {
    echo "usage: $0 list|check|install [--quiet] [STEP...]" >&2
    exit 2
}
say() { echo "system packages: $*"; }

[[ $# -ge 1 ]] || usage
action=$1
shift
case $action in list | check | install) ;; *) usage ;; esac
quiet=false
if [[ ${1:-} == --quiet ]]; then
    quiet=true
    shift
fi
steps=("$@")

# The lines for the steps asked for: parallel arrays, one entry per package.
names=() presents=() suites=() for_steps=() reasons=()
while read -r name present suite step reason; do
    [[ -z $name || $name == \#* ]] && continue
    if [[ ${#steps[@]} -gt 0 && " ${steps[*]} " != *" $step "* ]]; then
        continue
    fi
    names+=("$name") presents+=("$present") suites+=("$suite") for_steps+=("$step")
    reasons+=("$reason")
done <"$list_file"

# Whether the package is installed: its command is on PATH, or its file exists.
is_present() {
    if [[ $1 == /* ]]; then
        [[ -e $1 ]]
    else
        command -v "$1" >/dev/null 2>&1
    fi
}

missing=()
for i in "${!names[@]}"; do
    is_present "${presents[$i]}" || missing+=("$i")
done

describe() {
    local i=$1 from=""
    [[ ${suites[$i]} == - ]] || from=" (from Debian ${suites[$i]})"
    printf '  %-14s for %s: %s%s\n' "${names[$i]}" "${for_steps[$i]}" "${reasons[$i]}" "$from"
}

if [[ $action == list ]]; then
    for i in "${!names[@]}"; do
        state=present
        is_present "${presents[$i]}" || state=MISSING
        printf '%-8s' "$state"
        describe "$i"
    done
    exit 0
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    [[ $action == check || $quiet == true ]] || say "all ${#names[@]} present (${names[*]})"
    exit 0
fi

if [[ $action == check ]]; then
    say "${#missing[@]} missing:"
    for i in "${missing[@]}"; do describe "$i"; done
    exit 1
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        say "${#missing[@]} to install, which needs root (no sudo here):"
        for i in "${missing[@]}"; do describe "$i"; done
        echo "run as root: $0 install ${steps[*]}" >&2
        exit 1
    fi
fi

say "installing ${#missing[@]} with apt-get${as_root:+ through sudo} (and what they depend on):"
for i in "${missing[@]}"; do describe "$i"; done

# This system's codename, and the Debian archive its own release comes from: the URI of the
# apt source for that codename (deb822 or one-line format), else Debian's main mirror.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
archive() {
    local uri
    uri=$(awk -v release="$codename" '
        FNR == 1 || /^[[:space:]]*$/ { uris = ""; suites = "" }
        /^URIs:/ { uris = $2 }
        /^Suites:/ { suites = " " substr($0, 8) " " }
        uris != "" && index(suites, " " release " ") { print uris; exit }
        $1 == "deb" && $3 == release { print $2; exit }
    ' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
# Whether some apt source already offers `suite`.
has_suite() {
    grep -Eqs "^Suites:.*\\b$1\\b|^deb .* $1 " /etc/apt/sources.list /etc/apt/sources.list.d/*
}
add_suite() {
    local suite=$1 uri
    uri=$(archive)
    say "adding Debian $suite ($uri) as an apt source, pinned to 100:" \
        "/etc/apt/sources.list.d/wschannel-$suite.sources, /etc/apt/preferences.d/wschannel-$suite"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg |
        "${as_root[@]}" tee "/etc/apt/sources.list.d/wschannel-$suite.sources" >/dev/null
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "$suite" |
        "${as_root[@]}" tee "/etc/apt/preferences.d/wschannel-$suite" >/dev/null
}

packages=()
for i in "${missing[@]}"; do
    suite=${suites[$i]}
    if [[ $suite != - && $suite != "$codename" ]] && ! has_suite "$suite"; then
        add_suite "$suite"
    fi
    packages+=("${names[$i]}")
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "system packages: failed: $*" >&2
        exit 1
    fi
}
started=$(date +%s)
# Another apt-get (another project's set-up) may hold dpkg's lock: wait for it, up to 10 min.
run apt-get -o DPkg::Lock::Timeout=600 update -qq
# The tests start their own servers (proxies, brokers) on free ports: a package's system
# service is not started while it installs (a policy-rc.d that says no, ours only if none is
# there); tests/proxy/setup.sh and tests/pubsub/setup.sh stop one that systemd started anyway.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    trap 'rm -f "$log"; "${as_root[@]}" rm -f "$policy"' EXIT
fi
run apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}"
say "installed ${packages[*]} in $(($(date +%s) - started)) s"
