"""The host's side of the host reports (mailstack.runtime.hostreports): which reports there
are, how often each is made, and publishing the ones that are due. `mailstack jobs run`
calls publish_due every minute, after the queued jobs, so a page that asked for a change
(clear a ban, delete queued mail) shows its effect in the same run.

A report that cannot be made is published as {"error": "<the one line>"}: the page then
says what is wrong instead of showing an old report as if it were current.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
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


@dataclass(frozen=True)
class Published:
    topic: str
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"{self.topic} report: could not be made: {self.error}"
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
        Producer(hostreports.DNS, dnsreport.EVERY_SECONDS, dnsreport.dns_report),
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
    published: list[Published] = []
    for topic in due_topics(hostreports.ages(stack.compose), forced):
        published.append(publish_one(stack, PRODUCERS[topic]))
    return tuple(published)


def publish_one(stack: Stack, producer: Producer) -> Published:
    try:
        body = producer.make(stack)
    except MailstackError as error:
        line = error.message.splitlines()[0] if error.message else type(error).__name__
        hostreports.publish(stack.compose, producer.topic, {"error": line})
        return Published(producer.topic, line)
    hostreports.publish(stack.compose, producer.topic, body)
    return Published(producer.topic)
