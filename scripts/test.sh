#!/usr/bin/env bash
# The whole test suite, end-to-end tests included, on a fresh or prepared Debian host.
# Usage: scripts/test.sh [pytest args…]   (as root, or through sudo by itself)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=root.sh
. "$(dirname "$0")/root.sh"
run_as_root "$@"
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${MAILSTACK_VENV:-$repo/.venv}
"$repo/scripts/setup-host.sh" --dev
cd "$repo"
exec "$venv/bin/python" -m pytest "$@"
