#!/usr/bin/env bash
# The whole test suite, end-to-end tests included, on a fresh or prepared Debian host.
# Usage: sudo scripts/test.sh [pytest args…]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup-host.sh" --dev
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
