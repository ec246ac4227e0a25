"""features.spam_learning: Dovecot's IMAPSieve reports users' moves into and out of Junk to
rspamd, which admits Dovecot's fixed address (and only it besides its own loopback) to learn."""

from __future__ import annotations

from typing import Any

from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE


def render(**features: Any) -> dict[str, str]:
    config = validate_config({**REFERENCE, "features": features})
    return {path: data.decode() for path, data in render_stack(RenderInputs(config, "1")).items()}


def test_spam_learning_is_on_by_default_and_hooks_junk_both_ways() -> None:
    files = render()
    dovecot = files["config/dovecot/dovecot.conf"]
    assert "mail_plugins = $mail_plugins imap_quota last_login imap_sieve\n" in dovecot
    assert "imapsieve_mailbox1_name = Junk\n" in dovecot
    assert "imapsieve_mailbox1_before = file:/run/mailstack-sieve/learn/learn-spam.sieve" in dovecot
    assert "imapsieve_mailbox2_from = Junk\n" in dovecot
    assert "imapsieve_mailbox2_before = file:/run/mailstack-sieve/learn/learn-ham.sieve" in dovecot
    # pipe is an administrator's extension: users' own scripts never get it.
    assert "sieve_global_extensions = +vnd.dovecot.pipe" in dovecot
    assert "\n  sieve_extensions" not in dovecot
    assert (
        'pipe :copy "rspamd-learn" ["spam"];'
        in files["config/dovecot/sieve/learn/learn-spam.sieve"]
    )
    ham = files["config/dovecot/sieve/learn/learn-ham.sieve"]
    assert 'if string :is "${destination}" "Trash" {\n  stop;' in ham
    assert ham.index("stop;") < ham.index('pipe :copy "rspamd-learn" ["ham"];')


def test_rspamd_admits_dovecots_address_alone_for_learning() -> None:
    controller = render()["config/rspamd/worker-controller.inc"]
    secure = next(line for line in controller.splitlines() if line.startswith("secure_ip"))
    assert secure == 'secure_ip = ["127.0.0.1", "::1", "172.29.81.24"];'


def test_spam_learning_off_leaves_no_hook_script_or_address() -> None:
    files = render(spam_learning=False)
    assert "imapsieve" not in files["config/dovecot/dovecot.conf"]
    assert "imap_sieve" not in files["config/dovecot/dovecot.conf"]
    assert not [path for path in files if "/sieve/learn/" in path]
    assert 'secure_ip = ["127.0.0.1", "::1"];' in files["config/rspamd/worker-controller.inc"]
