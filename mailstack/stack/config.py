"""The operator's file, mailstack.yaml: the whole model (Config), reading it, and validation
errors turned into one clear line each.

Every value that can reach a generated file is checked by the model, so no input can inject
a line or a directive into a daemon's configuration. Its parts: config_values.py (the checks
of one value), config_sections.py (the stack's sections), config_policy.py (mail policy).
"""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from mailstack.errors import ConfigError
from mailstack.stack.config_policy import Dns, Policy
from mailstack.stack.config_sections import (
    Antivirus,
    Backup,
    Cluster,
    Features,
    Images,
    Logs,
    Mailboxes,
    Monitoring,
    Network,
    Ports,
    Relay,
    Section,
    Tls,
    Update,
    Webmail,
)
from mailstack.stack.config_types import Domain, ProjectName, TimeZone

CONFIG_FILE = "mailstack.yaml"
MAX_CONFIG_BYTES = 64 * 1024


# --- the model -------------------------------------------------------------------------------


class Config(Section):
    hostname: Domain = Field(description="the mail server's fully qualified name (MX target)")
    domain: Domain = Field(description="the first mail domain")
    project: ProjectName = Field(
        default="mailstack",
        description="Compose project name: fixes the names of containers, networks, volumes",
    )
    mode: Literal["production", "sandbox"] = Field(
        default="production",
        description="sandbox: DNS only from a local zone, no recursion, no RBLs or downloads, "
        "all outbound mail to an internal sink (staging and tests)",
    )
    timezone: TimeZone = Field(default="UTC", description="time zone of logs and the daemons")
    features: Features = Field(default_factory=Features)
    antivirus: Antivirus = Field(default_factory=Antivirus)
    webmail: Webmail = Field(default_factory=Webmail)
    network: Network = Field(default_factory=Network)
    tls: Tls = Field(default_factory=Tls)
    backup: Backup = Field(default_factory=Backup)
    update: Update = Field(default_factory=Update)
    images: Images = Field(default_factory=Images)
    logs: Logs = Field(default_factory=Logs)
    policy: Policy = Field(default_factory=Policy)
    mailboxes: Mailboxes = Field(default_factory=Mailboxes)
    dns: Dns = Field(default_factory=Dns)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    relay: Relay = Field(default_factory=Relay)
    cluster: Cluster = Field(default_factory=Cluster)

    @model_validator(mode="after")
    def _mfa_required_has_its_enforcer(self) -> Config:
        # The webmail asks the admin service for the code; without it nobody could enforce it.
        if self.policy.mfa == "required" and not self.features.admin:
            raise ValueError(
                "policy.mfa: required needs features.admin: true (the webmail checks the "
                "code through the admin service)"
            )
        return self

    @model_validator(mode="after")
    def _cluster_networks_apart(self) -> Config:
        # On a cluster every task also sits on docker_gwbridge, and links are networks of
        # their own: an overlap would make the node's resolver or a listener's one client
        # unreachable, or admit the wrong network.
        if not self.cluster.nodes:
            return self
        taken = {
            f"network.{key}": ipaddress.ip_network(getattr(self.network, key))
            for key in ("frontend_subnet", "backend_subnet")
        }
        for key in ("gwbridge_subnet", "link_subnet"):
            subnet = ipaddress.ip_network(getattr(self.cluster, key))
            for other, network in taken.items():
                if subnet.overlaps(network):
                    raise ValueError(f"cluster.{key} overlaps {other}")
            taken[f"cluster.{key}"] = subnet
        return self

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> Config:
        # The metrics port shares the host with the published mail and web ports: on the
        # same address (or with those on every address) one port number cannot serve both.
        monitoring, network = self.monitoring, self.network
        if not monitoring.metrics:
            return self
        shared = network.bind_ipv4 in ("0.0.0.0", monitoring.metrics_address)  # noqa: S104  # compared, not bound
        clash = [
            name for name, port in published_ports(self).items() if port == monitoring.metrics_port
        ]
        subnet = ipaddress.ip_network(monitoring.metrics_subnet)
        for key in ("frontend_subnet", "backend_subnet"):
            if subnet.overlaps(ipaddress.ip_network(getattr(network, key))):
                raise ValueError(f"monitoring.metrics_subnet overlaps network.{key}")
        if shared and clash:
            raise ValueError(
                f"monitoring.metrics_port {monitoring.metrics_port} is network.ports."
                f"{clash[0]} on the same address; allowed: a port no published service uses"
            )
        return self


