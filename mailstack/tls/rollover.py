"""`tls rollover`: the pre-published next key goes into service, and a new next key is made.

Safe for DANE (mailstack.tls.dane) because it refuses while TLSA records are published for
port 25 and none of them is the next key's: senders that cached the old record set would
defer mail for as long as its TTL. Without any TLSA record (DANE not in use) nothing can
break, and it goes ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.errors import UsageError
from mailstack.mailauth import dkim, dnscheck, dnsrecords
from mailstack.stack.stackdir import Stack
from mailstack.tls import acme, certreload, certs, dane


@dataclass(frozen=True)
class RolloverResult:
    retired: str  # the TLSA data of the key taken out of service
    serving: str  # ... of the key now served (the former next key)
    next: str  # ... of the new next key, to publish now
    published: tuple[str, ...]  # the TLSA data DNS served before the rollover
    reloaded: tuple[str, ...]
    hostname: str

    def __str__(self) -> str:
        name = dane.tlsa_name(self.hostname)
        lines = [
            f"the next key is in service: {name}. IN TLSA {self.serving}",
            f"publish the new next key now: {name}. IN TLSA {self.next}",
            f"then remove the retired key's record: {name}. IN TLSA {self.retired}",
        ]
        if not self.published:
            lines[1:] = ["no TLSA records were published (DANE not in use); "
                         "`mailstack dns records` lists them"]  # fmt: skip
        if self.reloaded:
            lines.append(f"reloaded {', '.join(self.reloaded)}")
        return "\n".join(lines)


def rollover(stack: Stack, *, resolver: str | None = None, force: bool = False) -> RolloverResult:
    """Serve the next key (a new certificate for it), then make a new next key. Refused while
    published TLSA records leave the next key out, unless forced."""
    config = stack.config
    root = stack.dir.root
    if config.tls.mode == "manual":
        raise UsageError(
            "tls.mode: 'manual' serves the operator's key (tls.key_file): a rollover is yours",
            hint="publish the new key's TLSA record first, wait its TTL twice, then install it",
        )
    keys = dane.load_keys(root)
    upcoming = dane.load_next_key(root)
    if keys is None or keys.next is None or upcoming is None:
        raise UsageError(
            "there is no certificate or next key yet", hint="run `mailstack render` first"
        )
    published = _published(stack, resolver)
    wanted = dane.tlsa_data(keys.next)
    if published and wanted not in published and not force:
        raise UsageError(
            f"the next key's record is not published: {dane.tlsa_name(config.hostname)}. "
            f"IN TLSA {wanted} (published: {'; '.join(published)})",
            hint="publish it, wait twice its TTL, then run this again (--force breaks DANE "
            "for senders until DNS serves it)",
        )
    if config.tls.mode == "acme":
        reloaded = acme.renew(stack, force=True, key=upcoming).reloaded
    else:
        names = dnsrecords.certificate_names(config, dkim.signing_domains(root))
        certs.ensure_selfsigned(root, config.hostname, names, key=upcoming)
        running = stack.compose.running_services()
        reloaded = tuple(certreload.reload_daemons(stack, running)) if running else ()
    fresh = dane.replace_next_key(root)
    return RolloverResult(
        dane.tlsa_data(keys.current),
        wanted,
        dane.tlsa_data(dane.spki_sha256(fresh.public_key())),
        tuple(published),
        reloaded,
        config.hostname,
    )


def _published(stack: Stack, resolver: str | None) -> list[str]:
    """The TLSA data DNS serves for port 25 now (the stack's resolver, its cache flushed,
    unless another is given)."""
    hostname = stack.config.hostname
    lookup = dnscheck.stack_lookup(stack, resolver, [hostname])
    found = lookup.records(dane.tlsa_name(hostname), "TLSA")
    return [dane.normalised(rdata) for rdata in found]
