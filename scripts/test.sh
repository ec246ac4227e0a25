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
# Two workers, each module whole on one of them (its module fixtures intact) and each worker
# with a stack of its own (tests/e2e/conftest.py): the end-to-end tests wait on mail, timers and
# daemons much of the time, so two stacks on two cores take about half the time of one.
# MAILSTACK_TEST_WORKERS=0 runs everything in this one process.
exec "$venv/bin/python" -m pytest -n "${MAILSTACK_TEST_WORKERS:-2}" --dist loadfile "$@"
