#!/usr/bin/env bash
# Installs what tests/browser needs beyond pip's dev extras, and does nothing when it is there:
#   - Debian's `chromium` (the browser that runs Pyodide; test_chromium.py), `nodejs` and `npm`
#     (test_node.py needs Node 20.10 or later and skips on an older one), through
#     scripts/system-packages.sh (listed, with why, in system-packages.txt; apt-get as root,
#     or through sudo),
#   - Pyodide's runtime from npm at the version pinned in node/package-lock.json, with
#     `npm ci`, again only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")"

# Chromium, Node.js and npm: the Debian packages system-packages.txt lists for test-python
# (said before they are installed; nothing when they are there).
bash ../../scripts/system-packages.sh install --quiet test-python

stamp=node/node_modules/.wschannel-lock.sha256
lock_hash="$(sha256sum node/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    echo "setup.sh: npm ci in tests/browser/node"
    (cd node && npm ci --no-audit --no-fund)
    echo "$lock_hash" >"$stamp"
fi
