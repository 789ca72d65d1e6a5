#!/usr/bin/env bash
# Installs what tests/interop needs beyond pip's dev extras, and does nothing when it is there:
#   - Debian's `chromium` (the browser peer; test_browser.py), `nodejs` and `npm`, through
#     scripts/system-packages.sh (listed, with why, in system-packages.txt; apt-get as root,
#     or through sudo),
#   - then Node's `ws` at the version pinned in node/package-lock.json, with `npm ci`
#     (test_node_ws.py).
set -euo pipefail
cd "$(dirname "$0")"

# Chromium, Node.js and npm: the Debian packages system-packages.txt lists for test-python
# (said before they are installed; nothing when they are there).
bash ../../scripts/system-packages.sh install --quiet test-python

# `npm ci` again only when the lock file changed since the last install.
stamp=node/node_modules/.wschannel-lock.sha256
lock_hash="$(sha256sum node/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    echo "setup.sh: npm ci in tests/interop/node"
    (cd node && npm ci --no-audit --no-fund)
    echo "$lock_hash" >"$stamp"
fi
