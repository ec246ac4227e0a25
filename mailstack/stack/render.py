"""Config + templates -> the generated files of a stack directory (pure: writes nothing).

The same inputs always give the same bytes, so a re-render with no change changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from mailstack import services
from mailstack.images import imagerefs
from mailstack.mailauth import dnsrecords
from mailstack.mailauth.dkim import DkimKey
from mailstack.resources import templates_dir
from mailstack.stack.config import Config
from mailstack.stack.secrets import SECRET_NAMES, relay_password_name
from mailstack.units import parse_duration

# Templates whose path starts with one of these are rendered only when the service runs.
OPTIONAL_TREES: dict[str, Callable[[Config], bool]] = {
    **{
        f"config/{service.name}/": service.runs_when
        for service in services.SERVICES
        if service.runs_when is not None
    },
    # Spam learning's IMAPSieve scripts: they need Sieve extensions only that feature enables.
    "config/dovecot/sieve/learn/": lambda config: config.features.spam_learning,
    # relay.by_sender_domain's SASL user names, read by Postfix's entrypoint.
    "config/postfix/relay-sender-users": lambda config: any(
        e.username for e in config.relay.by_sender_domain
    ),
}

# Where each daemon's override point is: files there are the operator's, never written.
OVERRIDE_POINTS: dict[str, str] = {
    service.name: service.override_point
    for service in services.SERVICES
    if service.override_point is not None
}

# The SMTP port: a next hop on it carries no port suffix in Postfix's TLS policy lookups.
SMTP_PORT = 25

# Comment syntax by file name ending; files with no comment syntax get no header.
_COMMENT_PREFIX: dict[str, str] = {
    ".sql": "--", ".lua": "--", ".php": "//", ".json": "", ".ini": ";", ".js": "//",
}  # fmt: skip

# Dovecot's doors for Postfix (LMTP, SASL, quota policy): Unix sockets in a volume that only
# the dovecot and postfix containers mount, instead of ports every container could reach.
DOVECOT_POSTFIX_SOCKETS = PurePosixPath("/run/dovecot-postfix")

# Sandbox-only test data, never rendered in production: a foreign domain whose DMARC policy
# is p=reject and whose SPF allows no host, so a test can show that forged mail from it is
# refused. (owner name, type, data) like every sandbox record.
SANDBOX_TEST_DOMAIN_DMARC_REJECT = "reject.example.test"
SANDBOX_TEST_RECORDS: tuple[tuple[str, str, str], ...] = (
    (SANDBOX_TEST_DOMAIN_DMARC_REJECT, "TXT", '"v=spf1 -all"'),
    (f"_dmarc.{SANDBOX_TEST_DOMAIN_DMARC_REJECT}", "TXT", '"v=DMARC1; p=reject"'),
)


@dataclass(frozen=True)
class RenderInputs:
    """Everything a render depends on; recorded beside the render for later merges."""

    config: Config
    version: str
    # The public halves of the DKIM keys in <stack>/dkim (mailstack.mailauth.dkim.load_keys): the
    # sandbox zone publishes them so verifiers inside the stack can check signatures.
    dkim_keys: tuple[DkimKey, ...] = ()


def render_stack(inputs: RenderInputs, source: Path | None = None) -> dict[str, bytes]:
    """Render every template that applies to this config: {relative path: content}."""
    root = source or templates_dir()
    environment = _environment(root)
    context = build_context(inputs)
    rendered: dict[str, bytes] = {}
    for template_path in sorted(_template_paths(root)):
        if not _applies(template_path, inputs.config):
            continue
        template = environment.get_template(template_path)
        if not _back_end_only(template_path, inputs.config):
            body = template.render(context)
            rendered[template_path] = with_header(template_path, body).encode()
        for output_path, role in _role_copies(template_path, inputs.config):
            body = template.render({**context, **dovecot_role_context(inputs.config, role)})
            rendered[output_path] = with_header(output_path, body).encode()
    return rendered


def dovecot_role(config: Config) -> str:
    """What config/dovecot/ configures: the whole of Dovecot on one host; on a cluster the
    edge proxy, while config/mailbox/ (the same templates) configures the back ends."""
    return "proxy" if config.cluster.nodes else "single"


def dovecot_role_context(config: Config, role: str) -> dict[str, Any]:
    """What Dovecot's templates read of their role: the role, and the edge proxy's SQL
    additions (empty for any other role)."""
    passed_on = mailbox_back_end(config) if role == "proxy" else _NOT_PASSED_ON
    return {"dovecot_role": role, "mailbox_back_end": passed_on}


# Dovecot's templates: config/dovecot/ (one host's Dovecot, or a cluster's edge proxy).
_DOVECOT_TREE = f"config/{services.DOVECOT.name}/"
# What only a Dovecot that holds mailboxes reads: the global Sieve scripts, spam learning's
# controller address and the usage and sign-ins dict. A cluster's edge proxy has none.
_MAILBOX_FILES = ("sieve/", "rspamd-learn.conf", "dovecot-sql-dict.conf.ext")


def _back_end_only(template_path: str, config: Config) -> bool:
    return (
        dovecot_role(config) == "proxy"
        and template_path.startswith(_DOVECOT_TREE)
        and template_path.removeprefix(_DOVECOT_TREE).startswith(_MAILBOX_FILES)
    )


def _role_copies(template_path: str, config: Config) -> list[tuple[str, str]]:
    """Further outputs of one template: on a cluster, config/dovecot/X is rendered again as
    config/mailbox/X for the mailbox back ends (services.MAILBOX)."""
    if not template_path.startswith(_DOVECOT_TREE) or not services.MAILBOX.runs_in(config):
        return []
    copy = f"config/{services.MAILBOX.name}/" + template_path.removeprefix(_DOVECOT_TREE)
    return [(copy, "mailbox")]


def build_context(inputs: RenderInputs) -> dict[str, Any]:
    """The render context: derived values computed here so templates stay dumb."""
    config = inputs.config
    backend = ipaddress.ip_network(config.network.backend_subnet)
    frontend = ipaddress.ip_network(config.network.frontend_subnet)
    registry = config.images.registry
    sandbox = config.mode == "sandbox"
    attachments = config.policy.attachments
    allowed = set(attachments.allowed_extensions)
    image_prefix = f"{registry}/mailstack" if registry else "mailstack"
    links = link_context(config)
    return {
        "config": config,
        "version": inputs.version,
        "sandbox": sandbox,
        # ${MAILSTACK_IMAGE_X:-…}: the tag follows the image's packages, recorded in .env by
        # each build (mailstack.images.imagerefs), so a security update never touches this file.
        "images": {
            name: imagerefs.compose_reference(name, image_prefix) for name in services.IMAGES
        },
        "pull_policy": "missing" if registry else "never",
        # cap_add of each service that gets capabilities back (the registry's list).
        "cap_add": {
            service.name: f"[{', '.join(service.capabilities)}]"
            for service in services.SERVICES
            if service.capabilities
        },
        "secrets": sorted([*SECRET_NAMES, *relay_secrets(config)]),
        "relay_secrets": relay_secrets(config),
        "relay_by_sender": relay_by_sender(config),
        "resolver_ip": services.fixed_address(services.RESOLVER, backend),
        # Dovecot's fixed back-end address: Postfix's internal listener (10587) relays for it alone.
        "dovecot_backend_ip": services.fixed_address(services.DOVECOT, backend),
        # Listeners that admit one client (services.LINKS): its address or network, and the
        # name it reaches the server by; on a cluster each link is a network of its own.
        "links": links,
        "link_networks": link_networks(config),
        "frontend_resolver_ip": services.fixed_address(services.RESOLVER, frontend),
        "dovecot_sockets": {
            "dir": str(DOVECOT_POSTFIX_SOCKETS),
            "lmtp": str(DOVECOT_POSTFIX_SOCKETS / "lmtp"),
            "auth": str(DOVECOT_POSTFIX_SOCKETS / "auth"),
            "quota_status": str(DOVECOT_POSTFIX_SOCKETS / "quota-status"),
        },
        # Where the front passes requests: fixed addresses on one host, on a cluster the
        # variables nginx.conf sets from the links' names (resolved per request).
        "front_targets": front_targets(links),
        "front_upstreams": front_upstreams(config, links),
        # Where Postfix reaches them: the sockets on one host, the link on a cluster.
        "dovecot_for_postfix": dovecot_for_postfix(config, links),
        "dovecot_auth_for_dav_port": DOVECOT_AUTH_FOR_DAV_PORT,
        "doveadm_port": services.MAILBOX_DOVEADM_PORT,
        # config/dovecot/'s role (config/mailbox/ is rendered with "mailbox") and, for the
        # edge proxy, how its SQL names each user's back end (docs/cluster.md).
        **dovecot_role_context(config, dovecot_role(config)),
        # compose.yaml's Dovecot services, by role: one host's one; a cluster's edge proxy
        # (dovecot) and back ends (mailbox).
        "dovecot_services": ["proxy", "mailbox"] if config.cluster.nodes else ["single"],
        # Domains that also sign with Ed25519 (policy.dkim.ed25519; keys made by stack.render).
        "dkim_ed25519": [key for key in inputs.dkim_keys if key.key_type == "ed25519"],
        # Every mail domain (alias domains too: each has a DKIM key from `domain add`): mail
        # from outside claiming one of them must pass DMARC (rspamd force_actions.conf).
        "hosted_domains": sorted({config.domain, *(key.domain for key in inputs.dkim_keys)}),
        # Docker's own picks (every container without a fixed address) come from here, above
        # every fixed address: after many recreations its allocator would otherwise reach one
        # (.24, .53, .80, .81, .82, .84) and a service could not start.
        "frontend_dynamic_range": dynamic_range(frontend),
        "backend_dynamic_range": dynamic_range(backend),
        "backend_gateway": str(backend.network_address + 1),
        "frontend_gateway": str(frontend.network_address + 1),
        # Where HTTP redirects to: the HTTPS port is left out when it is the default.
        "https_origin": f"https://{config.hostname}"
        + ("" if config.network.ports.https == 443 else f":{config.network.ports.https}"),
        # The front's fixed address; in sandbox mode it is the host's "public" address.
        "front_ip": dnsrecords.front_address(config),
        # Roundcube: fixed addresses, so that PHP-FPM admits only the front, PostgreSQL only
        # this container, and Dovecot believes the browser's address (x-originating-ip) only
        # from here.
        "webmail": {
            "path": config.webmail.path,
            # At "/" the webmail takes the place of the landing page.
            "at_root": config.features.webmail and config.webmail.path == "/",
            "frontend_ip": services.fixed_address(services.WEBMAIL, frontend),
            "backend_ip": services.fixed_address(services.WEBMAIL, backend),
        },
        # The admin service: the front proxies /api/v1/ to its fixed address, PostgreSQL
        # admits its role only from its fixed back-end address.
        "admin": {
            "frontend_ip": services.fixed_address(services.ADMIN, frontend),
            "backend_ip": services.fixed_address(services.ADMIN, backend),
        },
        # features.dav: the front proxies /dav/ to Radicale's fixed address.
        "dav": {"frontend_ip": services.fixed_address(services.DAV, frontend)},
        # monitoring.metrics: the metrics service's own network (the one its port is
        # published from), its fixed address there, and where it collects.
        "metrics": {
            "ip": services.fixed_address(services.METRICS, config.monitoring.metrics_subnet),
            # PostgreSQL admits its monitoring login from this address only.
            "backend_ip": services.fixed_address(services.METRICS, backend),
            "gateway": str(ipaddress.ip_network(config.monitoring.metrics_subnet)[1]),
            "dynamic_range": dynamic_range(ipaddress.ip_network(config.monitoring.metrics_subnet)),
            # check health's gauges (monitoring.schedule): stale after three missed runs.
            "health_max_age": 3 * 60 * minutes + 60
            if (minutes := config.monitoring.schedule_minutes)
            else None,
        },
        # policy.mfa_protocols (docs/mfa.md): whether Dovecot refuses the account password of
        # a mailbox with a second factor, and the webmail's addresses, from which it is still
        # accepted because the webmail asks for the code (its plugin, through the admin
        # service: with the admin service off nobody would, so then nowhere).
        "mfa_doors": {
            "app_passwords_only": config.policy.mfa_protocols == "app_passwords_only",
            "webmail_addresses": webmail_addresses(config, links)
            if config.features.webmail and config.features.admin
            else [],
        },
        # Whether clients inside the stack verify its certificate against a CA file of the
        # stack's: its own CA (tls/ca.pem, mode selfsigned) or tls.ca_file (tls/trusted.pem);
        # else against the system's trusted CAs.
        "stack_ca": config.tls.mode == "selfsigned" or config.tls.ca_file is not None,
        "trusted_ca": "ca.pem"
        if config.tls.mode == "selfsigned" or config.tls.ca_file is None
        else "trusted.pem",
        # Client autoconfiguration (Thunderbird, Outlook, Apple): what the front answers.
        "autoconfig": {
            "imaps": config.network.ports.imaps,
            "pop3s": config.network.ports.pop3s if config.features.pop3 else 0,
            "submissions": config.network.ports.submissions,
            "submission": config.network.ports.submission,
            "dav": config.features.dav,
            "https": config.network.ports.https,
        },
        # The MTA-STS policy the front serves at https://mta-sts.<domain>/.
        "mta_sts_policy": dnsrecords.mta_sts_policy(config).lines,
        # The only names the front answers on 443 (each mail domain's MTA-STS and autoconfig
        # hosts); any other Host gets 421, never the webmail.
        "front_names": front_names(config, [key.domain for key in inputs.dkim_keys]),
        # Sandbox DNS: the zones the stack's resolver serves itself and their records as
        # (owner name, type, data in zone-file form): what `mailstack dns records` prints
        # for the first domain, so `check dns` passes there. The frontend gateway, the
        # address the host's clients reach the stack from, has a forward-confirmed name of
        # its own, as a well-run sending host would.
        "sandbox_zones": sorted({config.domain, config.hostname}),
        "sandbox_records": [
            *dnsrecords.sandbox_zone(config, inputs.dkim_keys),
            (f"sandbox-client.{config.domain}", "A", str(frontend.network_address + 1)),
            (
                (frontend.network_address + 1).reverse_pointer,
                "PTR",
                f"sandbox-client.{config.domain}.",
            ),
            *(SANDBOX_TEST_RECORDS if sandbox else ()),
        ],
        # Dovecot runs only the first quota_warning that matches: the highest comes first.
        "quota_warnings": sorted(config.mailboxes.quota_warnings, reverse=True),
        # Brute-force defence (the bans service): durations in seconds for bansd.
        "bans": {
            "window": parse_duration(config.policy.bans.window),
            "ban_time": parse_duration(config.policy.bans.ban_time),
            "max_delay": parse_duration(config.policy.bans.max_delay),
        },
        # Attachment policy: the operator's allowlist wins over the block list.
        "blocked_extensions": sorted(set(attachments.blocked_extensions) - allowed),
        "allowed_extensions": sorted(allowed),
    }


def link_subnets(config: Config) -> dict[services.Link, ipaddress.IPv4Network]:
    """On a cluster, each link's network: the next /27 (services.LINK_PREFIX) of
    cluster.link_subnet, in the order of services.LINKS (so adding a link at the end moves
    none); on one host none."""
    if not config.cluster.nodes:
        return {}
    pool = ipaddress.IPv4Network(config.cluster.link_subnet)  # check_subnet: IPv4 alone
    return dict(zip(services.LINKS, pool.subnets(new_prefix=services.LINK_PREFIX), strict=False))


def link_context(config: Config) -> dict[str, dict[str, Any]]:
    """{client_server: what the templates need of a link}: the network the listener admits
    (address, prefix and CIDR) and the name the client reaches the server by."""
    subnets = link_subnets(config)
    found: dict[str, dict[str, Any]] = {}
    for link in services.LINKS:
        network = getattr(config.network, f"{link.over}_subnet")
        subnet = subnets.get(link)
        host = link.alias
        if subnet is None and (link.cluster_only or services.named(link.client).fixed_host is None):
            continue  # one host: the pair's own way, or no such pair (services.LINKS)
        if subnet is None:  # one host: the client's fixed address, the server's name or address
            address = services.fixed_address(services.named(link.client), network)
            subnet = ipaddress.IPv4Network(f"{address}/32")
            host = link.host_name or services.fixed_address(services.named(link.server), network)
        found[f"{link.client}_{link.server}"] = {
            "admits": str(subnet),
            # In rspamd's address lists: the bare address for one address.
            "listed": str(subnet.network_address) if subnet.prefixlen == 32 else str(subnet),
            "address": str(subnet.network_address),
            "prefix": subnet.prefixlen,
            # Every address a client may have, for listeners that take no CIDR (PHP-FPM).
            "hosts": [str(address) for address in subnet.hosts()],
            "host": host,
        }
    return found


# The edge proxy's listeners for Postfix on a cluster's link (the sockets' TCP twins).
DOVECOT_FOR_POSTFIX_PORTS = {"lmtp": 24, "auth": 12345}
# Dovecot's auth for Radicale on a cluster's link (one host: a socket).
DOVECOT_AUTH_FOR_DAV_PORT = 12346


def dovecot_for_postfix(config: Config, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where Postfix reaches Dovecot's LMTP, SASL and quota policy (as main.cf writes each):
    Unix sockets on a volume of the two on one host; on a cluster Postfix runs on every edge
    node, so the link's name and ports, bound by Dovecot to its address there alone."""
    if not config.cluster.nodes:
        return {
            "lmtp": f"unix:{DOVECOT_POSTFIX_SOCKETS / 'lmtp'}",
            "auth": str(DOVECOT_POSTFIX_SOCKETS / "auth"),
            "quota_status": f"unix:{DOVECOT_POSTFIX_SOCKETS / 'quota-status'}",
            "ports": {},
        }
    host = links["postfix_dovecot"]["host"]
    return {
        **{name: f"inet:{host}:{port}" for name, port in DOVECOT_FOR_POSTFIX_PORTS.items()},
        # The edge proxy holds no mailbox to ask: the user's back end refuses an over-quota
        # delivery itself (LMTP's RCPT), and Postfix bounces it (docs/cluster.md).
        "quota_status": "",
        "ports": DOVECOT_FOR_POSTFIX_PORTS,
    }


