"""The dav service's sign-in plugin (compose/dav/mailstack_dav_auth.py) against a Dovecot auth
server stand-in on a real Unix socket: the handshake and the AUTH line it sends (service=dav,
secured, the client's address), nothing a login or password holds can add a field to the
protocol, a failure is never remembered, a success for a minute. (Against the real Dovecot:
tests/e2e/test_dav.py.) Radicale itself runs only in the dav image: its base class is a stub
here."""

from __future__ import annotations

import base64
import importlib.util
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailstack.resources import build_contexts_dir


class _BaseAuth:
    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration


def _load_plugin() -> types.ModuleType:
    radicale = types.ModuleType("radicale")
    radicale_auth = types.ModuleType("radicale.auth")
    radicale_auth.BaseAuth = _BaseAuth  # type: ignore[attr-defined]
    radicale.auth = radicale_auth  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("radicale", "radicale.auth")}
    sys.modules.update({"radicale": radicale, "radicale.auth": radicale_auth})
    try:
        path = build_contexts_dir() / "dav" / "mailstack_dav_auth.py"
        spec = importlib.util.spec_from_file_location("mailstack_dav_auth", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


plugin = _load_plugin()
GREETING = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t7\nCUID\t1\nCOOKIE\tabc\nDONE\n"


class FakeDovecot:
    """Dovecot's auth-client listener, as far as the plugin speaks it: it records each
    request's fields and answers OK for one login/password pair, FAIL for any other."""

    def __init__(self, path: Path | None, login: str, password: str) -> None:
        """On the Unix socket PATH; None: on a TCP port of 127.0.0.1 (a cluster's link)."""
        self.path, self.login, self.password = path, login, password
        self.requests: list[list[str]] = []
        family = socket.AF_UNIX if path else socket.AF_INET
        self.server = socket.socket(family, socket.SOCK_STREAM)
        self.server.bind(str(path) if path else ("127.0.0.1", 0))
        self.target = str(path) if path else f"127.0.0.1:{self.server.getsockname()[1]}"
        self.server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(GREETING)
                reader = connection.makefile("r", newline="\n")
                lines = [reader.readline(), reader.readline(), reader.readline()]
                fields = lines[2].rstrip("\n").split("\t")
                self.requests.append(fields)
                resp = next(f for f in fields if f.startswith("resp="))
                _, login, password = base64.b64decode(resp[5:]).split(b"\0")
                ok = (login.decode(), password.decode()) == (self.login, self.password)
                answer = (
                    f"OK\t{fields[1]}\tuser={self.login.lower()}" if ok else f"FAIL\t{fields[1]}"
                )
                connection.sendall(f"{answer}\n".encode())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def dovecot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDovecot]:
    fake = FakeDovecot(tmp_path / "auth", "Alice@example.test", "right password")
    monkeypatch.setattr(plugin, "SOCKET", str(fake.path))
    monkeypatch.setattr(plugin.ask_dovecot, "__defaults__", (str(fake.path),))
    yield fake
    fake.close()


def _signed_in(auth: Any, login: str, password: str, client: str | None = "198.51.100.7") -> str:
    auth.get_external_login({"HTTP_X_REAL_IP": client} if client else {})
    result: str = auth.login(login, password)
    return result


def test_a_sign_in_is_asked_of_dovecot_as_dav_with_the_clients_address(
    dovecot: FakeDovecot,
) -> None:
    auth = plugin.Auth(None)
    assert _signed_in(auth, "Alice@example.test", "right password") == "alice@example.test"
    (request,) = dovecot.requests
    assert request[:5] == ["AUTH", "1", "PLAIN", "service=dav", "secured"]
    assert "rip=198.51.100.7" in request
    assert not any(field.startswith(("real_rip=", "no-penalty")) for field in request)


def test_on_a_cluster_dovecot_is_asked_over_its_link() -> None:
    fake = FakeDovecot(None, "Alice@example.test", "right password")
    try:
        user = plugin.ask_dovecot("Alice@example.test", "right password", "203.0.113.9",
                                  fake.target)  # fmt: skip
        assert user == "alice@example.test"
        assert "rip=203.0.113.9" in fake.requests[0]
    finally:
        fake.close()


def test_a_wrong_password_is_refused_and_never_remembered(dovecot: FakeDovecot) -> None:
    auth = plugin.Auth(None)
    assert _signed_in(auth, "Alice@example.test", "wrong") == ""
    assert _signed_in(auth, "Alice@example.test", "wrong") == ""
    assert len(dovecot.requests) == 2  # each failure asked again (Dovecot delays and counts)


def test_a_success_is_remembered_for_a_minute_only(
    dovecot: FakeDovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = plugin.Auth(None)
    now = [1000.0]
    monkeypatch.setattr(plugin.time, "monotonic", lambda: now[0])
    for _ in range(3):
        assert _signed_in(auth, "Alice@example.test", "right password") == "alice@example.test"
    assert len(dovecot.requests) == 1
    now[0] += plugin.CACHE_SECONDS + 1
    assert _signed_in(auth, "Alice@example.test", "right password") == "alice@example.test"
    assert len(dovecot.requests) == 2
    # Another password for the same login is a new question, never the remembered answer.
    assert _signed_in(auth, "Alice@example.test", "right password ") == ""


@pytest.mark.parametrize(
    "login",
    [
        "alice@example.test\tuser=root",
        "alice@example.test\nAUTH\t2",
        "a b@example.test",
        "",
        "x" * 321,
    ],
)
def test_a_login_that_could_add_protocol_fields_is_never_sent(
    dovecot: FakeDovecot, login: str
) -> None:
    assert _signed_in(plugin.Auth(None), login, "right password") == ""
    assert dovecot.requests == []


def test_tabs_and_newlines_are_escaped_in_every_field() -> None:
    line = plugin.auth_request(1, "alice@example.test", "pass\tword\nx", "2001:db8::1").decode()
    assert line.count("\n") == 1 and line.endswith("\n")
    fields = line.rstrip("\n").split("\t")
    assert fields[-1].startswith("resp=")  # the password only inside the base64 response
    assert base64.b64decode(fields[-1][5:]) == b"\0alice@example.test\0pass\tword\nx"
    assert plugin.tab_escaped("a\tb\nc\x01") == "a\x01tb\x01nc\x011"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("198.51.100.7", "198.51.100.7"), (" 2001:db8::1 ", "2001:db8::1"), ("x\trip=1.2.3.4", None),
     ("", None), (None, None)],
)  # fmt: skip
def test_only_an_address_from_the_front_is_passed_as_rip(
    header: str | None, expected: str | None
) -> None:
    assert plugin.client_address(header) == expected


def test_a_reply_not_for_this_request_is_an_error() -> None:
    assert plugin.parse_reply("OK\t1\tuser=alice@example.test\n", 1) == "alice@example.test"
    assert plugin.parse_reply("FAIL\t1\treason=x\n", 1) is None
    for bad in ("OK\t2\tuser=x\n", "CONT\t1\tAAAA\n", "OK\t1\n", "garbage"):
        with pytest.raises(plugin.AuthError):
            plugin.parse_reply(bad, 1)


def test_without_dovecots_socket_nobody_signs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin.ask_dovecot, "__defaults__", (str(tmp_path / "none"),))
    assert _signed_in(plugin.Auth(None), "Alice@example.test", "right password") == ""
