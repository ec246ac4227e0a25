"""Metrics (monitoring.metrics): the config's rules, what the render publishes and where, and
metricsd itself: the union it serves, its format, and the bearer token it demands."""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any, ClassVar

import pytest
import yaml

from mailstack.errors import ConfigError
from mailstack.resources import build_contexts_dir
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE


def _load_metricsd() -> ModuleType:
    path = build_contexts_dir() / "metrics" / "metricsd.py"
    spec = importlib.util.spec_from_file_location("metricsd", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["metricsd"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


metricsd = _load_metricsd()


def with_monitoring(**values: Any) -> dict[str, Any]:
    return {**REFERENCE, "monitoring": values}


def rendered(data: dict[str, Any]) -> dict[str, bytes]:
    return render_stack(RenderInputs(validate_config(data), "1"))


def compose(data: dict[str, Any]) -> dict[str, Any]:
    return dict(yaml.safe_load(rendered(data)["compose.yaml"]))


# --- configuration ---------------------------------------------------------------------------


def test_metrics_are_off_unless_asked_for() -> None:
    files = rendered(REFERENCE)
    services = compose(REFERENCE)["services"]
    assert "metrics" not in services
    assert "rspamd_metrics_password" not in services["rspamd"]["secrets"]
    assert b"inet_listener http" not in files["config/dovecot/dovecot.conf"]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"metrics": True, "metrics_address": "0.0.0.0"}, "is every address of the host"),  # noqa: S104  # the refused value
        ({"metrics": True, "metrics_port": 25}, "is network.ports.smtp on the same address"),
        ({"metrics": True, "metrics_subnet": "172.29.81.0/24"}, "overlaps network.backend_subnet"),
        ({"metrics": "yes"}, "is not true or false"),
        ({"metrics_port": 70000}, "monitoring.metrics_port"),
        ({"metrics_address": "mail.example.org"}, "monitoring.metrics_address"),
    ],
)
def test_a_bad_monitoring_value_is_one_line_naming_the_key(
    values: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config(with_monitoring(**values))
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_metrics_port_may_be_a_mail_ports_number_on_another_address() -> None:
    data = {
        **with_monitoring(metrics=True, metrics_port=443),
        "network": {"bind_ipv4": "192.0.2.10"},
    }
    ports = compose(data)["services"]["metrics"]["ports"]
    assert ports == ["127.0.0.1:443:9154"]


# --- what the render publishes and where -----------------------------------------------------


def test_the_endpoint_is_published_on_loopback_only_from_a_network_of_its_own() -> None:
    data = with_monitoring(metrics=True)
    stack = compose(data)
    metrics = stack["services"]["metrics"]
    assert metrics["ports"] == ["127.0.0.1:9154:9154"]
    assert metrics["networks"] == {
        "backend": {"ipv4_address": "172.29.81.83"},
        "metrics": {"ipv4_address": "172.29.82.83"},
    }
    assert "--address=172.29.82.83" in metrics["command"]
    # No other service joins its network, so no other container can reach the endpoint.
    on_it = [
        name
        for name, service in stack["services"].items()
        if "metrics" in (service.get("networks") or {})
    ]
    assert on_it == ["metrics"]
    network = stack["networks"]["metrics"]
    assert network["driver_opts"] == {"com.docker.network.bridge.enable_ip_masquerade": "false"}
    assert network["ipam"]["config"][0]["subnet"] == "172.29.82.0/24"


def test_the_endpoint_binds_a_configured_address_and_port() -> None:
    data = with_monitoring(metrics=True, metrics_address="10.8.0.1", metrics_port=19154)
    assert compose(data)["services"]["metrics"]["ports"] == ["10.8.0.1:19154:9154"]


def test_the_queue_is_mounted_read_only_and_only_the_metrics_secrets_are_handed_over() -> None:
    metrics = compose(with_monitoring(metrics=True))["services"]["metrics"]
    assert metrics["volumes"] == [
        "queue:/var/spool/postfix:ro",
        "postfix-log:/var/log/mailstack:ro",  # Postfix's log copy (compose/postfix/logtap)
        "./.mailstack/metrics:/var/lib/mailstack/health:ro",  # check health's gauges
    ]
    assert metrics["secrets"] == [
        "metrics_token",
        "rspamd_metrics_password",
        "redis_metrics_password",
        "db_metrics_password",
    ]


def test_dovecots_stats_listener_is_on_its_back_end_address_only() -> None:
    conf = rendered(with_monitoring(metrics=True))["config/dovecot/dovecot.conf"].decode()
    listener = conf[conf.index("service stats {") :].split("\n}\n", 1)[0]
    assert "address = 172.29.81.24" in listener
    assert "port = 9900" in listener
    for metric in ("auth_success", "auth_failures", "mail_delivery"):
        assert f"metric {metric} {{" in conf


def test_rspamd_gets_its_read_only_password_only_with_metrics_on() -> None:
    rspamd = compose(with_monitoring(metrics=True))["services"]["rspamd"]
    assert "rspamd_metrics_password" in rspamd["secrets"]


@pytest.mark.parametrize(
    ("service", "secret"), [("db", "db_metrics_password"), ("redis", "redis_metrics_password")]
)
def test_the_monitoring_logins_exist_only_with_metrics_on(service: str, secret: str) -> None:
    assert secret in compose(with_monitoring(metrics=True))["services"][service]["secrets"]
    assert secret not in compose(REFERENCE)["services"][service]["secrets"]


def _hba_rules(data: dict[str, Any], user: str) -> list[list[str]]:
    text = rendered(data)["config/db/pg_hba.conf"].decode()
    return [line.split() for line in text.splitlines() if line.split()[2:3] == [user]]


def test_postgres_admits_the_monitoring_login_from_the_metrics_address_to_postgres_only() -> None:
    # Not the mail directory, not the webmail's database, from no other container.
    rules = _hba_rules(with_monitoring(metrics=True), "mailstack_metrics")
    assert rules == [["host", "postgres", "mailstack_metrics", "172.29.81.83/32", "scram-sha-256"]]
    assert _hba_rules(REFERENCE, "mailstack_metrics") == []


# --- metricsd: the union and its format ------------------------------------------------------

DOVECOT = """# HELP dovecot_build Dovecot build information
# TYPE dovecot_build info
dovecot_build_info{version="2.3.19.1"} 1
# HELP dovecot_auth_success Total number of all events of this kind
# TYPE dovecot_auth_success counter
dovecot_auth_success_total 3
dovecot_auth_success_created 1700000000
# HELP dovecot_auth_success_duration_seconds Total duration of all events of this kind
# TYPE dovecot_auth_success_duration_seconds counter
dovecot_auth_success_duration_seconds_total 0.004
# EOF
"""
RSPAMD = """# HELP rspamd_scanned_total Scanned messages.
# TYPE rspamd_scanned_total counter
rspamd_scanned_total 2
# HELP rspamd_actions_total Actions labelled by action type.
# TYPE rspamd_actions_total counter
rspamd_actions_total{type="reject"} 0
rspamd_actions_total{type="no action"} 2
# EOF
"""
POSTFIX = """# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 9
# HELP postfix_showq_message_age_seconds Age of messages in Postfix's message queue, in seconds
# TYPE postfix_showq_message_age_seconds histogram
postfix_showq_message_age_seconds_bucket{queue="active",le="+Inf"} 1
postfix_showq_message_age_seconds_sum{queue="active"} 4
postfix_showq_message_age_seconds_count{queue="active"} 1
# HELP postfix_smtpd_connects_total Total number of incoming connections.
# TYPE postfix_smtpd_connects_total counter
postfix_smtpd_connects_total 0
# HELP postfix_up Whether scraping Postfix's metrics was successful.
# TYPE postfix_up gauge
postfix_up{path="/var/spool/postfix/public/showq"} 1
"""


REDIS = """# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 8
# HELP redis_up Information about the Redis instance
# TYPE redis_up gauge
redis_up 1
# HELP redis_commands_duration_seconds_total Total amount of time in seconds spent per command
# TYPE redis_commands_duration_seconds_total counter
redis_commands_duration_seconds_total{cmd="info"} 0.01
"""
POSTGRES = """# HELP pg_up Whether the last scrape of metrics from PostgreSQL was able to connect.
# TYPE pg_up gauge
pg_up 1
# HELP pg_settings_shared_buffers_bytes Server Parameter: shared_buffers
# TYPE pg_settings_shared_buffers_bytes gauge
pg_settings_shared_buffers_bytes 1.34217728e+08
# HELP pg_settings_max_connections Server Parameter: max_connections
# TYPE pg_settings_max_connections gauge
pg_settings_max_connections 100
"""


def test_of_redis_and_postgres_only_the_listed_basics_are_served() -> None:
    text = metricsd.union({"redis": REDIS, "postgres": POSTGRES})
    assert "redis_up 1" in text
    assert "pg_up 1" in text
    assert "pg_settings_max_connections 100" in text
    for dropped in ("go_goroutines", "redis_commands_duration", "pg_settings_shared_buffers"):
        assert dropped not in text, dropped


def test_the_exporters_get_their_passwords_in_their_environment_never_in_argv() -> None:
    arguments = argparse.Namespace(
        redis="redis:6379", postgres="db:5432", postfix_log="/var/log/mailstack/postfix.log"
    )
    children = metricsd.exporters(arguments, "redis-secret", "db-secret")
    assert [child.source for child in children] == ["postfix", "redis", "postgres"]
    assert "--postfix.logfile_path=/var/log/mailstack/postfix.log" in children[0].argv
    assert children[0].waits_for == "/var/log/mailstack/postfix.log"  # started once it exists
    for child in children:
        assert not any("secret" in argument for argument in child.argv), child.argv
        assert child.address.startswith("127.0.0.1:")  # the container's loopback only
    environments = {child.source: dict(child.environment) for child in children}
    assert environments["redis"]["REDIS_PASSWORD"] == "redis-secret"
    assert environments["postgres"]["DATA_SOURCE_PASS"] == "db-secret"
    assert environments["postgres"]["DATA_SOURCE_URI"] == "db:5432/postgres?sslmode=disable"


def test_openmetrics_counters_and_info_are_named_as_prometheus_text_names_them() -> None:
    text = metricsd.union({"dovecot": DOVECOT})
    assert "# TYPE dovecot_auth_success_total counter\ndovecot_auth_success_total 3\n" in text
    assert "# TYPE dovecot_build_info gauge\ndovecot_build_info" in text
    assert "_created" not in text
    assert "# EOF" not in text
    assert "# TYPE dovecot_auth_success counter" not in text


def test_the_union_keeps_each_sources_own_series_and_says_which_answered() -> None:
    sources = {"postfix": POSTFIX, "dovecot": DOVECOT, "rspamd": None}
    text = metricsd.union(sources)
    assert 'postfix_showq_message_age_seconds_count{queue="active"} 1' in text
    assert 'postfix_up{path="/var/spool/postfix/public/showq"} 1' in text
    assert "dovecot_auth_success_total 3" in text
    assert "postfix_smtpd_connects_total" in text  # its counters from the log copy
    assert "go_goroutines" not in text  # the exporter's own runtime is left out
    # Without a log copy (no --postfix-log) its log counters would be zeros: left out.
    assert "postfix_smtpd_connects_total" not in metricsd.union(sources, metricsd.QUEUE_ONLY)
    assert 'mailstack_metrics_source_up{source="postfix"} 1' in text
    assert 'mailstack_metrics_source_up{source="rspamd"} 0' in text


def test_each_family_is_declared_once_with_its_samples_after_it() -> None:
    text = metricsd.union({"postfix": POSTFIX, "dovecot": DOVECOT, "rspamd": RSPAMD})
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(declared) == len(set(declared))
    family = ""
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            family = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(family), (family, line)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        "Basic c2VjcmV0",
        "secret-token",
        "Bearer secret-tokenX",
    ],
)
def test_only_the_exact_bearer_token_is_accepted(header: str | None) -> None:
    assert not metricsd.bearer_matches(header, "secret-token")


