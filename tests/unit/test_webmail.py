"""Webmail and client autoconfiguration: config validation and what the render makes of it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mailstack.errors import ConfigError
from mailstack.runtime.checks import locate
from mailstack.runtime.hostcheck import webmail_default
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack

BASE: dict[str, Any] = {"hostname": "mail.example.org", "domain": "example.org"}


def render(**extra: Any) -> dict[str, str]:
    config = validate_config({**BASE, **extra})
    return {path: data.decode() for path, data in render_stack(RenderInputs(config, "1.0")).items()}


def test_webmail_is_on_by_default_and_served_at_the_root() -> None:
    files = render()
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert "webmail" in services
    assert "config/webmail/config.inc.php" in files
    nginx = files["config/front/nginx.conf"]
    assert "fastcgi_pass 172.29.80.81:9000;" in nginx
    assert "try_files $uri $uri/ =404;" not in nginx  # the landing page made way


def test_webmail_off_renders_no_service_no_database_access_and_keeps_the_landing_page() -> None:
    files = render(features={"webmail": False})
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert "webmail" not in services
    assert "db_roundcube_password" not in services["db"]["secrets"]
    assert not any(path.startswith("config/webmail/") for path in files)
    assert "roundcube" not in files["config/db/pg_hba.conf"]
    assert "login_trusted_networks" not in files["config/dovecot/dovecot.conf"]
    nginx = files["config/front/nginx.conf"]
    assert "fastcgi_pass" not in nginx and "try_files $uri $uri/ =404;" in nginx
    # Client autoconfiguration does not depend on the webmail.
    assert "include /etc/mailstack/front/autoconfig-locations.conf;" in nginx


def test_webmail_container_is_hardened_and_reaches_only_what_it_needs() -> None:
    webmail = yaml.safe_load(render()["compose.yaml"])["services"]["webmail"]
    assert webmail["read_only"] is True
    assert webmail["cap_drop"] == ["ALL"] and webmail["cap_add"] == ["SETGID", "SETUID"]
    assert "no-new-privileges:true" in webmail["security_opt"]
    assert webmail["mem_limit"] and webmail["pids_limit"]
    assert "ports" not in webmail
    assert sorted(webmail["secrets"]) == [
        "db_roundcube_password", "roundcube_des_key", "webmail_mfa_key"
    ]  # fmt: skip


def test_only_the_front_may_talk_fastcgi_and_only_the_webmail_may_reach_its_database() -> None:
    files = render()
    assert "listen.allowed_clients = 127.0.0.1,172.29.80.80" in files["config/webmail/php-fpm.ini"]
    assert "host    roundcube roundcube 172.29.81.81/32" in files["config/db/pg_hba.conf"]
    assert (
        "login_trusted_networks = 172.29.81.81/32 172.29.80.81/32"
        in files["config/dovecot/dovecot.conf"]
    )


def test_webmail_verifies_the_mail_servers_certificate_by_the_hostname() -> None:
    php = render()["config/webmail/config.inc.php"]
    assert "'verify_peer' => true" in php and "'peer_name' => 'mail.example.org'" in php
    assert "'imap_host'] = 'ssl://dovecot:993'" in php
    assert "'smtp_host'] = 'tls://postfix:587'" in php
    assert "'managesieve_host'] = 'tls://dovecot:4190'" in php


def test_webmail_under_a_path_keeps_the_landing_page() -> None:
    nginx = render(webmail={"path": "/mail/"})["config/front/nginx.conf"]
    assert "location /mail/ {" in nginx
    assert "fastcgi_param SCRIPT_NAME /mail/index.php;" in nginx
    assert "try_files $uri $uri/ =404;" in nginx


@pytest.mark.parametrize(
    "path",
    [
        "mail",
        "/mail",
        "/Mail/",
        "/mail/../",
        "/mail;/",
        "/.well-known/",
        "/a b/",
        "/{{x}}/",
        "/\n/",
    ],
)
def test_webmail_path_refuses_anything_but_plain_segments(path: str) -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config({**BASE, "webmail": {"path": path}})
    assert "webmail.path" in str(refused.value)


def test_autoconfig_answers_name_the_published_ports() -> None:
    script = render(network={"ports": {"imaps": 10993, "submissions": 10465}})[
        "config/front/autoconfig.js"
    ]
    assert "const HOSTNAME = 'mail.example.org';" in script
    assert "const IMAPS_PORT = 10993;" in script
    assert "const SUBMISSIONS_PORT = 10465;" in script
    assert "const SUBMISSION_PORT = 587;" in script


def test_webmail_default_follows_the_hosts_memory() -> None:
    assert webmail_default(4 * 1024**3) is True
    assert webmail_default(512 * 1024**2) is False
    assert webmail_default(None) is True


def test_check_config_locates_a_php_error_in_the_stack_directory() -> None:
    output = (
        'PHP Parse error:  syntax error, unexpected token ";" in '
        "/etc/mailstack/webmail/config.inc.php on line 22"
    )
    assert locate("webmail", output) == "config/webmail/config.inc.php:22"
