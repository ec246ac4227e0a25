"""Calendars and contacts (features.dav, on by default) on the session stack, through the front
at https://<hostname>/dav/: an event round trip with a real CalDAV client (the caldav
library), a vCard round trip over CardDAV, one user never reaching another's collections,
sign-ins decided by Dovecot (a wrong password refused, MFA's app-passwords rule), the
well-known redirects, the SRV records and the Apple profile's payloads."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import plistlib
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import caldav
import pyotp
import pytest

from tests.e2e.conftest import DOMAIN, GATEWAY, HOSTNAME, PORTS, PROJECT, SUBNETS, RunningStack

pytestmark = pytest.mark.e2e

DAV = f"https://{HOSTNAME}:{PORTS['https']}/dav/"
# The dav container's fixed address on the front's network (services.DAV: .84).
DAV_CONTAINER = str(ipaddress.ip_network(SUBNETS[0]).network_address + 84)


@pytest.fixture(autouse=True)
def hostname_is_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client asks for the stack's hostname, as a phone would; here it is the loopback."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return resolve("127.0.0.1" if host == HOSTNAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def dav_request(
    stack: RunningStack,
    method: str,
    path: str,
    login: tuple[str, str] | None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    sent = {"Host": HOSTNAME, **(headers or {})}
    if login:
        sent["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    connection = http.client.HTTPSConnection(
        "127.0.0.1", PORTS["https"], context=stack.tls_context(), timeout=60
    )
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def users(stack: RunningStack) -> tuple[tuple[str, str], tuple[str, str]]:
    return stack.new_mailbox(), stack.new_mailbox()


def client(stack: RunningStack, address: str, password: str) -> caldav.DAVClient:
    return caldav.DAVClient(
        url=DAV, username=address, password=password, ssl_verify_cert=str(stack.ca_file)
    )


EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//mailstack e2e//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20261207T090000Z
DTSTART:{start}
DTEND:{end}
SUMMARY:{summary}
END:VEVENT
END:VCALENDAR
"""


