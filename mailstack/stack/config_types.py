"""The config model's value types: each one value's check (mailstack.stack.config_values)
as a pydantic type. Kept apart so that the checks themselves need no pydantic (the input
rules of mailstack.accounts.names, and the admin service, use them)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from mailstack.stack.config_values import (
    check_absolute_path,
    check_backup_target,
    check_daily_time,
    check_daily_time_or_off,
    check_engine_url,
    check_feed_url,
    check_ip,
    check_mirror_url,
    check_node_name,
    check_project,
    check_registry,
    check_ssh_host_key,
    check_subnet,
    check_timezone,
    check_window,
    normalize_address,
    normalize_domain,
    normalize_extension,
)

Domain = Annotated[str, AfterValidator(normalize_domain)]
Address = Annotated[str, AfterValidator(normalize_address)]
Port = Annotated[int, Field(ge=1, le=65535)]
IPv4 = Annotated[str, AfterValidator(lambda v: check_ip(v, 4))]
IPv6 = Annotated[str, AfterValidator(lambda v: check_ip(v, 6))]
Subnet = Annotated[str, AfterValidator(check_subnet)]
AbsolutePath = Annotated[str, AfterValidator(check_absolute_path)]
TimeZone = Annotated[str, AfterValidator(check_timezone)]
ProjectName = Annotated[str, AfterValidator(check_project)]
Registry = Annotated[str, AfterValidator(check_registry)]
Extension = Annotated[str, AfterValidator(normalize_extension)]
FeedUrl = Annotated[str, AfterValidator(check_feed_url)]
MirrorUrl = Annotated[str, AfterValidator(check_mirror_url)]
Score = Annotated[float, Field(ge=0, le=1000)]
BackupTarget = Annotated[str, AfterValidator(check_backup_target)]
SshHostKey = Annotated[str, AfterValidator(check_ssh_host_key)]
NodeName = Annotated[str, AfterValidator(check_node_name)]
EngineUrl = Annotated[str, AfterValidator(check_engine_url)]
S3KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+/=-]{3,128}$")]
DailyTime = Annotated[str, AfterValidator(check_daily_time)]
DailyTimeOrOff = Annotated[str, AfterValidator(check_daily_time_or_off)]
TimeWindow = Annotated[str, AfterValidator(check_window)]
