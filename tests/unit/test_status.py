"""`mailstack status`: a failed healthcheck shows at once, not after Docker's retries."""

from __future__ import annotations

import pytest

from mailstack.adapters.compose import ServiceState
from mailstack.cli import output
from mailstack.runtime.lifecycle import StackStatus

REASON = "unhealthy: RCPT TO: 451 4.3.0 <x@example.test>: Temporary lookup failure"


def stack_status(*services: ServiceState) -> StackStatus:
    return StackStatus(
        project="demo", services=services, conflicts=(), deleted_by_operator=(), kept_dropped=()
    )


def service(name: str, failing_checks: int = 0, last_check: str = "") -> ServiceState:
    return ServiceState(
        name, f"demo-{name}-1", "running", "healthy", "Up", (), failing_checks, last_check
    )


def test_stack_with_every_check_passing_is_healthy() -> None:
    assert stack_status(service("db"), service("postfix")).healthy


def test_one_failed_check_makes_the_stack_unhealthy_while_docker_still_says_healthy() -> None:
    status = stack_status(service("db"), service("postfix", 1, REASON))
    assert status.services[1].health == "healthy"  # Docker's verdict, before its retries
    assert not status.healthy


def test_status_table_names_the_failing_service_and_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.status_table(stack_status(service("db"), service("postfix", 2, REASON)))
    captured = capsys.readouterr()
    assert "failing (2)" in captured.out
    assert f"postfix: healthcheck failed: {REASON}" in " ".join(captured.err.split())
