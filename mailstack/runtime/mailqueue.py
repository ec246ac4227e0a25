"""The Postfix mail queue: list it (`postqueue -j`), retry a message or all (`postqueue -i ID`,
`postqueue -f`), delete a message (`postsuper -d ID`), each run in the postfix container
through the Compose adapter. `mailstack queue ...` calls it on the host; the admin service,
which has no Docker socket, reads the `queue` host report this module makes and queues
queue.retry / queue.delete host jobs, which `mailstack jobs run` hands to the runners here.

What postqueue prints is partly written by strangers (an envelope sender, a recipient, a
remote server's reply in the delay reason): every field is typed, cut to a bound and
stripped of control characters before it reaches a terminal, a page or the report.

A queue id reaches argv only after `queue_id` accepted it (a job's target comes from the
database, which the admin service may write). No pydantic, typer or rich here: the admin
service loads `queue_id` to refuse a bad id before it queues a job.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, NotFound, UsageError

if TYPE_CHECKING:
    from mailstack.stack.stackdir import Stack

SERVICE = "postfix"  # services.POSTFIX.name (services imports the config model)
ALL = "ALL"  # a retry job's target for every message (`postqueue -f`); never a deletion's
# Postfix's queue ids: short ones are upper-case hex (microseconds and inode number);
# long ones (enable_long_queue_ids) use digits and consonants, base 52. Neither has a
# character argv or a shell could read as anything but the id (no '-', no spaces).
_SHORT_ID = re.compile(r"[0-9A-F]{6,20}")
_LONG_ID = re.compile(r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
MAX_ADDRESS = 320
MAX_REASON = 300
MAX_RECIPIENTS = 20  # per message in a listing; the rest are counted
# The host report: the oldest messages first, at most this many and this many bytes (the
# whole body must stay under hostreports.MAX_REPORT_BYTES).
REPORT_MESSAGES = 200
REPORT_BYTES = 90_000
_QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")


@dataclass(frozen=True)
class Recipient:
    address: str
    delay_reason: str  # empty until a delivery attempt failed

    def __str__(self) -> str:
        return f"{self.address}" + (f" ({self.delay_reason})" if self.delay_reason else "")


@dataclass(frozen=True)
class QueuedMessage:
    queue_id: str
    queue_name: str  # active, deferred, hold, incoming, maildrop
    arrival_time: int  # seconds since the epoch
    message_size: int  # bytes
    sender: str  # empty: the null sender (a bounce)
    recipients: tuple[Recipient, ...]
    recipients_left_out: int = 0

    def __str__(self) -> str:
        arrived = _iso(self.arrival_time)
        more = f" and {self.recipients_left_out} more" if self.recipients_left_out else ""
        to = "; ".join(str(recipient) for recipient in self.recipients)
        return (
            f"{self.queue_id}  {self.queue_name}  {arrived}  {self.message_size} bytes  "
            f"from {self.sender or '<>'} to {to}{more}"
        )


@dataclass(frozen=True)
class MailQueue:
    messages: tuple[QueuedMessage, ...]  # oldest first

    def __str__(self) -> str:
        if not self.messages:
            return "the mail queue is empty"
        return "\n".join([*map(str, self.messages), f"{len(self.messages)} message(s) queued"])


@dataclass(frozen=True)
class QueueChange:
    action: str  # retried | deleted
    target: str  # a queue id, or ALL
    detail: str  # Postfix's own line, if it said one

    def __str__(self) -> str:
        what = "every queued message" if self.target == ALL else f"queued message {self.target}"
        verb = "asked to be delivered now" if self.action == "retried" else "deleted"
        return f"{what}: {verb}" + (f" ({self.detail})" if self.detail else "")


def queue_id(text: str, *, argument: str = "ID", allow_all: bool = False) -> str:
    """A Postfix queue id (short or long), or ALL where allowed; UsageError naming the
    argument otherwise."""
    value = text.strip()
    if allow_all and value == ALL:
        return ALL
    if _SHORT_ID.fullmatch(value) or _LONG_ID.fullmatch(value):
        return value
    allowed = "a Postfix queue id (e.g. 4XbQ2D1kKzz3Q or 3F1A2B4C5D)"
    if allow_all:
        allowed += " or ALL"
    elif value == ALL:
        allowed += "; ALL is refused here: delete messages one by one"
    raise UsageError(f"{argument}: {text[:80]!r} is not {allowed}")


# --- Postfix's commands -----------------------------------------------------------------------


def list_queue(compose: Executor) -> MailQueue:
    """Every message in the queue (`postqueue -j`), oldest first."""
    output = _postfix(compose, ["postqueue", "-j"])
    return MailQueue(parse_postqueue_json(output))


def retry(compose: Executor, target: str) -> QueueChange:
    """Ask for delivery now: one message (`postqueue -i ID`) or all (`postqueue -f`)."""
    wanted = queue_id(target, allow_all=True)
    if wanted == ALL:
        return QueueChange("retried", ALL, _one_line(_postfix(compose, ["postqueue", "-f"])))
    # postqueue -i says nothing of an id that is not queued: the listing does.
    if not _queued(compose, wanted):
        raise _not_queued(wanted)
    return QueueChange("retried", wanted, _one_line(_postfix(compose, ["postqueue", "-i", wanted])))


def delete(compose: Executor, target: str) -> QueueChange:
    """Delete one message (`postsuper -d ID`); NotFound when it is not queued (delivered or
    deleted already)."""
    wanted = queue_id(target)
    if not _queued(compose, wanted):
        raise _not_queued(wanted)
    # postsuper reports on stderr and exits 0 whether or not it found the id: the listing
    # after it decides.
    _postfix(compose, ["postsuper", "-d", wanted])
    if _queued(compose, wanted):
        raise MailstackError(f"queued message {wanted} is still in the queue after postsuper -d")
    return QueueChange("deleted", wanted, "")


def _queued(compose: Executor, wanted: str) -> bool:
    return any(message.queue_id == wanted for message in list_queue(compose).messages)


def _not_queued(wanted: str) -> NotFound:
    return NotFound(f"ID: {wanted} is not in the mail queue (delivered or deleted already)")


def _postfix(compose: Executor, argv: list[str]) -> bytes:
    try:
        return compose.exec(SERVICE, argv, timeout=60)
    except ExternalCommandFailed as failed:
        if "not running" in failed.output or "No such service" in failed.output:
            raise MailstackError(
                "the postfix service is not running", hint="start the stack: `mailstack up`"
            ) from None
        raise


# --- parsing `postqueue -j` -------------------------------------------------------------------


def parse_postqueue_json(output: bytes) -> tuple[QueuedMessage, ...]:
    """One JSON object per line (Postfix 3.1+); oldest first. A line that is not one is the
    program's failure, not a message: refused whole."""
    messages: list[QueuedMessage] = []
    for number, line in enumerate(output.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise MailstackError(
                f"postqueue -j gave line {number} that is not JSON: {_clean(line, 120)!r}"
            ) from None
        if not isinstance(item, dict):
            raise MailstackError(f"postqueue -j gave line {number} that is not an object")
        messages.append(_message(item, number))
    return tuple(sorted(messages, key=lambda message: (message.arrival_time, message.queue_id)))


def _message(item: dict[str, Any], number: int) -> QueuedMessage:
    raw_id = item.get("queue_id")
    try:
        found = queue_id(raw_id if isinstance(raw_id, str) else "")
    except UsageError:
        raise MailstackError(
            f"postqueue -j gave line {number} without a queue id: {_clean(str(raw_id), 40)!r}"
        ) from None
    name = item.get("queue_name")
    raw_recipients = item.get("recipients")
    listed = [
        entry
        for entry in (raw_recipients if isinstance(raw_recipients, list) else [])
        if isinstance(entry, dict)
    ]
    recipients = tuple(
        Recipient(
            _clean(entry.get("address"), MAX_ADDRESS),
            _clean(entry.get("delay_reason"), MAX_REASON),
        )
        for entry in listed[:MAX_RECIPIENTS]
    )
    return QueuedMessage(
        queue_id=found,
        queue_name=name if name in _QUEUES else "unknown",
        arrival_time=_count(item.get("arrival_time")),
        message_size=_count(item.get("message_size")),
        sender=_clean(item.get("sender"), MAX_ADDRESS),
        recipients=recipients,
        recipients_left_out=max(0, len(listed) - MAX_RECIPIENTS),
    )


def _clean(value: object, limit: int) -> str:
    """A stranger's text as one printable line, at most `limit` characters."""
    text = _CONTROL.sub(" ", value).strip() if isinstance(value, str) else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _one_line(output: bytes) -> str:
    return _clean(output.decode("utf-8", "replace"), MAX_REASON)


def _iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the host report and the host jobs --------------------------------------------------------


def report_body(found: MailQueue, now: int) -> dict[str, Any]:
    """The `queue` host report: the count, the oldest's age, and the oldest messages (at
    most REPORT_MESSAGES and REPORT_BYTES; how many were left out)."""
    shown: list[dict[str, Any]] = []
    size = 0
    for message in found.messages[:REPORT_MESSAGES]:
        entry = _entry(message)
        size += len(json.dumps(entry))
        if size > REPORT_BYTES:
            break
        shown.append(entry)
    oldest = found.messages[0].arrival_time if found.messages else None
    return {
        "total": len(found.messages),
        "oldest_seconds": max(0, now - oldest) if oldest is not None else None,
        "left_out": len(found.messages) - len(shown),
        "messages": shown,
    }


def _entry(message: QueuedMessage) -> dict[str, Any]:
    return {
        "queue_id": message.queue_id,
        "queue_name": message.queue_name,
        "arrival_time": _iso(message.arrival_time),
        "message_size": message.message_size,
        "sender": message.sender,
        "recipients": [
            {"address": r.address, "delay_reason": r.delay_reason} for r in message.recipients
        ],
        "recipients_left_out": message.recipients_left_out,
    }


def queue_report(stack: Stack, clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """The `queue` host report's producer (runtime.reports.PRODUCERS)."""
    now = clock() if clock else datetime.datetime.now(datetime.UTC).timestamp()
    return report_body(list_queue(stack.compose), int(now))


def retry_job(stack: Stack, target: str) -> str:
    """A queue.retry host job (runtime.jobs): its target checked again, then retried."""
    return str(retry(stack.compose, queue_id(target, argument="target", allow_all=True)))


def delete_job(stack: Stack, target: str) -> str:
    """A queue.delete host job: one message, never ALL."""
    return str(delete(stack.compose, queue_id(target, argument="target")))