# The protocols the edge proxy passes on to a back end (Dovecot's service names, %s).
PROXIED_PROTOCOLS = ("imap", "pop3", "sieve", "lmtp")
# A Dovecot that is no proxy adds nothing to its queries.
_NOT_PASSED_ON = {"columns": "", "delivery": ""}


def mailbox_back_end(config: Config) -> dict[str, str]:
    """What the edge proxy's SQL passdb queries add (docs/cluster.md): the columns that send
    a login or a delivery on to the user's back end, the alias of the mailbox service on
    their home node on the proxy's link (the first mailbox node for a mailbox that names
    none; a cluster has one at least), and the condition that lets a delivery past the
    second-factor door (it asks for no password)."""
    link = services.PROXY_TO_BACK_ENDS
    # A node's name is one DNS label (config_values.check_node_name): nothing to escape.
    home = (
        "COALESCE((SELECT back_end FROM dovecot_back_ends WHERE username = '%u'), "  # noqa: S608
        f"'{config.cluster.mailbox_nodes[0]}')"
    )
    # services.Link.node_alias, spelt in SQL.
    alias = " || ".join((f"'{link.server}-'", home, f"'-for-{link.client}'"))
    proxied = "'%s' IN (" + ", ".join(f"'{name}'" for name in PROXIED_PROTOCOLS) + ")"
    fields = {"proxy": "'y'", "host": alias, "pass": "'proxied'"}
    columns = "".join(
        f", \\\n  CASE WHEN {proxied} THEN {value} END AS {name}" for name, value in fields.items()
    )
    return {"columns": columns, "delivery": " OR '%s' = 'lmtp'"}


