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
    address="a@example.test", quota_bytes=1 << 30, active=True, created="2026-12-06T10:00:00Z"
)
PAGES: dict[str, dict[str, Any]] = {
    "signin.html": {"name": "<alice>"},
    "code.html": {},
    "enrol.html": {"secret": "JBSWY3DPEHPK3PXP", "qr": Markup("<svg><title>QR</title></svg>")},
    "recovery.html": {"session": SIGNED_IN, "codes": ["abcd-efgh-jkmn-pqrs"] * 10},
    "dashboard.html": {"session": SIGNED_IN, "who": SimpleNamespace(domains=None)},
    "mailboxes.html": {
        "session": SIGNED_IN,
        "who": SimpleNamespace(domains=frozenset({"example.test"})),
        "mailboxes": [MAILBOX],
        "default_quota": "1G",
        "address": '"><script>x</script>',
        "quota": "",
    },
    "message.html": {"title": "Refused", "error": "This form has expired"},
    # users' self-service (webaccount.py)
    "account_signin.html": {"address": "<bob>"},
    "account_code.html": {},
    "account_enrol.html": {
        "secret": "JBSWY3DPEHPK3PXP",
        "qr": Markup("<svg><title>QR</title></svg>"),
        "required": True,
    },
    "account_recovery.html": {"session": SIGNED_IN, "codes": ["abcd-efgh-jkmn-pqrs"] * 10},
    "account_home.html": {
        "session": SIGNED_IN,
        "overview": SimpleNamespace(
            address="b@example.test",
            quota_bytes=1 << 30,
            second_factor=SimpleNamespace(confirmed=True, recovery_codes_left=9),
            app_passwords=[SimpleNamespace(name="phone", created="2026-12-06T10:00:00Z")],
            usage_unavailable="not here",
        ),
        "new_app_password": SimpleNamespace(name="phone", password="abcde-fghij"),
        "app_name": "",
        "mfa_required": False,
        "webmail_settings": "/?_task=settings",
    },
    "account_message.html": {"title": "Refused", "error": "This form has expired"},
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
}
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


def render(template: str) -> Page:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = str
    values = {"session": None, "error": None, "notice": None, "csrf": "f" * 64}
    page = Page()
    page.feed(environment.get_template(template).render(**{**values, **PAGES[template]}))
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
    assert {path.name for path in TEMPLATES.glob("*.html")} - {
        "base.html",
        "account_base.html",
    } == set(PAGES)


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