def test_the_bearer_token_is_accepted_whatever_the_schemes_case() -> None:
    assert metricsd.bearer_matches("Bearer secret-token", "secret-token")
    assert metricsd.bearer_matches("bearer secret-token", "secret-token")


# --- metricsd over HTTP, against sources that answer as the daemons do -----------------------


class _Source(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, str]] = {"/dovecot": DOVECOT, "/rspamd": RSPAMD, "/postfix": POSTFIX}
    seen_passwords: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:  # the stdlib's name
        self.seen_passwords.append(self.headers.get("Password"))
        body = self.bodies[self.path].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: http.server.HTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    sources_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Source)
    for base in _serve(sources_server):
        sources = [
            metricsd.Source("postfix", f"{base}/postfix"),
            metricsd.Source("dovecot", f"{base}/dovecot"),
            metricsd.Source("rspamd", f"{base}/rspamd", (("Password", "read-only"),)),
            metricsd.Source("nothing", "http://127.0.0.1:9/metrics"),
        ]
        monkeypatch.setitem(metricsd.KEEP, "nothing", lambda name: True)
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), metricsd.handler("secret-token", sources)
        )
        yield from _serve(server)


def _get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:  # noqa: S310  # a local test server
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_scrape_with_the_token_gets_every_sources_series(endpoint: str) -> None:
    status, text = _get(f"{endpoint}/metrics", "secret-token")
    assert status == 200
    assert "dovecot_auth_success_total 3" in text
    assert 'rspamd_actions_total{type="no action"} 2' in text
    assert 'postfix_showq_message_age_seconds_count{queue="active"} 1' in text
    assert 'mailstack_metrics_source_up{source="nothing"} 0' in text
    assert "read-only" in _Source.seen_passwords  # rspamd is asked with its password


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_scrape_without_the_right_token_is_refused_with_401(
    endpoint: str, token: str | None
) -> None:
    status, text = _get(f"{endpoint}/metrics", token)
    assert status == 401
    assert "dovecot" not in text


def test_a_path_other_than_metrics_is_not_found_and_needs_the_token_first(endpoint: str) -> None:
    assert _get(f"{endpoint}/other", None)[0] == 401
    assert _get(f"{endpoint}/other", "secret-token")[0] == 404
