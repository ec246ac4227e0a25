"""`domain add` publishes the domain's DKIM key: every running service whose rendered config
changed takes it, by a reload where its registry record has one, else a restart; nothing
changed, nothing restarted. The running stack's side is in tests/e2e/test_accounts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack import services
from mailstack.stack import stackfiles as stack_ops
from mailstack.stack.stackdir import Stack, StackDir
from tests.unit.fakes import FakeContainers

EVERY_SERVICE = tuple(service.name for service in services.SERVICES)


def _stack(tmp_path: Path, fake: FakeContainers, mode: str = "sandbox") -> Stack:
    config = stack_ops.initial_config("mail.example.test", "example.test", {"mode": mode})
    stack_ops.init_stack(tmp_path / "stack", config, check_ports=False)
    stack_dir = StackDir(tmp_path / "stack")
    return Stack(stack_dir, stack_dir.load_config(), fake)  # type: ignore[arg-type]


def _restarted(fake: FakeContainers) -> list[str]:
    return [name for command in fake.commands if command[0] == "restart" for name in command[1:]]


def _config_reloads(fake: FakeContainers) -> list[str]:
    return [
        call.service
        for call in fake.calls
        if services.named(call.service).config_reload == tuple(call.argv)
    ]


def test_a_new_domain_restarts_the_services_whose_config_changed_and_reloads_the_front(
    tmp_path: Path,
) -> None:
    fake = FakeContainers(running=EVERY_SERVICE)
    stack = _stack(tmp_path, fake)
    result = stack_ops.publish_domain_key(stack, "other.test")
    # rspamd signs with the new key and knows the domain as hosted; the sandbox resolver
    # serves its records; neither has a reload, so both restart, once.
    assert sorted(result.restarted) == ["resolver", "rspamd"]
    assert _restarted(fake).count("rspamd") == 1
    assert _restarted(fake).count("resolver") == 1
    # The front answers the domain's web names after a reload, never a restart.
    assert result.config_reloaded == ("front",)
    assert "front" in _config_reloads(fake)
    assert "front" not in _restarted(fake)
    assert "reloaded front: it now answers the web names of other.test" in str(result)


def test_production_leaves_the_resolver_alone(tmp_path: Path) -> None:
    fake = FakeContainers(running=EVERY_SERVICE)
    stack = _stack(tmp_path, fake, mode="production")
    result = stack_ops.publish_domain_key(stack, "other.test")
    assert result.restarted == ("rspamd",)
    assert "resolver" not in _restarted(fake)


def test_the_same_domain_again_changes_nothing_and_restarts_nothing(tmp_path: Path) -> None:
    fake = FakeContainers(running=EVERY_SERVICE)
    stack = _stack(tmp_path, fake)
    stack_ops.publish_domain_key(stack, "other.test")
    fake.commands.clear()
    fake.calls.clear()
    again = stack_ops.publish_domain_key(stack, "other.test")
    assert not again.created
    assert (again.restarted, again.config_reloaded, again.reloaded) == ((), (), ())
    assert fake.commands == [] and fake.calls == []


def test_a_stopped_stack_gets_its_files_and_no_restart(tmp_path: Path) -> None:
    fake = FakeContainers(running=())
    stack = _stack(tmp_path, fake)
    result = stack_ops.publish_domain_key(stack, "other.test")
    assert result.created
    assert (result.restarted, result.config_reloaded, result.reloaded) == ((), (), ())
    assert fake.commands == []
    hosted = (stack.dir.root / "config/rspamd/hosted_domains.map").read_text()
    assert "other.test" in hosted


@pytest.mark.parametrize("stopped", ["rspamd", "front"])
def test_a_stopped_service_is_not_started_by_a_new_domain(tmp_path: Path, stopped: str) -> None:
    fake = FakeContainers(running=tuple(name for name in EVERY_SERVICE if name != stopped))
    stack = _stack(tmp_path, fake)
    stack_ops.publish_domain_key(stack, "other.test")
    assert stopped not in _restarted(fake)
    assert stopped not in {call.service for call in fake.calls}