def published_ports(config: Config) -> dict[str, int]:
    """The ports the stack publishes on the host, by network.ports key: POP3's only when on."""
    ports = config.network.ports.model_dump()
    if not config.features.pop3:
        del ports["pop3s"]
    if not config.features.pop3_starttls:
        del ports["pop3"]
    return ports


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate mailstack.yaml; every problem becomes one ConfigError line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(path.name, "", None, f"cannot be read ({e.strerror})") from None
    return parse_config(raw, source=path.name)


def parse_config(raw: bytes, source: str = CONFIG_FILE) -> Config:
    data = parse_yaml(raw, source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", None, "must be a mapping of keys to values")
    return validate_config(data, source)


def parse_yaml(raw: bytes, source: str) -> Any:
    """Safe YAML: bounded size, no object construction, no aliases (no billion laughs)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", None, f"is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) and event.start_mark is not None:
                mark = event.start_mark
                raise ConfigError(
                    source,
                    "",
                    None,
                    f"line {mark.line + 1}, column {mark.column + 1}: "
                    "YAML aliases (*name) are not allowed",
                )
        return yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigError(source, "", None, "is not UTF-8 text") from None
    except yaml.MarkedYAMLError as e:
        marked = e.problem_mark or e.context_mark
        where = f"line {marked.line + 1}, column {marked.column + 1}: " if marked else ""
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(source, "", None, f"{where}YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, "", None, f"YAML syntax error: {e}") from None


def validate_config(data: dict[str, Any], source: str = CONFIG_FILE) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = explain(errors[0])
        error = ConfigError(source, first[0], first[1], first[2])
        if len(errors) > 1:
            error.hint = f"{len(errors) - 1} more problem(s) after this one"
        raise error from None


def explain(error: Any) -> tuple[str, object, str]:  # noqa: PLR0911  # one case per error kind
    """Turn one pydantic error into (key path, bad value, what is allowed)."""
    location = [str(part) for part in error["loc"]]
    key = ".".join(location)
    value = error.get("input")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return key, None, "is not a known key" + _did_you_mean(location)
    if kind == "missing":
        return key, None, "is required"
    if kind == "value_error":
        return key, value if not isinstance(value, dict) else None, str(ctx.get("error", ""))
    if kind in ("less_than_equal", "greater_than_equal") and location[-1] in Ports.model_fields:
        return key, value, "is not a port (1–65535)"
    if kind == "greater_than_equal":
        return key, value, f"is too small (at least {ctx.get('ge')})"
    if kind == "less_than_equal":
        return key, value, f"is too large (at most {ctx.get('le')})"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return key, value, f"is not one of: {expected}"
    simple = {
        "bool_type": "is not true or false",
        "int_type": "is not a whole number",
        "string_type": "is not text",
        "model_type": "is not a mapping of keys to values",
        "dict_type": "is not a mapping of keys to values",
    }
    if kind in simple:
        return key, value, simple[kind]
    return key, value, str(error.get("msg", "is not valid"))


def _did_you_mean(location: list[str]) -> str:
    model: type[BaseModel] = Config
    for part in location[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(location[-1], list(model.model_fields), n=1, cutoff=0.6)
    allowed = ", ".join(model.model_fields)
    return f" (did you mean {close[0]}?)" if close else f" (known keys: {allowed})"
