"""Spam learning on the running stack (features.spam_learning, on by default): a user who moves
a message into Junk over IMAP teaches rspamd's Bayes filter spam, one who moves it out of Junk
teaches it ham, and a move from Junk to Trash teaches nothing. Read from rspamd's Bayes
counters in Redis.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.e2e.conftest import RunningStack
from tests.e2e.mail import fetch_by_subject, imaps, send_inbound, unique_subject

pytestmark = pytest.mark.e2e

VOCABULARY = (
    "invoice shipment quarterly garden harbour lantern meadow orchard pebble quartz ribbon saddle "
    "timber umbrella velvet walnut yonder zephyr anchor beacon candle dolphin ember falcon "
    "glacier hammock island jasmine kettle lagoon marble nectar"
)
WORDS = VOCABULARY.split()


# rspamd's Bayes counters in Redis (the "RS" hash: learns_spam, learns_ham), read with the
# password from Redis's own secret (REDISCLI_AUTH keeps it out of argv). `rspamc stat` shows
# the same counts, but only after its next periodic refresh (half a minute or more).
_COUNTERS = (
    "export REDISCLI_AUTH=$(tr -d '\\r\\n' < /run/secrets/redis_password); "
    "redis-cli --no-raw HMGET RS learns_spam learns_ham"
)


def learned(stack: RunningStack) -> dict[str, int]:
    """{"BAYES_SPAM": n, "BAYES_HAM": m}: what rspamd has learned so far."""
    reply = stack.compose("exec", "-T", "redis", "sh", "-c", _COUNTERS).stdout.decode()
    values = re.findall(r'^\d+\) (?:"(\d+)"|\(nil\))$', reply, re.MULTILINE)
    assert len(values) == 2, reply
    spam, ham = (int(value or 0) for value in values)
    return {"BAYES_SPAM": spam, "BAYES_HAM": ham}


def hook_log(stack: RunningStack) -> str:
    """Dovecot's and rspamd's recent lines about Sieve and learning: why nothing was learned."""
    logs = stack.compose("logs", "--no-color", "--tail", "300", "dovecot", "rspamd").stdout
    wanted = ("sieve", "learn", "imapsieve", "pipe", "controller", "rror", "arning")
    return "\n".join(
        line
        for line in logs.decode(errors="replace").splitlines()
        if any(w in line for w in wanted)
    )


def wait_for_learned(stack: RunningStack, expected: dict[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := learned(stack)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"learned {now}, expected {expected}\n{hook_log(stack)}")
        time.sleep(0.5)


def deliver(stack: RunningStack, address: str, password: str) -> str:
    """A message of its own words (rspamd learns nothing twice, nor from under 11 tokens)."""
    subject = unique_subject("learning")
    salt = uuid.uuid4().hex
    body = " ".join(f"{word}{salt[i % 32]}" for i, word in enumerate(WORDS * 3)) + "\n"
    send_inbound([address], subject, body)
    fetch_by_subject(stack, address, password, subject)
    return subject


def move(
    stack: RunningStack, address: str, password: str, subject: str, source: str, to: str
) -> None:
    with imaps(stack) as imap:
        imap.login(address, password)
        imap.select(source)
        _, found = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        (uid,) = found[0].split()
        status, _ = imap.uid("MOVE", uid.decode(), to)
        assert status == "OK"


def test_moves_into_and_out_of_junk_teach_rspamd_and_trash_teaches_nothing(
    stack: RunningStack,
) -> None:
    address, password = stack.new_mailbox()
    first = deliver(stack, address, password)
    second = deliver(stack, address, password)
    before = learned(stack)

    move(stack, address, password, first, "INBOX", "Junk")
    wait_for_learned(stack, {**before, "BAYES_SPAM": before["BAYES_SPAM"] + 1})

    move(stack, address, password, first, "Junk", "INBOX")
    deadline = time.monotonic() + 30
    while (now := learned(stack))["BAYES_HAM"] != before["BAYES_HAM"] + 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"learned {now}: no ham after leaving Junk\n{hook_log(stack)}")
        time.sleep(0.5)
    # rspamd moves a message it had learned as spam over to ham (the spam count may drop back).
    assert now["BAYES_SPAM"] in (before["BAYES_SPAM"], before["BAYES_SPAM"] + 1), now

    move(stack, address, password, second, "INBOX", "Junk")
    after_spam = {**now, "BAYES_SPAM": now["BAYES_SPAM"] + 1}
    wait_for_learned(stack, after_spam)
    move(stack, address, password, second, "Junk", "Trash")
    time.sleep(3)  # the hook runs within the MOVE; give a wrongly learned ham time to show
    assert learned(stack) == after_spam
