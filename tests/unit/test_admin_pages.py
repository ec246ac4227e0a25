"""The admin service's page templates (compose/admin/templates), rendered as the service
renders them: every field has a label, every page a language and one heading, every form
that posts carries the CSRF token, and no page has a script but the passkey ceremonies'
one, from this site."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parents[2] / "compose" / "admin" / "templates"
SIGNED_IN = SimpleNamespace(full=True, admin="alice")
MAILBOX = SimpleNamespace(
    address="a@example.test", quota_bytes=1 << 30, active=True, created="2026-12-06T10:00:00Z",
    storage_bytes=1 << 20, quota_percent=0, used_bytes=1 << 20, messages=1,
)  # fmt: skip
PAGES: dict[str, dict[str, Any]] = {
    "signin.html": {"name": "<alice>"},
    "code.html": {},
    "enrol.html": {"secret": "JBSWY3DPEHPK3PXP", "qr": Markup("<svg><title>QR</title></svg>")},
    "recovery.html": {"session": SIGNED_IN, "codes": ["abcd-efgh-jkmn-pqrs"] * 10},
    "dashboard.html": {
        "session": SIGNED_IN,
        "who": SimpleNamespace(domains=None),
        "health": SimpleNamespace(healthy=False, line="1 of 9 services need attention: db."),
    },
    "mailboxes.html": {
        "session": SIGNED_IN,
        "who": SimpleNamespace(domains=frozenset({"example.test"})),
        "mailboxes": [MAILBOX],
        "default_quota": "1G",
        "address": '"><script>x</script>',
        "quota": "",
    },
    "message.html": {"title": "Refused", "error": "This form has expired"},
    # users' self-service (webaccount.py); NAME@account: a shared page in the account area
    "account_signin.html": {"address": "<bob>"},
    "code.html@account": {},
    "enrol.html@account": {
        "secret": "JBSWY3DPEHPK3PXP",
        "qr": Markup("<svg><title>QR</title></svg>"),
        "required": True,
    },
    "recovery.html@account": {"session": SIGNED_IN, "codes": ["abcd-efgh-jkmn-pqrs"] * 10},
    "account_home.html": {
        "session": SIGNED_IN,
        "overview": SimpleNamespace(
            address="b@example.test",
            quota_bytes=1 << 30,
            second_factor=SimpleNamespace(confirmed=True, recovery_codes_left=9),
            app_passwords=[SimpleNamespace(name="phone", created="2026-12-06T10:00:00Z")],
            usage=SimpleNamespace(bytes=3 << 20, messages=2, updated="2026-12-06T10:00:00Z"),
            used_percent=0,
            sign_ins=[
                SimpleNamespace(
                    protocol="imap", remote="192.0.2.7", last_seen="2026-12-06T10:00:00Z"
                )
            ],
            usage_unknown="not yet",
        ),
        "new_app_password": SimpleNamespace(name="phone", password="abcde-fghij"),
        "app_name": "",
        "mfa_required": False,
        "webmail_settings": "/?_task=settings",
    },
    "message.html@account": {"title": "Refused", "error": "This form has expired"},
    "passkey.html": {"options": '{"publicKey":{"challenge":"x"}}'},
    "passkey-register.html": {
        "session": SIGNED_IN,
        "options": '{"publicKey":{"challenge":"x"}}',
        "name": '"><script>x</script>',
    },
    "passkeys.html": {
        "session": SIGNED_IN,
        "passkeys": [SimpleNamespace(name="laptop", created="2026-12-06", last_used="")],
        "name": "",
        "password_needed": True,
    },
    "domains.html": {
        "session": SIGNED_IN,
        "who": SimpleNamespace(domains=None),
        "is_admin": True,
        "name": "<b>x</b>",
        "domains": [
            {
                "name": "example.test",
                "mailboxes": 2,
                "quota_bytes": 10 << 30,
                "allocated_bytes": 4 << 30,
                "created": "2026-12-06T10:00:00Z",
                "dkim_key": "failed",
                "dkim_key_detail": "render conflict",
            },
        ],
    },
    "aliases.html": {
        "session": SIGNED_IN,
        "source": "",
        "destinations": "",
        "aliases": [{"source": "@example.test", "destinations": ["a@example.test", "b@x.test"]}],
    },
    "alias_domains.html": {
        "session": SIGNED_IN,
        "name": "<b>x</b>",
        "target": "example.test",
        "targets": ["example.test", "other.test"],
        "alias_domains": [
            {
                "name": "example.net",
                "target": "example.test",
                "created": "2026-12-06T10:00:00Z",
                "dkim_key": "queued",
                "dkim_key_detail": "",
            },
        ],
    },
    "senders.html": {
        "session": SIGNED_IN,
        "sender": "",
        "mailbox": "",
        "senders": [{"sender": "@example.net", "mailbox": "a@example.test"}],
    },
    "mailbox.html": {"session": SIGNED_IN, "mailbox": MAILBOX},
    "tokens.html": {
        "session": SIGNED_IN,
        "name": "",
        "expires": "",
        "checked": ("read",),
        "scopes": ("read", "accounts", "domains", "admin"),
        "tokens": [
            {
                "name": "ci",
                "scopes": ["read"],
                "state": "active",
                "created_by": None,
                "expires": None,
                "last_used": None,
                "revoked": None,
            },
        ],
    },
    "token_created.html": {
        "session": SIGNED_IN,
        "token": {"name": "ci", "scopes": ["read"], "expires": None, "token": "msk_" + "a" * 43},
    },
    "confirm.html": {"session": SIGNED_IN, "next": "/admin/tokens"},
    "audit.html": {
        "session": SIGNED_IN,
        "actor": "admin:alice",
        "limit": 100,
        "query": {"actor": "admin:alice", "limit": "100"},
        "entries": [
            SimpleNamespace(
                at="2026-12-06T10:00:00Z",
                actor="admin:alice",
                source="172.30.12.1",
                action="mailbox.add",
                target="a@example.test",
                detail="",
            ),
        ],
    },
    "queue.html": {
        "session": SIGNED_IN,
        "report": {
            "taken": "2026-12-06T12:00:00Z",
            "age_seconds": 42,
            "as_of": "as of 12:00:00 UTC, 42 s ago",
            "error": "",
            "total": 1,
            "oldest_seconds": 60,
            "left_out": 0,
            "messages": [
                {
                    "queue_id": "4XbQ2D1kKzz3Qy",
                    "queue_name": "deferred",
                    "arrival_time": "2026-12-06T11:59:00Z",
                    "message_size": 1234,
                    "sender": "<script>x</script>@x.test",
                    "recipients": [{"address": "b@far.test", "delay_reason": "refused"}],
                    "recipients_left_out": 3,
                }
            ],
        },
    },
    # the host reports' pages (webdnsbackups.py): the DNS page as an administrator sees it
    "dns.html": {
        "session": SIGNED_IN,
        "only": None,
        "is_admin": True,
        "dns": {
            "report": {"as_of": "as of 19:00:00 UTC, 5 s ago", "error": "", "taken": "x"},
            "hostname": "mail.example.test",
            "resolver": "172.30.10.53",
            "left_out": ["late.example"],
            "server": {
                "records": [
                    {
                        "kind": "PTR",
                        "zone_line": "x. 3600 IN PTR mail.example.test.",
                        "note": "reverse DNS",
                        "placeholder": False,
                        "at_provider": True,
                    },
                ],
                "checks": None,
                "unchecked": "not checked: the resolver does not answer",
            },
            "domains": [
                {
                    "domain": "example.test",
                    "verdict": "FAIL",
                    "keys": [
                        {
                            "selector": "ms20261206",
                            "state": "active",
                            "key_type": "rsa",
                            "bits": 2048,
                        }
                    ],
                    "records": [
                        {
                            "kind": "MX",
                            "zone_line": "example.test. 3600 IN MX 10 mail.",
                            "note": "mail",
                            "placeholder": False,
                            "at_provider": False,
                        },
                    ],
                    "checks": [
                        {
                            "verdict": "FAIL",
                            "kind": "MX",
                            "name": "example.test",
                            "found": "<none>",
                            "fix": "publish: x",
                        },
                    ],
                    "unchecked": "",
                },
            ],
        },
    },
    "backups.html": {
        "session": SIGNED_IN,
        "backups": {
            "report": {"as_of": "as of 19:00:00 UTC, 5 s ago", "error": "", "taken": "x"},
            "target": "/var/backups/mailstack",
            "repository": "present",
            "count": 51,
            "left_out": 1,
            "snapshots": [
                {
                    "short_id": "0123abcd",
                    "time": "2026-12-06T19:00:00.1+00:00",
                    "hostname": "mail",
                    "tags": ["mailstack", "first"],
                },
            ],
            "last_verify": {
                "time": "2026-12-06T19:05:00Z",
                "ok": False,
                "snapshot": "0123abcd",
                "seconds": 12.5,
                "error": "",
                "checks": [{"name": "mail", "ok": False, "detail": "differ"}],
            },
        },
    },
}
# The host-report pages (webstatus.py): what api.reportview.ReportView gives them.
HOST_REPORT = {"topic": "bans", "taken": "2026-12-06T19:00:07Z", "error": None, "stale": True}
PAGES["health.html"] = {
    "session": SIGNED_IN,
    "report": SimpleNamespace(**{**HOST_REPORT, "topic": "health"}, as_of="as of 19:00:07 UTC"),
    "healthy": lambda service: service["health"] == "healthy",
    "body": {
        "healthy": False,
        "services": [
            {"service": "db", "state": "running", "health": "healthy", "failing_checks": 0,
             "last_check": ""},
            {"service": "postfix", "state": "running", "health": "unhealthy",
             "failing_checks": 3, "last_check": "<b>timeout</b>"},
        ],
        "conflicts": ["config/postfix/main.cf"],
        "security": "security: 2 fixes pending",
        "security_pending": True,
    },
}  # fmt: skip
PAGES["bans.html"] = {
    "session": SIGNED_IN,
    "report": SimpleNamespace(**HOST_REPORT, as_of="as of 19:00:07 UTC"),
    "body": {
        "bans": [
            {"address": "192.0.2.10", "until": "2026-12-06T20:00:00Z", "failures": 10,
             "protocols": ["imap", "smtp"], "logins": ["<alice>"]},
        ],
        "bans_left_out": 3,
        "delayed": [{"address": "2001:db8::/64", "failures": 2, "delay": 1}],
        "delayed_left_out": 0,
        "settings": {"max_failures": 10, "window": 600, "ban_time": 3600, "exempt": []},
    },
}  # fmt: skip
# The only script any page loads: WebAuthn has no form-only way (compose/admin/static).
CEREMONIES = {"passkey.html", "passkey-register.html"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.forms: list[list[dict[str, str | None]]] = []
        self.methods: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "form":
            self.forms.append([])
            self.methods.append(str(dict(attrs).get("method") or "get").lower())
        elif tag == "input" and self.forms:
            self.forms[-1].append(dict(attrs))

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def render(page_name: str) -> Page:
    """A template as webcommon.page renders it; "NAME@account" in the users' area."""
    template, _, area = page_name.partition("@")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = str
    environment.filters["bytes"] = str
    account = area == "account"
    values = {"session": None, "error": None, "notice": None, "csrf": "f" * 64}
    values |= {"account": account, "home": "/account/" if account else "/admin/"}
    page = Page()
    page.feed(environment.get_template(template).render(**{**values, **PAGES[page_name]}))
    return page