# What the front passes requests to, by the port each listens on.
FRONT_UPSTREAM_PORTS = {"webmail": 9000, "admin": 8080, "dav": 5232}


def front_targets(links: dict[str, dict[str, Any]]) -> dict[str, str]:
    """HOST:PORT of each of the front's upstreams: a fixed address on one host, the link's
    name on a cluster."""
    return {
        name: f"{links[f'front_{name}']['host']}:{port}"
        for name, port in FRONT_UPSTREAM_PORTS.items()
    }


def front_upstreams(config: Config, links: dict[str, dict[str, Any]]) -> dict[str, str]:
    """nginx's fastcgi_pass/proxy_pass targets: the addresses themselves on one host; on a
    cluster the variables nginx.conf sets from front_targets (asked again per request)."""
    if config.cluster.nodes:
        return {name: f"${name}_upstream" for name in FRONT_UPSTREAM_PORTS}
    return front_targets(links)


def webmail_addresses(config: Config, links: dict[str, dict[str, Any]]) -> list[str]:
    """Every address the webmail may reach Dovecot from: its two fixed addresses on one host,
    its link's on a cluster."""
    if config.cluster.nodes:
        return list(links["webmail_dovecot"]["hosts"])
    return [
        services.fixed_address(services.WEBMAIL, config.network.backend_subnet),
        services.fixed_address(services.WEBMAIL, config.network.frontend_subnet),
    ]


