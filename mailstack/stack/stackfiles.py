"""Creating a stack directory and re-rendering it (the `init`, `render` and `resolve` work)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack import __version__, services
from mailstack.errors import StackExists, UsageError
from mailstack.mailauth import dkim, dnsrecords
from mailstack.runtime import lifecycle
from mailstack.runtime.hostcheck import (
    HostFact,
    admin_default,
    antivirus_default,
    check_host,
    memory_bytes,
    webmail_default,
)
from mailstack.stack.config import Config, published_ports, validate_config
from mailstack.stack.configfile import commented_yaml
from mailstack.stack.render import RenderInputs, render_stack
from mailstack.stack.secrets import SecretsReport, ensure_backup_password, ensure_secrets
from mailstack.stack.stackdir import RenderReport, Stack, StackDir, atomic_write
from mailstack.tls import acme, certreload, certs, dane


@dataclass(frozen=True)
class InitResult:
    stack_dir: Path
    config_backup: Path | None
    secrets: SecretsReport
    render: RenderReport
    host_facts: tuple[HostFact, ...]
    backup_password_created: bool = False


def initial_config(hostname: str, domain: str, extra: dict[str, Any] | None = None) -> Config:
    """A Config for a new stack; antivirus, webmail and admin on where the host has the memory."""
    memory = memory_bytes()
    data: dict[str, Any] = {
        "hostname": hostname,
        "domain": domain,
        "features": {
            "antivirus": antivirus_default(memory),
            "webmail": webmail_default(memory),
            "admin": admin_default(memory),
        },
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if data.get("mode") == "sandbox" and "policy" not in data:
        # Staging and tests want an answer at once; the operator may turn it back on.
        data["policy"] = {"spam": {"greylisting": False}}
    return validate_config(data, source="init")


def init_stack(
    root: Path,
    config: Config,
    *,
    force: bool = False,
    now: datetime.datetime | None = None,
    check_ports: bool = True,
) -> InitResult:
    stack = StackDir(root)
    backup: Path | None = None
    if stack.is_initialized():
        if not force:
            raise StackExists(stack.root)
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")  # local time for humans
        backup = stack.root / f"mailstack.yaml.{stamp}.bak"
        backup.write_bytes(stack.config_path.read_bytes())
    stack.root.mkdir(parents=True, exist_ok=True)
    facts: list[HostFact] = []
    if check_ports:
        facts = check_host(
            config.hostname, published_ports(config).values(), config.network.bind_ipv4
        )
    atomic_write(stack.config_path, commented_yaml(config).encode(), 0o640)
    secrets = ensure_secrets(stack.root)
    backup_password = ensure_backup_password(stack.root)
    report = render(stack.root, config=config)
    return InitResult(stack.root, backup, secrets, report, tuple(facts), backup_password)


def install_certificate(root: Path, config: Config) -> None:
    """tls/ for the configured mode. acme: the stack's own certificate stands in until the
    first ACME one is installed (`up` obtains it: the front must serve the challenge first)."""
    names = dnsrecords.certificate_names(config, dkim.signing_domains(root))
    if config.tls.mode == "selfsigned":
        certs.ensure_selfsigned(root, config.hostname, names)
    elif config.tls.mode == "acme":
        served = certs.load_certificate(root / certs.TLS_DIR / "cert.pem")
        stack_ca = certs.load_certificate(root / certs.TLS_DIR / "ca.pem")
        if served is None or (stack_ca is not None and served.issuer == stack_ca.subject):
            certs.ensure_selfsigned(root, config.hostname, names)
        acme.prepare_directories(root)
    elif config.tls.cert_file and config.tls.key_file:  # manual (the model requires both)
        certs.install_manual(root, config.tls.cert_file, config.tls.key_file, config.hostname)
    if config.tls.mode != "manual":  # the operator's own key has no next one of ours
        dane.ensure_next_key(root)
    certs.install_trusted(root, None if config.tls.mode == "selfsigned" else config.tls.ca_file)


def render(root: Path, config: Config | None = None) -> RenderReport:
    """Re-render the stack from mailstack.yaml, merging operator edits (README: "How your
    edits survive")."""
    stack = StackDir(root)
    config = config or stack.load_config()
    ensure_secrets(stack.root)
    install_certificate(stack.root, config)
    stack.ensure_override_dirs()
    # The first domain signs from the first `up`; keys of later domains come from `domain add`.
    dkim.ensure_key(stack.root, config.domain)
    if config.policy.dkim.ed25519:  # a second key for every domain that signs
        for domain in dkim.read_selectors(stack.root):
            dkim.ensure_ed25519_key(stack.root, domain)
    keys = tuple(dkim.published_keys(stack.root, ed25519_on=config.policy.dkim.ed25519))
    rendered = render_stack(RenderInputs(config, __version__, dkim_keys=keys))
    inputs = {
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "dkim_keys": [f"{key.domain} {key.selector} {key.public_key}" for key in keys],
    }
    return stack.apply_render(rendered, __version__, inputs)


@dataclass(frozen=True)
class DomainKeyResult:
    key: dkim.DkimKey
    created: bool
    restarted: tuple[str, ...]  # took the new key or config by a restart
    reloaded: tuple[str, ...] = ()  # took a certificate with the domain's web names
    acme_pending: bool = False  # tls.mode acme: the names come with the next renewal
    config_reloaded: tuple[str, ...] = ()  # took their new config (the domain's web names)

    def __str__(self) -> str:
        made = "created" if self.created else "kept"
        line = f"DKIM key {self.key.selector} for {self.key.domain} {made}"
        if self.restarted:
            line += f"; restarted {' and '.join(self.restarted)} to use it"
        line += f"\npublish: {self.key.zone_line}"
        if self.reloaded:
            line += (
                f"\nthe certificate now covers its web names: reloaded {', '.join(self.reloaded)}"
            )
        if self.config_reloaded:
            line += (
                f"\nreloaded {' and '.join(self.config_reloaded)}: it now answers the web names "
                f"of {self.key.domain}"
            )
        if self.acme_pending:
            line += (
                f"\nthe certificate gets the web names of {self.key.domain} at the next renewal "
                "(`mailstack tls renew` once `mailstack dns records` are published)"
            )
        return line


def publish_domain_key(stack: Stack, domain: str) -> DomainKeyResult:
    """A domain's DKIM key after `domain add`: made if missing, rendered into the stack, and
    taken up by every running service whose config it changed (rspamd signs with it and
    knows the domain as hosted, the front answers its web names, the sandbox resolver serves
    its records), each by a reload where it has one, else a restart."""
    made = dkim.ensure_key(stack.dir.root, domain)
    report = render(stack.dir.root, stack.config)
    if report.conflicts:
        raise UsageError(
            f"the DKIM key for {domain} is made, but the re-render has "
            f"{len(report.conflicts)} conflict(s); rspamd does not sign with it yet",
            hint="resolve each conflict (`mailstack render` lists them), then "
            "`mailstack restart rspamd`",
        )
    running = stack.compose.running_services()
    changed = report.services_with_changed_config()
    if made.created:  # rspamd copies the keys in dkim/ when it starts
        changed.add(services.RSPAMD.name)
    restarted, config_reloaded = lifecycle.take_changed_config(stack, changed, running)
    reloaded = (
        certreload.reload_if_changed(
            stack, running, lambda names: lifecycle.wait_healthy(stack, names, 300, None)
        )
        if running
        else []
    )
    acme_pending = stack.config.tls.mode == "acme" and made.created
    return DomainKeyResult(
        made.key,
        made.created,
        tuple(restarted),
        tuple(reloaded),
        acme_pending,
        tuple(config_reloaded),
    )


def resolve(root: Path, paths: list[str]) -> list[str]:
    return StackDir(root).require().resolve(paths)
