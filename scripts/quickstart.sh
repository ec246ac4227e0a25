#!/usr/bin/env bash
# Set up this host and bring up a working mail stack on defaults.
#   scripts/quickstart.sh                        sandbox stack for mail.example.test in ./stack
#                                                (ports on 127.0.0.1, outbound mail to a sink)
#   scripts/quickstart.sh mail.example.org example.org   a production stack in ./stack
# As root, or through sudo by itself (scripts/root.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=root.sh
. "$(dirname "$0")/root.sh"
run_as_root "$@"
repo=$(cd "$(dirname "$0")/.." && pwd)
stack=${MAILSTACK_DIR:-$repo/stack}
"$repo/scripts/setup-host.sh"
mailstack="${MAILSTACK_VENV:-$repo/.venv}/bin/mailstack"
if [ ! -f "$stack/mailstack.yaml" ]; then
  if [ $# -ge 2 ]; then
    "$mailstack" init --non-interactive --hostname "$1" --domain "$2" --dir "$stack"
  else
    # A sandbox on a workstation listens on loopback only.
    "$mailstack" init --non-interactive --sandbox --bind 127.0.0.1 \
      --hostname mail.example.test --domain example.test --dir "$stack"
  fi
fi
"$mailstack" up --dir "$stack"
"$mailstack" status --dir "$stack"
echo
echo "Stack directory: $stack   (export MAILSTACK_DIR=$stack to skip --dir)"
echo "Add a mailbox:   mailstack mailbox add postmaster@<domain> --dir $stack"