def test_an_event_makes_the_round_trip_with_a_caldav_client(
    stack: RunningStack, users: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    address, password = users[0]
    with client(stack, address, password) as dav:
        principal = dav.principal()
        calendar = principal.make_calendar(name="Work")
        start = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(days=1)
        uid = f"{uuid.uuid4()}@e2e.example"
        summary = f"Quarterly review {uuid.uuid4().hex[:6]}"
        calendar.save_event(
            EVENT.format(
                uid=uid,
                start=start.strftime("%Y%m%dT%H%M%SZ"),
                end=(start + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ"),
                summary=summary,
            )
        )
    with client(stack, address, password) as dav:  # a second session: it was stored
        (found,) = [c for c in dav.principal().calendars() if c.get_display_name() == "Work"]
        events = found.search(
            start=start - timedelta(hours=1), end=start + timedelta(hours=2), event=True
        )
        assert len(events) == 1
        assert summary in events[0].data and uid in events[0].data


VCARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:Ada Example\r\nN:Example;Ada;;;\r\n"
    "EMAIL;TYPE=INTERNET:ada@elsewhere.example\r\nEND:VCARD\r\n"
)
MKCOL_ADDRESSBOOK = b"""<?xml version="1.0" encoding="utf-8"?>
<mkcol xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
  <set><prop>
    <resourcetype><collection/><CR:addressbook/></resourcetype>
    <displayname>Contacts</displayname>
  </prop></set>
</mkcol>
"""


def test_a_vcard_makes_the_round_trip_over_carddav(
    stack: RunningStack, users: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    address, password = users[0]
    login = (address, password)
    book = f"/dav/{address}/contacts-{uuid.uuid4().hex[:6]}/"
    status, _, body = dav_request(stack, "MKCOL", book, login, MKCOL_ADDRESSBOOK)
    assert status == 201, body
    uid = str(uuid.uuid4())
    card = VCARD.format(uid=uid).encode()
    status, _, body = dav_request(
        stack, "PUT", f"{book}{uid}.vcf", login, card, {"Content-Type": "text/vcard"}
    )
    assert status == 201, body
    status, headers, body = dav_request(stack, "GET", f"{book}{uid}.vcf", login)
    assert status == 200
    assert headers["content-type"].startswith("text/vcard")
    assert b"FN:Ada Example" in body and uid.encode() in body


def test_one_user_cannot_read_or_write_anothers_collections(
    stack: RunningStack, users: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    (owner, owner_password), (other, other_password) = users
    book = f"/dav/{owner}/private-{uuid.uuid4().hex[:6]}/"
    assert dav_request(stack, "MKCOL", book, (owner, owner_password), MKCOL_ADDRESSBOOK)[0] == 201
    intruder = (other, other_password)
    for method, body in (("PROPFIND", None), ("GET", None), ("PUT", b"BEGIN:VCARD\r\n")):
        path = book if method == "PROPFIND" else f"{book}stolen.vcf"
        status, _, _ = dav_request(stack, method, path, intruder, body, {"Depth": "1"})
        assert status == 403, (method, status)
    assert (
        dav_request(stack, "PROPFIND", f"/dav/{owner}/", intruder, None, {"Depth": "1"})[0] == 403
    )


def test_a_wrong_password_or_none_is_refused_and_dovecot_decided_it(
    stack: RunningStack, users: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    address, _ = users[1]
    status, headers, _ = dav_request(stack, "PROPFIND", f"/dav/{address}/", (address, "wrong"))
    assert status == 401
    assert "basic" in headers.get("www-authenticate", "").lower()
    assert dav_request(stack, "PROPFIND", f"/dav/{address}/", None)[0] == 401
    # Dovecot checked it, with the client's address as the front saw it (not the dav
    # container's): failures count against the client in the bans service.
    logs = stack.compose("logs", "--no-log-prefix", "dovecot").stdout.decode()
    refused = [line for line in logs.splitlines() if address in line and "mismatch" in line]
    assert refused, logs[-2000:]
    assert all(f"{address},{GATEWAY}" in line for line in refused), refused  # the client
    assert not any(DAV_CONTAINER in line for line in refused), refused


def test_under_mfa_only_an_app_password_opens_calendars(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    enrolment = json.loads(stack.cli("mailbox", "mfa", "enrol", address, "--json").stdout)
    stack.cli("mailbox", "mfa", "confirm", address, pyotp.TOTP(enrolment["secret"]).now())
    created = stack.cli("mailbox", "app-password", "add", address, "calendar", "--json")
    app_password = json.loads(created.stdout)["password"]
    path = f"/dav/{address}/"
    assert dav_request(stack, "PROPFIND", path, (address, password), None, {"Depth": "0"})[0] == 401
    status, _, body = dav_request(
        stack, "PROPFIND", path, (address, app_password), None, {"Depth": "0"}
    )
    assert status == 207, body


def test_a_purged_mailbox_takes_its_calendars_and_leaves_the_others(
    stack: RunningStack, users: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    root = Path(f"/var/lib/docker/volumes/{PROJECT}_dav/_data/collection-root")
    leaving, password = stack.new_mailbox()
    book = f"/dav/{leaving}/contacts/"
    assert dav_request(stack, "MKCOL", book, (leaving, password), MKCOL_ADDRESSBOOK)[0] == 201
    staying, staying_password = users[0]
    dav_request(stack, "PROPFIND", f"/dav/{staying}/", (staying, staying_password))
    assert (root / leaving).is_dir() and (root / staying).is_dir()
    result = stack.cli("mailbox", "remove", leaving, "--purge", "--yes")
    assert f"deleted the calendars and contacts of {leaving}" in result.stdout
    assert not (root / leaving).exists()
    assert (root / staying).is_dir()


def test_the_well_known_names_lead_to_dav(stack: RunningStack) -> None:
    for name in ("caldav", "carddav"):
        status, headers, _ = dav_request(stack, "GET", f"/.well-known/{name}", None)
        assert status == 301
        assert headers["location"] == DAV


def test_dns_records_and_the_apple_profile_announce_calendars_and_contacts(
    stack: RunningStack,
) -> None:
    records = json.loads(stack.cli("dns", "records", "--json").stdout)
    text = json.dumps(records)
    for service in ("_caldavs._tcp", "_carddavs._tcp"):
        assert f"{service}.{DOMAIN}" in text
    assert "path=/dav/" in text
    address = f"carol@{DOMAIN}"
    status, _, body = dav_request(stack, "GET", f"/mobileconfig?email={address}", None)
    assert status == 200
    payloads = {p["PayloadType"]: p for p in plistlib.loads(body)["PayloadContent"]}
    caldav_account = payloads["com.apple.caldav.account"]
    assert caldav_account["CalDAVHostName"] == HOSTNAME
    assert caldav_account["CalDAVPort"] == PORTS["https"]
    assert caldav_account["CalDAVPrincipalURL"] == f"/dav/{address}/"
    assert caldav_account["CalDAVUsername"] == address
    assert payloads["com.apple.carddav.account"]["CardDAVUseSSL"] is True
