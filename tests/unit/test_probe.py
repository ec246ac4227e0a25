"""The update's mail probe: which submission failures are worth retrying."""

from __future__ import annotations

import smtplib

import pytest

from mailstack.runtime.probe import is_temporary


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
