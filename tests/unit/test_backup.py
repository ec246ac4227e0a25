"""Backups without Docker: targets, the restic container's command line, error lines, the
daily timer's units, --only, the mail inventory, and the password made at init."""

from __future__ import annotations

import datetime
import shlex
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.backup.creation import probed_healthy_since
from mailstack.backup.recovery import Source, recover
from mailstack.backup.repository import repository_for
from mailstack.backup.restic import Mount, Repository, RepositoryMissing, explain_failure
from mailstack.backup.restoration import parse_only
from mailstack.backup.target import parse_target
from mailstack.backup.verification import inventory_of
from mailstack.cli.main import app
from mailstack.errors import ConfigError, MailstackError, UsageError
from mailstack.runtime import schedule
from mailstack.stack.config import Config, validate_config

runner = CliRunner()
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5bWFpbHN0YWNrYmFja3VwdGVzdA"


def config(**backup_section: object) -> object:
    return validate_config(
        {"hostname": "mail.example.org", "domain": "example.org", "backup": backup_section}
    )


# --- targets ---------------------------------------------------------------------------------


def test_a_local_path_is_mounted_as_the_repository() -> None:
    target = parse_target("/srv/backups/mail")
    assert (target.kind, target.repository, target.path) == ("local", "/repo", "/srv/backups/mail")


