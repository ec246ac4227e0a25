"""The host's side of the host reports (mailstack.runtime.hostreports): which reports there
are, how often each is made, and publishing the ones that are due. `mailstack jobs run`
calls publish_due every minute, after the queued jobs, so a page that asked for a change
(clear a ban, delete queued mail) shows its effect in the same run.

A report that cannot be made is published as {"error": "<the one line>"}: the page then
says what is wrong instead of showing an old report as if it were current.

A report may come in parts (dns: each mail domain's report is topic "dns:<domain>", too
large together for one report): its producer's make returns {topic: body}, its own topic
the index; the parts it no longer makes (a domain removed) are deleted; make_part remakes
one part when a job changed only that (a domain's key rotated, its page's "Refresh now").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mailstack.backup import report as backup_report
from mailstack.errors import MailstackError
from mailstack.mailauth import dnsreport
from mailstack.runtime import bans, hostreports, lifecycle, mailqueue
from mailstack.stack.stackdir import Stack

# The timer fires every minute, give or take a few seconds: a report due "every 60 s" must
# not skip every other run because it is 58 s old.
_TIMER_SLACK_SECONDS = 10


@dataclass(frozen=True)
class Producer:
    topic: str
    every_seconds: int
    make: Callable[[Stack], Any]  # the report's JSON body; a MailstackError says why not
    in_parts: bool = False  # make returns {topic: body}: this topic and "topic:part"s
    make_part: Callable[[Stack, str], Mapping[str, Any]] | None = None  # one part's topic


@dataclass(frozen=True)
class Published:
    topic: str
    error: str = ""
    parts: int = 0

    def __str__(self) -> str:
        if self.error:
            return f"{self.topic} report: could not be made: {self.error}"
        if self.parts:
            return f"{self.topic} report published, and its {self.parts} {self.topic}:… parts"
        return f"{self.topic} report published"


def health_report(stack: Stack) -> dict[str, Any]:
    """`mailstack status` as the admin's health page shows it."""
    found = lifecycle.status(stack)
    return {
        "healthy": found.healthy,
        "services": [
            {
                "service": state.service,
                "state": state.state,
                "health": state.health,
                "status": state.status,
                "failing_checks": state.failing_checks,
                "last_check": state.last_check[:300],
            }
            for state in found.services
        ],
        "conflicts": list(found.conflicts),
        "security": found.security,
        "security_pending": found.security_pending,
    }


# Each topic's report is made by the code that knows its subject; one line each here.
PRODUCERS: dict[str, Producer] = {
    producer.topic: producer
    for producer in (
        Producer(hostreports.HEALTH, 60, health_report),
        Producer(hostreports.QUEUE, 60, mailqueue.queue_report),
        Producer(hostreports.BANS, 60, bans.bans_report),
        Producer(hostreports.BACKUPS, backup_report.EVERY_SECONDS, backup_report.backups_report),
        Producer(
            hostreports.DNS,
            dnsreport.EVERY_SECONDS,
            dnsreport.dns_reports,
            in_parts=True,
            make_part=dnsreport.domain_reports,
        ),
    )
}


def due_topics(ages: dict[str, int], forced: Collection[str]) -> list[str]:
    """The registered topics to make now: never made, old enough, or asked for."""
    return [
        topic
        for topic, producer in PRODUCERS.items()
        if topic in forced
        or topic not in ages
        or ages[topic] + _TIMER_SLACK_SECONDS >= producer.every_seconds
    ]


def publish_due(stack: Stack, forced: Collection[str] = ()) -> tuple[Published, ...]:
    """The due reports, and the parts asked for ("dns:<domain>") of reports not due."""
    published: list[Published] = []
    due = due_topics(hostreports.ages(stack.compose), forced)
    for topic in due:
        published.append(publish_one(stack, PRODUCERS[topic]))
    for part in sorted(forced):
        owner, colon, _ = part.partition(":")
        producer = PRODUCERS.get(owner)
        if colon and owner not in due and producer is not None and producer.make_part:
            published.append(publish_part(stack, producer, part))
    return tuple(published)


def publish_one(stack: Stack, producer: Producer) -> Published:
    try:
        made = producer.make(stack)
    except MailstackError as error:
        line = _line(error)
        hostreports.publish(stack.compose, producer.topic, {"error": line})
        return Published(producer.topic, line)
    if not producer.in_parts:
        hostreports.publish(stack.compose, producer.topic, made)
        return Published(producer.topic)
    _publish_each(stack, made)
    parts = [topic for topic in made if topic != producer.topic]
    hostreports.prune_parts(stack.compose, producer.topic, parts)
    return Published(producer.topic, parts=len(parts))


def publish_part(stack: Stack, producer: Producer, part: str) -> Published:
    """One part of a report in parts (and what else its maker remade: the index's line)."""
    if producer.make_part is None:
        return Published(part, f"the {producer.topic} report is not made in parts")
    try:
        made = producer.make_part(stack, part)
    except MailstackError as error:
        return Published(part, _line(error))  # published nowhere: the part may not exist
    _publish_each(stack, made)
    return Published(part)


def _publish_each(stack: Stack, made: Mapping[str, Any]) -> None:
    """Each {topic: body}; one too large for a report is published as that error."""
    for topic, body in made.items():
        try:
            hostreports.publish(stack.compose, topic, body)
        except MailstackError as error:
            hostreports.publish(stack.compose, topic, {"error": _line(error)})


def _line(error: MailstackError) -> str:
    return error.message.splitlines()[0] if error.message else type(error).__name__
