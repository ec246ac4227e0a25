"""The mail probe (update's verify, check health): which submission failures are worth
retrying, and the stored password tried before the probe mailbox is made or re-keyed."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from mailstack.runtime import probe
from mailstack.runtime.probe import is_temporary
from mailstack.stack import stackfiles
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import FakeContainers


@pytest.mark.parametrize(
    ("error", "temporary"),
    [
        (smtplib.SMTPRecipientsRefused({"a@x": (451, b"4.3.0 Temporary lookup failure")}), True),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"5.1.1 unknown"), "b@x": (451, b"")}), False),
        (smtplib.SMTPSenderRefused(421, b"4.7.0 try again later", "a@x"), True),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 authentication failed"), False),
        (smtplib.SMTPDataError(554, b"5.7.1 rejected"), False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
    ],
)
def test_only_temporary_refusals_and_dropped_connections_are_retried(
    error: Exception, temporary: bool
) -> None:
    assert is_temporary(error) is temporary


# --- the round trip of a stack: the stored password first -------------------------------------


def _probe_stack(tmp_path: Path) -> Stack:
    config = stackfiles.initial_config("mail.example.test", "example.test")
    stackfiles.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    return Stack(stack_dir, stack_dir.load_config(), FakeContainers())  # type: ignore[arg-type]


def _recording(monkeypatch: pytest.MonkeyPatch, refuse: set[str]) -> tuple[list[str], list[str]]:
    """(passwords tried, accounts ensured); a password in `refuse` gets a 535."""
    tried: list[str] = []
    ensured: list[str] = []

    def round_trip(
        config: object, ca: object, address: str, password: str, timeout: float
    ) -> probe.ProbeResult:
        tried.append(password)
        if password in refuse:
            raise probe.LoginRefused(f"the probe mailbox {address} could not log in: (535, ...)")
        return probe.ProbeResult(address, 1.0)

    def ensure(root: Path, config: object, executor: object) -> tuple[str, str]:
        ensured.append("made")
        return "mailstack-probe@example.test", "fresh"

    monkeypatch.setattr(probe, "round_trip", round_trip)
    monkeypatch.setattr(probe, "ensure_probe_account", ensure)
    return tried, ensured


def test_a_stored_password_is_tried_without_touching_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _probe_stack(tmp_path)
    (stack.dir.root / "secrets" / probe.PROBE_SECRET).write_text("stored\n")
    tried, ensured = _recording(monkeypatch, refuse=set())
    probe.stack_round_trip(stack, timeout=6)
    assert tried == ["stored"] and ensured == []


def test_a_refused_or_missing_password_makes_the_account_then_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = _probe_stack(tmp_path)
    tried, ensured = _recording(monkeypatch, refuse={"stored"})
    probe.stack_round_trip(stack, timeout=6)  # no stored password yet
    assert tried == ["fresh"] and ensured == ["made"]
    (stack.dir.root / "secrets" / probe.PROBE_SECRET).write_text("stored\n")
    probe.stack_round_trip(stack, timeout=6)
    assert tried == ["fresh", "stored", "fresh"] and ensured == ["made", "made"]