def link_networks(config: Config) -> dict[str, Any]:
    """On a cluster, the links' networks ({name: subnet}) and, per service, the ones it joins
    ({service: {network: its aliases there}}); both empty on one host."""
    subnets = link_subnets(config)
    joins: dict[str, dict[str, list[str]]] = {}
    for link, _subnet in subnets.items():
        joins.setdefault(link.joined_by, {})[link.network] = []
        joins.setdefault(link.server, {})[link.network] = [link.alias]
    return {
        "networks": {link.network: str(subnet) for link, subnet in subnets.items()},
        "joins": joins,
    }


def dynamic_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The upper half of the network's first /24: where Docker picks addresses itself."""
    return str(ipaddress.ip_network(f"{network.network_address + 128}/25"))


def relay_secrets(config: Config) -> list[str]:
    """The relay passwords Postfix's container gets: relay.host's user's and each sender
    relay's with a user."""
    relay = config.relay
    names = [relay_password_name()] if relay.username is not None else []
    names += [relay_password_name(e.domain) for e in relay.by_sender_domain if e.username]
    return names


def relay_by_sender(config: Config) -> dict[str, Any]:
    """relay.by_sender_domain as main.cf's maps want it: each domain's next hop, the TLS
    policy table of the relays (keyed by the next hop as Postfix looks it up: no port suffix
    for 25), and the SASL user of each domain that has one."""
    entries = config.relay.by_sender_domain

    def nexthop(host: str, port: int) -> str:
        return f"[{host}]:{port}"

    def policy_key(host: str, port: int) -> str:
        return f"[{host}]" if port == SMTP_PORT else nexthop(host, port)

    keys = sorted({policy_key(e.host, e.port) for e in entries})
    return {
        "routes": [(e.domain, nexthop(e.host, e.port)) for e in entries],
        # One inline table, put before any other policy map: Postfix takes the first match.
        "tls_policy_map": "inline:{ "
        + ", ".join(f"{{ {key} = secure match=nexthop }}" for key in keys)
        + " }"
        if keys
        else "",
        "users": [(e.domain, e.username) for e in entries if e.username],
    }