def test_sftp_and_s3_targets_become_restic_repositories() -> None:
    sftp = parse_target("sftp://backup@vault.example.org:2222/srv/mail")
    assert sftp.repository == "sftp:backup@vault.example.org:/srv/mail"
    assert (sftp.host, sftp.port, sftp.user) == ("vault.example.org", 2222, "backup")
    assert parse_target("sftp://b@vault.example.org/x").port == 22
    s3 = parse_target("s3://s3.example.org/bucket/mail")
    assert s3.repository == "s3:https://s3.example.org/bucket/mail"
    local_s3 = parse_target("s3+http://127.0.0.1:9000/bucket")
    assert local_s3.repository == "s3:http://127.0.0.1:9000/bucket"


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("backups/mail", "is not a backup target"),
        ("ftp://host.example.org/x", "is not a backup target"),
        ("sftp://vault.example.org/x", "needs a user"),
        ("s3://key@s3.example.org/bucket", "no user@ part"),
        ("/srv/back;ups", "is not a plain path"),
        ("sftp://u@vault.example.org/x\nExecStart=/bin/sh", "control character"),
        ("sftp://u@-bad-.example.org/x", "is not a host name"),
        # ':' is legal in a path, but `docker run -v` would split the path at it.
        ("/srv/backups:2026", "':' is not allowed"),
    ],
)
def test_bad_targets_are_refused_with_one_line(target: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config(target=target, ssh_host_key=HOST_KEY, s3_access_key_id="AKIAEXAMPLE")
    assert raised.value.message.startswith("mailstack.yaml: backup.target: ")
    assert allowed in raised.value.message


def test_remote_targets_need_their_credentials_named() -> None:
    with pytest.raises(ConfigError, match="needs ssh_host_key"):
        config(target="sftp://u@vault.example.org/x")
    with pytest.raises(ConfigError, match="needs s3_access_key_id"):
        config(target="s3://s3.example.org/bucket")
    with pytest.raises(ConfigError, match="is not an SSH public host key"):
        config(target="sftp://u@vault.example.org/x", ssh_host_key="ssh-dss AAAA")
    with pytest.raises(ConfigError, match="is not a time of day"):
        config(schedule_time="25:00")


def test_a_local_target_inside_the_stack_directory_is_refused(tmp_path: Path) -> None:
    settings = config(target=str(tmp_path / "stack" / "backups"))
    with pytest.raises(UsageError, match="is inside the stack directory"):
        repository_for(tmp_path / "stack", settings.backup, "mail", None)  # type: ignore[attr-defined]


# --- the container's command line ------------------------------------------------------------


def repository(target: str, tmp_path: Path, **extra: object) -> Repository:
    return Repository(
        image="mailstack/backup:test",
        target=parse_target(target),
        password_file=tmp_path / "secrets" / "backup_password",
        name="mail-backup-job",
        cache_volume="mail-backup-cache",
        **extra,  # type: ignore[arg-type]
    )


def test_the_password_reaches_restic_as_a_read_only_file_never_in_argv(tmp_path: Path) -> None:
    argv = (
        repository("/srv/backups", tmp_path)
        .job([Mount("mail_mail", "/backup/volumes/mail")])
        .argv()
    )
    text = shlex.join(argv)
    assert f"{tmp_path}/secrets/backup_password:/run/secrets/backup_password:ro" in argv
    assert "RESTIC_PASSWORD_FILE=/run/secrets/backup_password" in argv
    assert "RESTIC_PASSWORD=" not in text
    # A local repository needs no network; the data volumes are mounted read-only.
    assert argv[argv.index("--network") + 1] == "none"
    assert "mail_mail:/backup/volumes/mail:ro" in argv
    assert "/srv/backups:/repo" in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "no-new-privileges:true" in argv


def test_sftp_jobs_check_the_host_key_strictly(tmp_path: Path) -> None:
    remote = repository("sftp://backup@vault.example.org:2222/srv/mail", tmp_path)
    argv = remote.job().argv()
    command = remote.restic_args(["snapshots"])
    assert argv[argv.index("--network") + 1] == "host"
    assert command[0] == "-o" and command[-1] == "snapshots"
    assert "StrictHostKeyChecking=yes" in command[1] and "BatchMode=yes" in command[1]
    assert "-p 2222 backup@vault.example.org -s sftp" in command[1]
    # The diagnosis when a session fails: the same ssh, run directly in the same image.
    ssh, *arguments = remote.ssh_argv()
    direct = remote.job((), arguments, entrypoint=ssh, name="job-ssh").argv()
    assert direct[direct.index("--entrypoint") + 1] == "ssh"
    assert direct[direct.index("--name") + 1] == "job-ssh"
    assert direct[direct.index(remote.image) + 1 :] == arguments


# --- error lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ("Fatal: wrong password or no key found\n", 1, "wrong password for the backup repository"),
        (
            "Fatal: unable to open config file: stat /repo/config: no such file\n"
            "Is there a repository at the following location?\n/repo\n",
            1,
            "no backup repository at",
        ),
        (
            "Fatal: unable to save snapshot: write /repo/data/x: no space left on device\n",
            1,
            "is full (no space left on device)",
        ),
        (
            "subprocess ssh: ssh: connect to host 127.0.0.1 port 2: Connection refused\n"
            "Fatal: unable to open repository at sftp:u@h:/x: unable to start the sftp session\n",
            1,
            "is unreachable",
        ),
        (
            "Pack ID does not match, want 34, got a3\nFatal: repository contains errors\n",
            1,
            "is damaged",
        ),
        ("", 137, "was interrupted"),
    ],
)
def test_restic_failures_become_one_clear_line(output: str, code: int, expected: str) -> None:
    error = explain_failure("restic check", code, output, parse_target("/srv/b"))
    assert expected in error.message
    assert "\n" not in error.message
    assert isinstance(error, MailstackError)


def test_a_missing_repository_is_its_own_error_kind() -> None:
    error = explain_failure(
        "restic cat config",
        1,
        "Is there a repository at the following location?",
        parse_target("/srv/b"),
    )
    assert isinstance(error, RepositoryMissing)


# --- restore's --only, the inventory ---------------------------------------------------------


def test_only_takes_parts_and_mailboxes() -> None:
    parts, mailboxes = parse_only(["mail", "db", "Joe@Example.ORG", "mail"])
    assert parts == ("mail", "db")
    assert mailboxes == ("Joe@example.org",)
    with pytest.raises(UsageError, match="--only: 'everything' is not mail, db, config"):
        parse_only(["everything"])


