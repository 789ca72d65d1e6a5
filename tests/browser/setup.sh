#!/usr/bin/env bash
# Installs what tests/browser needs beyond pip's dev extras, and does nothing when it is there:
#   - Debian's `chromium` (the browser that runs Pyodide; test_chromium.py),
#   - Node.js and npm if missing (Debian's packages; test_node.py needs Node 20.10 or later
#     and skips on an older one),
#   - Pyodide's runtime from npm at the version pinned in node/package-lock.json, with
#     `npm ci`, again only when the lock file changed.
# Runs as root, or through sudo when it is at hand. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi

apt_packages=()
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${apt_packages[*]} from Debian"
    "${as_root[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${apt_packages[@]}"
fi

stamp=node/node_modules/.wschannel-lock.sha256
lock_hash="$(sha256sum node/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    echo "setup.sh: npm ci in tests/browser/node"
    (cd node && npm ci --no-audit --no-fund)
    echo "$lock_hash" >"$stamp"
fi
