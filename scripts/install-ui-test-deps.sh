#!/usr/bin/env bash
# The web UI's browser tests drive Debian's Chromium with playwright-core, an npm package:
# installs crates/swoop-server/ui's packages from its package-lock.json (`npm ci`) unless they
# are there already. The UI's built files (ui/dist) are committed: building the binary needs
# no npm, only these tests (and changing the UI: `npm run build` there) do.
set -euo pipefail
ui="$(cd "$(dirname "$0")/../crates/swoop-server/ui" && pwd)"
stamp="$ui/node_modules/.package-lock.json"
# npm writes the stamp after every install: a lock file newer than it has changed since.
if [ ! -f "$stamp" ] || [ "$ui/package-lock.json" -nt "$stamp" ]; then
    echo "installing the UI's npm packages (npm ci in $ui)"
    (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