def test_the_mail_inventory_counts_messages_per_mailbox(tmp_path: Path) -> None:
    home = tmp_path / "example.org" / "joe" / "Maildir"
    for folder, count in (("cur", 2), ("new", 1), (".Archive/cur", 3)):
        (home / folder).mkdir(parents=True)
        for number in range(count):
            (home / folder / f"{number}.mail").write_bytes(b"x" * 10)
    (home / "dovecot.index").write_bytes(b"not a message")
    assert inventory_of(tmp_path) == {"joe@example.org": (6, 60)}


# --- the daily timer -------------------------------------------------------------------------


def test_the_timer_runs_daily_in_the_stack_time_zone_and_catches_up(tmp_path: Path) -> None:
    settings = validate_config(
        {
            "hostname": "mail.example.org",
            "domain": "example.org",
            "timezone": "Europe/Berlin",
            "backup": {"schedule_time": "02:15"},
        }
    )
    timer = schedule.backup_timer(tmp_path / "my stack", settings)
    result = schedule.install(timer, tmp_path)
    timer_text = (tmp_path / "mailstack-backup-mailstack.timer").read_text()
    service = (tmp_path / "mailstack-backup-mailstack.service").read_text()
    assert "OnCalendar=*-*-* 02:15:00 Europe/Berlin" in timer_text
    assert "Persistent=true" in timer_text and "WantedBy=timers.target" in timer_text
    assert "Type=oneshot" in service
    commands = [
        shlex.split(line.removeprefix("ExecStart="))
        for line in service.splitlines()
        if line.startswith("ExecStart=")
    ]
    assert commands[0][1:] == [
        "-m", "mailstack", "backup", "create", "--tag", "daily", "--dir", str(tmp_path / "my stack"),
    ]  # fmt: skip
    assert commands[1][3:5] == ["backup", "prune"]
    assert not result.activated  # a unit directory of our own: systemd is not told
    removed = schedule.remove(timer, tmp_path)
    # The stack's last timer: its alert template goes with it.
    assert len(removed.units) == 3 and not list(tmp_path.glob("*.service"))


def test_systemd_quoting_keeps_specifiers_and_quotes_literal() -> None:
    assert schedule.systemd_quote('/srv/50% "mail" $HOME\\x') == (
        '"/srv/50%% \\"mail\\" $$HOME\\\\x"'
    )


# --- the password --------------------------------------------------------------------------


def test_init_makes_the_backup_password_once_and_says_to_store_it(stack_root: Path) -> None:
    args = ["init", "--non-interactive", "--hostname", "mail.example.test"]
    args += ["--domain", "example.test", "--dir", str(stack_root)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    secret = stack_root / "secrets" / "backup_password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "store this elsewhere" in first.output
    assert secret.read_text().strip() not in first.output
    kept = secret.read_bytes()
    again = runner.invoke(app, [*args, "--force"])
    assert again.exit_code == 0 and "store this elsewhere" not in again.output
    assert secret.read_bytes() == kept


def test_a_bad_tag_is_refused_before_anything_runs(stack_root: Path) -> None:
    args = ["init", "--non-interactive", "--hostname", "mail.example.test"]
    runner.invoke(app, [*args, "--domain", "example.test", "--dir", str(stack_root)])
    result = runner.invoke(app, ["backup", "create", "--tag", "bad tag;", "--dir", str(stack_root)])
    assert result.exit_code == 2
    assert "--tag: 'bad tag;' is not a tag" in result.output


def test_recovery_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "mailstack.yaml").write_text("hostname: x\n")
    source = Source(target="/srv/backups", password="secret")
    with pytest.raises(UsageError, match="is not empty"):
        recover(source, tmp_path / "stack")
    assert (tmp_path / "stack" / "mailstack.yaml").read_text() == "hostname: x\n"


