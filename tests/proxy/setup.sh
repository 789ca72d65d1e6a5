#!/usr/bin/env bash
# Installs the real proxy servers tests/test_proxy.py talks through, and does nothing when they
# are there (Debian's packages):
#   - `tinyproxy`     an HTTP proxy (CONNECT, Basic credentials, ConnectPort rules),
#   - `dante-server`  `danted`, a SOCKS5 proxy (no authentication, or RFC 1929
#                     username/password checked against system users).
# Only installs: the tests start their own proxies on free loopback ports, with configurations
# written to temporary directories (tests/proxy/servers.py), and stop them. The packages' own
# system services are not started (policy-rc.d answers "no" during the install, and the
# script stops and disables any that a package started anyway).
# Also creates the system user that danted's username method checks (see USER below), with
# no login shell, no home, and expired. Runs as root, or through sudo when it is at hand.
set -euo pipefail

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi

apt_packages=()
command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ] || apt_packages+=(tinyproxy)
command -v danted >/dev/null || [ -x /usr/sbin/danted ] || apt_packages+=(dante-server)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "tests/proxy/setup.sh: installing ${apt_packages[*]} from Debian (services not started)"
    "${as_root[@]}" apt-get update -q
    # A policy-rc.d that forbids starting services while the packages install.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends \
        "${apt_packages[@]}" || status=$?
    if [ "$own_policy" -eq 1 ]; then
        "${as_root[@]}" rm -f "$policy"
    fi
    [ "$status" -eq 0 ] || exit "$status"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        "${as_root[@]}" systemctl disable --now tinyproxy danted >/dev/null 2>&1 || true
    fi
fi

# The account danted's `username` method checks (RFC 1929 against the system's passwords):
# the same name and password as tests/proxy/servers.py's SOCKS_USER / SOCKS_PASSWORD. Its
# password is public, so the account is expired: PAM refuses it every login (ssh, su...),
# while danted only compares the password.
USER=wschannel-proxy-test
PASSWORD=wschannel-proxy-test-password
if ! id "$USER" >/dev/null 2>&1; then
    echo "tests/proxy/setup.sh: creating the system user $USER for danted (expired: no login)"
    "${as_root[@]}" useradd --system --no-create-home --shell /usr/sbin/nologin "$USER"
    echo "$USER:$PASSWORD" | "${as_root[@]}" chpasswd
    "${as_root[@]}" usermod --expiredate 1 "$USER" # 2 January 1970
fi