@pytest.mark.parametrize("template", sorted(PAGES))
def test_every_page_is_labelled_headed_scriptless_and_its_forms_carry_the_token(
    template: str,
) -> None:
    page = render(template)
    assert page.all("html") == [{"lang": "en"}]
    assert len(page.all("h1")) == 1
    scripts = [{"src": "/admin/passkey.js"}] if template in CEREMONIES else []
    assert page.all("script") == scripts
    labelled = {attrs["for"] for attrs in page.all("label")}
    for field in page.all("input"):
        if field.get("type") != "hidden":
            assert field.get("id") in labelled, (template, field)
    for form, method in zip(page.forms, page.methods, strict=True):
        token = {"type": "hidden", "name": "csrf", "value": "f" * 64}
        # A form that posts carries it; a GET form (the audit log's filter) must not put it
        # into a URL, where logs and the history keep it.
        assert (token in form) == (method == "post"), (template, method)


def test_every_template_is_checked() -> None:
    shown = {name.partition("@")[0] for name in PAGES}
    part = {"report_age.html"}  # a part of health.html and bans.html
    assert {path.name for path in TEMPLATES.glob("*.html")} - {"base.html"} - part == shown


def test_a_typed_value_shown_again_is_escaped() -> None:
    page = render("mailboxes.html")
    (address,) = [attrs for attrs in page.all("input") if attrs.get("name") == "address"]
    assert address["value"] == '"><script>x</script>'  # an attribute's text, not markup


def test_a_passkey_ceremony_carries_its_options_as_attribute_text() -> None:
    page = render("passkey-register.html")
    (status,) = [attrs for attrs in page.all("p") if attrs.get("id") == "passkey-status"]
    assert status["data-options"] == '{"publicKey":{"challenge":"x"}}'  # JSON.parse-able
    (name,) = [attrs for attrs in page.all("input") if attrs.get("name") == "name"]
    assert name["value"] == '"><script>x</script>'


def test_a_shared_page_in_the_account_area_links_and_posts_only_within_it() -> None:
    for name in ("code.html", "enrol.html", "recovery.html", "message.html"):
        admin, account = render(name), render(f"{name}@account")
        links = [attrs.get("href", "") for attrs in account.all("a")]
        posts = [attrs.get("action", "") for attrs in account.all("form")]
        assert all(target.startswith("/account/") for target in links + posts), (name, links)
        admin_targets = [attrs.get("href", "") for attrs in admin.all("a")] + [
            attrs.get("action", "") for attrs in admin.all("form")
        ]
        assert all(target.startswith("/admin/") for target in admin_targets), name
