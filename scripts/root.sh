# shellcheck shell=bash
# Sourced by the host scripts (setup-host.sh, quickstart.sh, test.sh); not run alone.
# run_as_root "$@": go on as root; a user who is not root gets the same script again
# through sudo, arguments and MAILSTACK_DIR / MAILSTACK_VENV kept (sudo resets the
# environment); without sudo, one line saying to run it as root.
run_as_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  local name script var keep=()
  name=$(basename "$0")
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$name: run it as root (this host has no sudo to do that for you)" >&2
    exit 1
  fi
  script=$(cd "$(dirname "$0")" && pwd)/$name
  for var in MAILSTACK_DIR MAILSTACK_VENV; do
    [ -n "${!var+set}" ] && keep+=("$var=${!var}")
  done
  exec sudo -- env "${keep[@]}" "$BASH" "$script" "$@"
}