def with_header(path: str, body: str) -> str:
    """Prefix a generated file with a header naming its override point."""
    prefix = comment_prefix(path)
    if prefix is None:
        return body
    parts = PurePosixPath(path).parts
    service = parts[1] if len(parts) > 2 and parts[0] == "config" else None
    override = OVERRIDE_POINTS.get(service or "")
    lines = [
        "Generated by mailstack from mailstack.yaml.",
        "Your edits to this file are kept: `mailstack render` and `update` merge them.",
    ]
    if override:
        lines.append(f"To change settings without editing it, use {override}.")
    header = "".join(f"{prefix} {line}\n" for line in lines)
    first, newline, rest = body.partition("\n")
    if first.startswith(("#!", "<?php")):
        return f"{first}{newline}{header}{rest}"
    return header + body


def comment_prefix(path: str) -> str | None:
    suffix = PurePosixPath(path).suffix
    if suffix in _COMMENT_PREFIX:
        return _COMMENT_PREFIX[suffix] or None
    return "#"


def _applies(template_path: str, config: Config) -> bool:
    return all(
        predicate(config)
        for prefix, predicate in OPTIONAL_TREES.items()
        if template_path.startswith(prefix)
    )


def _template_paths(root: Path) -> list[str]:
    # Names starting with "_" are partials (macros, includes), not output files.
    return [
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file()
        and not any(part.startswith("_") for part in path.relative_to(root).parts)
        and "__pycache__" not in path.parts
    ]


def _environment(root: Path) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701  # config files, not HTML; values are validated upstream
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["quote_yaml"] = quote_yaml
    return environment


def quote_yaml(value: object) -> str:
    """A double-quoted YAML scalar (values are validated; this is belt and braces)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def rendered_services(rendered: Mapping[str, bytes]) -> set[str]:
    return {
        PurePosixPath(path).parts[1]
        for path in rendered
        if path.startswith("config/") and len(PurePosixPath(path).parts) > 2
    }


def front_names(config: Config, domains: list[str]) -> dict[str, list[str]]:
    """The web names the front serves besides the hostname, by the server block that
    answers them: mta-sts.<domain>, and autoconfig./autodiscover.<domain>."""
    names = dnsrecords.certificate_names(config, domains)
    mta_sts = [name for name in names if name.startswith(f"{dnsrecords.MTA_STS_HOST}.")]
    return {"mta_sts": mta_sts, "autoconfig": [name for name in names if name not in mta_sts]}
