"""`dkim rotate` and `dkim retire` on a stack: keys (mailstack.mailauth.dkim), render, DNS, rspamd.

A rotation has two steps an operator can see:

1. a new key is made and published beside the active one (`dkim show` and the records list
   both; in sandbox mode the stack's own zone serves it at once);
2. signing switches to it, only when its TXT record is visible through the stack's resolver
   (or at once with --now), by rewriting dkim/selectors.map and restarting rspamd, which
   copies the keys at start.

`rotate` run again while a rotation waits for DNS just checks again. The old key stays
published (mail signed with it in the last days still verifies) until `dkim retire`.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from mailstack import services
from mailstack.errors import ExternalCommandFailed, UsageError
from mailstack.mailauth import dkim
from mailstack.runtime import lifecycle
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import render

RESOLVER_SERVICE = services.RESOLVER.name
SIGNING_SERVICE = services.RSPAMD.name
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Rotation:
    domain: str
    key: dkim.DkimKey  # the new key (signing now when switched)
    previous: str | None  # the selector signing before
    created: bool  # this run made the key (False: it was waiting for DNS)
    visible: bool | None  # its record seen through the resolver; None: not asked (--now)
    switched: bool
    restarted: tuple[str, ...]

    def __str__(self) -> str:
        made = "made" if self.created else "found (made by an earlier rotate)"
        lines = [f"new DKIM key {self.key.selector} for {self.domain} {made}"]
        lines.append(f"publish: {self.key.zone_line}")
        if self.switched:
            seen = "" if self.visible is None else " (its record is visible in DNS)"
            lines.append(f"signing with {self.key.selector} now{seen}")
            if self.previous:
                lines.append(
                    f"the old key {self.previous} stays published so mail signed with it "
                    f"still verifies; remove it in a few days: mailstack dkim retire "
                    f"{self.domain}"
                )
        else:
            lines.append(
                f"still signing with {self.previous}: {self.key.record_name} is not visible "
                "through the stack's resolver yet; publish the record above, then run "
                f"`mailstack dkim rotate {self.domain}` again (or add --now to switch anyway)"
            )
        if self.restarted:
            lines.append(f"restarted {' and '.join(self.restarted)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Retirement:
    domain: str
    retired: tuple[str, ...]
    restarted: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"retired DKIM key {selector} of {self.domain}" for selector in self.retired]
        lines.append(
            "remove its TXT record from DNS as well: "
            + ", ".join(f"{selector}._domainkey.{self.domain}" for selector in self.retired)
        )
        if self.restarted:
            lines.append(f"restarted {' and '.join(self.restarted)}")
        return "\n".join(lines)


def parse_txt_answers(output: str) -> list[str]:
    """drill -Q output: one TXT record per line, its quoted strings joined."""
    records = []
    for line in output.splitlines():
        strings = _QUOTED.findall(line)
        if strings:
            records.append("".join(re.sub(r"\\(.)", r"\1", text) for text in strings))
    return records


def should_switch(*, now: bool, visible: bool | None) -> bool:
    """Switch signing only when the new record is visible, or when the operator says --now."""
    return now or visible is True


def record_visible(stack: Stack, key: dkim.DkimKey) -> bool:
    """Whether the stack's resolver answers the key's TXT record with this public key."""
    try:
        output = stack.compose.exec(
            RESOLVER_SERVICE,
            ["drill", "-Q", key.record_name, "@127.0.0.1", "TXT"],
            input=b"",
            timeout=30,
        )
    except ExternalCommandFailed:
        return False  # no answer (SERVFAIL, timeout) is "not visible yet"
    return dkim.txt_strings_match(key, parse_txt_answers(output.decode("utf-8", "replace")))


def rotate(
    stack: Stack, domain: str, *, now: bool, clock: datetime.datetime | None = None
) -> Rotation:
    root = stack.dir.root
    keys = dkim.show(root, domain)
    previous = next((key.selector for key in keys if key.active), None)
    pending = dkim.pending_key(keys)
    created = pending is None
    if pending is None:
        pending = dkim.create_rotation_key(root, domain, clock)
    if now:  # publish and switch in one go: one restart of each service
        pending = dkim.activate(root, domain, pending.selector)
        services = (*_zone_services(stack), SIGNING_SERVICE) if created else (SIGNING_SERVICE,)
        return Rotation(domain, pending, previous, created, None, True, _apply(stack, services))
    # The zone must serve the new record before the resolver is asked about it.
    restarted: list[str] = list(_apply(stack, _zone_services(stack) if created else ()))
    visible = record_visible(stack, pending)
    switched = should_switch(now=now, visible=visible)
    if switched:
        pending = dkim.activate(root, domain, pending.selector)
        restarted += [name for name in _apply(stack, (SIGNING_SERVICE,)) if name not in restarted]
    return Rotation(domain, pending, previous, created, visible, switched, tuple(restarted))


def retire(stack: Stack, domain: str, selector: str | None = None) -> Retirement:
    retired = dkim.retire(stack.dir.root, domain, selector)
    restarted = _apply(stack, _zone_services(stack))
    return Retirement(domain, tuple(key.selector for key in retired), restarted)


def _zone_services(stack: Stack) -> tuple[str, ...]:
    # In sandbox mode the resolver serves the stack's zone, DKIM records included.
    return (RESOLVER_SERVICE,) if stack.config.mode == "sandbox" else ()


def _apply(stack: Stack, services: tuple[str, ...]) -> tuple[str, ...]:
    """Re-render (the zone and `dns records` follow dkim/), restart what must re-read it."""
    report = render(stack.dir.root, stack.config)
    if report.conflicts:
        raise UsageError(
            f"the DKIM keys are changed, but the re-render has {len(report.conflicts)} "
            "conflict(s); the running stack does not use them yet",
            hint="resolve each conflict (`mailstack render` lists them), then "
            f"`mailstack restart {' '.join(services) or SIGNING_SERVICE}`",
        )
    running = stack.compose.running_services()
    restart = tuple(name for name in services if name in running)
    if restart:
        stack.compose.run(["restart", *restart], timeout=300)
        lifecycle.wait_healthy(stack, list(restart), 300, None)
    return restart
