#!/usr/bin/env bash
# Installs the real brokers tests/test_pubsub*.py and benchmarks/pubsub.py fan out through, and
# does nothing when they are there (Debian's packages):
#   - `redis-server`  Redis 7: pub/sub for plain topics, Streams for recoverable ones,
#   - `nats-server`   NATS: core pub/sub for plain topics.
# Only installs: the tests start their own brokers on free loopback ports, in temporary
# directories (tests/pubsub/brokers.py), and stop them. The packages' own system services are
# not started (policy-rc.d answers "no" during the install, and the script stops and disables
# any that a package started anyway). Runs as root, or through sudo when it is at hand.
set -euo pipefail

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi

apt_packages=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || apt_packages+=(redis-server)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_packages+=(nats-server)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "tests/pubsub/setup.sh: installing ${apt_packages[*]} from Debian (services not started)"
    "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
    # A policy-rc.d that forbids starting services while the packages install.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 install \
        -y -q --no-install-recommends "${apt_packages[@]}" || status=$?
    if [ "$own_policy" -eq 1 ]; then
        "${as_root[@]}" rm -f "$policy"
    fi
    [ "$status" -eq 0 ] || exit "$status"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        "${as_root[@]}" systemctl disable --now redis-server nats-server >/dev/null 2>&1 || true
    fi
fi