def test_recovery_from_sftp_needs_the_key_and_the_host_key(tmp_path: Path) -> None:
    source = Source(target="sftp://backup@vault.example.org/srv/mail", password="secret")
    with pytest.raises(UsageError, match="needs --ssh-key and --ssh-host-key"):
        recover(source, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_restore_from_a_path_with_a_colon_is_one_clear_line(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("secret\n")
    result = runner.invoke(
        app,
        ["restore", "--from", "/srv/backups:old", "--dir", str(tmp_path / "new"),
         "--password-file", str(password)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "'/srv/backups:old'" in result.output and "':' is not allowed" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "new").exists()


def test_restore_command_names_an_unreadable_password_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["restore", "--from", "/srv/backups", "--dir", str(tmp_path / "new"),
         "--password-file", str(tmp_path / "missing")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--password-file:" in result.output and "cannot be read" in result.output


def test_after_the_pause_only_a_probe_started_later_counts() -> None:
    since = datetime.datetime(2026, 12, 5, 14, 40, 10, tzinfo=datetime.UTC).timestamp()
    before = {"Status": "healthy", "Log": [{"Start": "2026-12-05T14:40:09.999999999Z"}]}
    after = {"Status": "healthy", "Log": [{"Start": "2026-12-05T15:40:11.5+01:00"}]}
    stale = {"Status": "unhealthy", "Log": [{"Start": "2026-12-05T14:40:12Z"}]}
    assert not probed_healthy_since(before, since)
    assert probed_healthy_since(after, since)
    assert not probed_healthy_since(stale, since)
    assert probed_healthy_since(None, since)  # no healthcheck: nothing to wait for


@pytest.mark.parametrize(
    ("settings", "calendar"),
    [
        ({}, "Sun *-*-* 06:30:00 UTC"),
        ({"schedule_time": "22:15", "verify_schedule": "daily"}, "*-*-* 01:15:00 UTC"),
        ({"verify_schedule": "monthly"}, "*-*-01 06:30:00 UTC"),
    ],
)
def test_the_trial_restore_runs_three_hours_after_the_backup_on_its_days(
    settings: dict[str, str], calendar: str
) -> None:
    config = validate_config(
        {"hostname": "mail.example.org", "domain": "example.org", "backup": settings}
    )
    assert schedule.verify_calendar(config) == calendar


def test_backup_schedule_installs_the_verify_timer_unless_it_is_off(tmp_path: Path) -> None:
    def config(verify: str) -> Config:
        return validate_config({"hostname": "mail.example.org", "domain": "example.org",
                                "backup": {"verify_schedule": verify}})  # fmt: skip

    units = tmp_path / "units"
    results = schedule.switch_backup("on", tmp_path / "s", config("weekly"), units)
    assert [result.what for result in results] == ["daily backup", "backup verify (trial restore)"]
    service = (units / "mailstack-verify-mailstack.service").read_text()
    assert '"backup" "verify" "--dir"' in service and "Nice=10" in service
    assert "OnFailure=mailstack-alert-mailstack@%n.service" in service
    assert (
        "OnCalendar=Sun *-*-* 06:30:00 UTC"
        in (units / "mailstack-verify-mailstack.timer").read_text()
    )
    # Turned off in mailstack.yaml: the next `schedule on` removes the verify timer.
    schedule.switch_backup("on", tmp_path / "s", config("off"), units)
    assert not (units / "mailstack-verify-mailstack.timer").exists()
    assert (units / "mailstack-backup-mailstack.timer").exists()
    schedule.switch_backup("on", tmp_path / "s", config("weekly"), units)
    schedule.switch_backup("off", tmp_path / "s", config("weekly"), units)
    assert list(units.iterdir()) == []


def test_a_verify_schedule_that_is_no_choice_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config({"hostname": "mail.example.org", "domain": "example.org",
                         "backup": {"verify_schedule": "hourly"}})  # fmt: skip
    assert "backup.verify_schedule" in str(refused.value) and "weekly" in str(refused.value)
