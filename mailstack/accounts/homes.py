"""A cluster's mailbox homes (docs/cluster.md): the mailbox node whose back end holds a
mailbox's mail, and moving a mailbox to another while it is in use.

A move copies the mail with dsync while the user works (the new back end pulls from the old
one's doveadm server, over the edge proxy's link), switches the home in the directory (new
logins and deliveries go to the new back end from then on), ends the user's sessions on the
old one (their clients log in again, and land on the new home), and syncs once more: what
was delivered or changed on the old back end before the switch arrives too. The old copy is
kept, named in the result, for the operator to remove once satisfied.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from mailstack import services
from mailstack.accounts import names
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, NotFound

# dsync exits 2 when the mailbox changed while it ran ("run again"): another pass is asked.
_CHANGED_DURING_SYNC = "(exit 2)"
_SYNC_PASSES = 3
# A large mailbox takes a while to copy the first time.
SYNC_TIMEOUT = 6 * 3600
# A delivery that looked the home up just before the switch finishes on the old back end
# within this (an LMTP transaction takes milliseconds); the last copy comes after it.
SWITCH_SETTLE_SECONDS = 3.0


@dataclass(frozen=True)
class Move:
    address: str
    source: str
    target: str
    moved: bool  # False: it was home there already

    def __str__(self) -> str:
        if not self.moved:
            return f"mailbox {self.address} is on {self.target} already; nothing moved"
        return (
            f"moved mailbox {self.address} from {self.source} to {self.target}; its copy on "
            f"{self.source} is kept (remove it there once you are satisfied)"
        )


@dataclass(frozen=True)
class HomeRouted:
    """An Executor for the accounts code that works on one mailbox's mail: what it sends to
    Dovecot runs on the mailbox's home back end (on a cluster `dovecot` is the edge proxy,
    which holds no mail); every other service is reached as before."""

    inner: Executor
    back_end: str

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        if service == services.DOVECOT.name:
            service = back_end_service(self.back_end)
        return self.inner.exec(service, argv, input=input, user=user, timeout=timeout)


def back_end_service(node: str) -> str:
    """The swarm service of a mailbox node's back end (services.Placement.per_node)."""
    return f"{services.MAILBOX.name}-{node}"


def doveadm_target(node: str) -> str:
    """Where another back end reaches this one's doveadm server: its alias on the proxy's
    link (services.Link.node_alias), the port Dovecot's config gives it."""
    alias = services.PROXY_TO_BACK_ENDS.node_alias(node)
    return f"tcp:{alias}:{services.MAILBOX_DOVEADM_PORT}"


def home_of(run: Executor, address: str, first_back_end: str) -> str:
    """The mailbox's home back end (a mailbox without one is the first mailbox node's)."""
    rows = psql.query(
        run,
        "SELECT coalesce(back_end, :'first') FROM mailboxes WHERE address = :'address';",
        {"address": address, "first": first_back_end},
    )
    if not rows:
        raise NotFound(f"mailbox {address} does not exist")
    return rows[0][0]


def move_mailbox(
    run: Executor,
    address: str,
    target: str,
    mailbox_nodes: list[str],
    *,
    source: str | None = None,
) -> Move:
    """Move the mailbox's mail to the back end on the mailbox node `target` from its home,
    or from `source` (both checked by the caller against mailbox_nodes, the cluster's in its
    order): from a back end it was moved away from, a move copies what is still there alone
    and switches nothing."""
    address = names.require("ADDRESS", names.mailbox, address).lower()
    home = home_of(run, address, mailbox_nodes[0])
    source = source or home
    if source == target:
        return Move(address, source, target, moved=False)
    _sync(run, address, source, target, switched=home == target)
    if home != target:
        _set_home(run, address, target)
    # Open sessions on the old back end end; their clients log in again through the proxy,
    # which now names the new home. "No users kicked" is exit 68.
    with contextlib.suppress(ExternalCommandFailed):
        run.exec(back_end_service(source), ["doveadm", "kick", address])
    settle(SWITCH_SETTLE_SECONDS)
    _sync(run, address, source, target, switched=True)
    return Move(address, source, target, moved=True)


def settle(seconds: float) -> None:
    time.sleep(seconds)


def _sync(run: Executor, address: str, source: str, target: str, *, switched: bool) -> None:
    """dsync on the target's back end, both ways, with the source's (a first run copies it
    all); again while the mailbox changed during a pass."""
    argv = ["doveadm", "sync", "-u", address, doveadm_target(source)]
    for attempt in range(1, _SYNC_PASSES + 1):
        try:
            run.exec(back_end_service(target), argv, timeout=SYNC_TIMEOUT)
            return
        except ExternalCommandFailed as failed:
            if _CHANGED_DURING_SYNC not in str(failed) or attempt == _SYNC_PASSES:
                hint = (
                    f"its home is {target} now; what reached {source} just before the switch "
                    f"is still there alone: run `mailbox move {address} --to {target} "
                    f"--from {source}` to copy it"
                    if switched
                    else f"nothing was switched: the mailbox stays on {source}"
                )
                raise ExternalCommandFailed(
                    f"copying {address} from {source} to {target} (doveadm sync)",
                    failed.output,
                    hint=hint,
                ) from failed


def _set_home(run: Executor, address: str, target: str) -> None:
    rows = psql.query(
        run,
        "UPDATE mailboxes SET back_end = :'target' WHERE address = :'address' RETURNING address;",
        {"address": address, "target": target},
    )
    if not rows:
        raise MailstackError(f"mailbox {address} disappeared during the move; its copy stays")
