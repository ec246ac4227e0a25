"""Antivirus on the running stack: with features.antivirus on, ClamAV (sandbox signatures:
one matching the EICAR test string, nothing downloaded) scans every attachment through
rspamd, and an infected message is refused during the SMTP dialogue, on 587 and on 25.

The module turns antivirus on in mailstack.yaml (render, build, up: clamav starts; rspamd
restarted to load its antivirus config) and puts the file back afterwards (render, up
--remove-orphans drops clamav, rspamd restarted), so later tests see the usual stack.
"""

from __future__ import annotations

import io
import json
import smtplib
import uuid
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import pytest
import yaml

from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.e2e.conftest import PORTS, RunningStack
from tests.e2e.mail import (
    OUTSIDE_SENDER,
    fetch_by_subject,
    inbox_subjects,
    message,
    submit,
    wait_for_sink,
)

pytestmark = pytest.mark.e2e

# The EICAR test file, assembled so that this source file is not itself a "virus".
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"


def _services(stack: RunningStack) -> dict[str, dict[str, str]]:
    listed = json.loads(stack.cli("status", "--json").stdout)["services"]
    return {service["service"]: service for service in listed}


def _set_antivirus(stack: RunningStack, config_text: str) -> None:
    """Write mailstack.yaml, render, start what it names, and reload rspamd's config."""
    (stack.root / "mailstack.yaml").write_text(config_text)
    stack.cli("render")
    stack.cli("build")  # the clamav image as compose/clamav is checked out (layer cache)
    stack.cli("up", "--timeout", "400")
    # rspamd composes its config at start: restart it so that it (un)loads the scanner.
    stack.cli("restart", "rspamd")


@pytest.fixture(scope="module")
def antivirus(stack: RunningStack) -> Iterator[None]:
    path = stack.root / "mailstack.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    config["features"]["antivirus"] = True
    try:
        _set_antivirus(stack, yaml.safe_dump(config, sort_keys=False))
        yield
    finally:
        _set_antivirus(stack, original)
        assert "clamav" not in _services(stack)


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _with_attachment(
    sender: str, recipient: str, what: str, filename: str, data: bytes, subtype: str
) -> EmailMessage:
    mail = message(sender, recipient, f"e2e antivirus {what} {uuid.uuid4().hex}", "See attached.\n")
    mail.add_attachment(data, maintype="application", subtype=subtype, filename=filename)
    return mail


def _inbound(mail: EmailMessage) -> None:
    """Like another mail server: 25, no authentication."""
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=60) as smtp:
        smtp.ehlo("mx.sender.example")
        smtp.send_message(mail)


def _refusal(send: Callable[[], None]) -> tuple[int, str] | None:
    """The SMTP (code, text) a send was refused with, or None when it was accepted."""
    try:
        send()
    except smtplib.SMTPResponseException as e:
        error = e.smtp_error
        return e.smtp_code, error.decode(errors="replace") if isinstance(error, bytes) else error
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")
    return None


def test_clamav_runs_healthy_with_antivirus_on(stack: RunningStack, antivirus: None) -> None:
    clamav = _services(stack)["clamav"]
    assert (clamav["state"], clamav["health"]) == ("running", "healthy")
    # The sandbox signatures only: no freshclam, nothing fetched.
    logs = stack.compose("logs", "--no-color", "clamav").stdout.decode(errors="replace")
    assert "sandbox mode: local signatures only" in logs


def test_eicar_submitted_on_587_is_refused_at_smtp_time(
    stack: RunningStack, antivirus: None
) -> None:
    sender, password = stack.new_mailbox()
    mail = _with_attachment(
        sender, "friend@elsewhere.example", "587", "test-file.dat", EICAR, "octet-stream"
    )
    refused = _refusal(lambda: submit(stack, sender, password, mail))
    assert refused is not None and 500 <= refused[0] < 600, refused
    assert "virus" in refused[1].lower(), refused


def test_eicar_in_a_zip_inbound_on_25_is_refused_at_smtp_time(
    stack: RunningStack, antivirus: None
) -> None:
    recipient, password = stack.new_mailbox()
    mail = _with_attachment(
        OUTSIDE_SENDER, recipient, "25", "documents.zip", _zip("readme.txt", EICAR), "zip"
    )
    refused = _refusal(lambda: _inbound(mail))
    assert refused is not None and 500 <= refused[0] < 600, refused
    assert "virus" in refused[1].lower(), refused
    # Nothing was stored: a clean message sent afterwards is the only one there.
    clean = _with_attachment(OUTSIDE_SENDER, recipient, "after", "report.pdf", PDF, "pdf")
    _inbound(clean)
    fetch_by_subject(stack, recipient, password, str(clean["Subject"]))
    assert inbox_subjects(stack, recipient, password) == [str(clean["Subject"])]


def test_clean_attachments_still_pass_on_587_and_25(stack: RunningStack, antivirus: None) -> None:
    sender, password = stack.new_mailbox()
    recipient, recipient_password = stack.new_mailbox()
    outbound = _with_attachment(
        sender, "friend@elsewhere.example", "clean 587", "report.pdf", PDF, "pdf"
    )
    submit(stack, sender, password, outbound)
    wait_for_sink(stack, str(outbound["Subject"]))
    inbound = _with_attachment(
        OUTSIDE_SENDER, recipient, "clean 25", "notes.zip", _zip("notes.txt", b"hello\n"), "zip"
    )
    _inbound(inbound)
    received = fetch_by_subject(stack, recipient, recipient_password, str(inbound["Subject"]))
    attachments = [part.get_filename() for part in received.iter_attachments()]
    assert attachments == ["notes.zip"]


def test_clamavs_own_freshclam_reads_the_rendered_mirror_settings(
    stack: RunningStack, antivirus: None
) -> None:
    """antivirus.private_mirrors and checks_per_day as production renders them: the image's
    freshclam parses the file (a directive it did not know would fail here, not in production).
    Nothing is fetched: --version only parses."""
    config = validate_config(
        {
            "hostname": "mail.example.org",
            "domain": "example.org",
            "features": {"antivirus": True},
            "antivirus": {"private_mirrors": ["http://10.9.9.9:8000/clamav"], "checks_per_day": 6},
        }
    )
    text = render_stack(RenderInputs(config, "1.0.0"))["config/clamav/freshclam.conf"]
    assert b"PrivateMirror http://10.9.9.9:8000/clamav\n" in text
    path = "/tmp/e2e-freshclam.conf"
    script = f"cat > {path} && freshclam --config-file={path} --version; status=$?; rm -f {path}"
    done = stack.compose("exec", "-T", "clamav", "sh", "-c", f"{script}; exit $status", stdin=text)
    assert done.stdout.startswith(b"ClamAV "), done.stdout + done.stderr
