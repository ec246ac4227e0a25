"""An outside MTA that keeps delivering while a stack is updated: no message may be lost."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SteadySender:
    """Delivers one message every `interval` seconds, retrying on 4xx and on connection
    errors as a real MTA would, until stopped; a 5xx stops the sender (see `refused`)."""

    send: Callable[[str], None]  # delivers one message with this subject
    interval: float = 0.2
    sent: list[str] = field(default_factory=list)
    retries: int = 0
    refused: list[str] = field(default_factory=list)  # 5xx: the sender gives up, as an MTA does
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            subject = f"steady {number:04d}"
            while True:
                try:
                    self.send(subject)
                    break
                except (OSError, smtplib.SMTPException) as e:
                    if permanent(e):
                        self.refused.append(f"{subject}: {e}")
                        return
                    self.retries += 1
                    time.sleep(0.5)
            self.sent.append(subject)
            number += 1
            time.sleep(self.interval)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)


def permanent(error: Exception) -> bool:
    """Whether an SMTP failure is a 5xx (given up), not a 4xx or a lost connection (retried)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):  # every recipient refused at RCPT
        return any(code >= 500 for code, _ in error.recipients.values())
    return isinstance(error, smtplib.SMTPResponseException) and error.smtp_code >= 500
