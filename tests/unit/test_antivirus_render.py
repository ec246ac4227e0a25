"""features.antivirus: the clamav service, its config and rspamd's antivirus hook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack.errors import ConfigError
from mailstack.resources import build_contexts_dir
from mailstack.stack.config import validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE
from tests.unit.compose_check import assert_compose_accepts

# The EICAR test file, assembled so that this source file is not itself a "virus".
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def render(*, antivirus: bool, mode: str = "sandbox") -> dict[str, bytes]:
    config = validate_config({**REFERENCE, "mode": mode, "features": {"antivirus": antivirus}})
    return render_stack(RenderInputs(config, "1.0.0"))


def compose_of(files: dict[str, bytes]) -> dict[str, Any]:
    document = yaml.safe_load(files["compose.yaml"])
    assert isinstance(document, dict)
    return document


def directives(text: bytes) -> list[tuple[str, str]]:
    """(name, value) of each ClamAV config line, comments and blanks left out."""
    pairs: list[tuple[str, str]] = []
    for line in text.decode().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            pairs.append((name, value.strip()))
    return pairs


def test_antivirus_off_renders_no_clamav_service_config_or_scanner() -> None:
    files = render(antivirus=False)
    compose = compose_of(files)
    assert "clamav" not in compose["services"]
    assert "clamav" not in compose["volumes"]
    assert "clamav" not in compose["services"]["rspamd"]["depends_on"]
    assert not [path for path in files if path.startswith("config/clamav/")]
    assert b"clamav {" not in files["config/rspamd/antivirus.conf"]


def test_rspamd_rejects_infected_mail_through_clamav_when_antivirus_is_on() -> None:
    files = render(antivirus=True)
    antivirus = files["config/rspamd/antivirus.conf"].decode()
    assert re.search(r'^\s*servers = "clamav:3310";$', antivirus, re.MULTILINE)
    assert re.search(r'^\s*action = "reject";$', antivirus, re.MULTILINE)
    assert re.search(r'^\s*symbol = "CLAM_VIRUS";$', antivirus, re.MULTILINE)
    rspamd = compose_of(files)["services"]["rspamd"]
    assert rspamd["depends_on"]["clamav"] == {"condition": "service_healthy"}


def test_sandbox_clamav_uses_local_signatures_and_has_no_egress() -> None:
    clamav = compose_of(render(antivirus=True))["services"]["clamav"]
    assert clamav["command"] == ["--signatures=local"]
    assert set(clamav["networks"]) == {"backend"}


def test_production_clamav_runs_freshclam_with_egress_through_the_frontend() -> None:
    files = render(antivirus=True, mode="production")
    clamav = compose_of(files)["services"]["clamav"]
    assert clamav["command"] == ["--signatures=freshclam"]
    assert set(clamav["networks"]) == {"backend", "frontend"}
    freshclam = dict(directives(files["config/clamav/freshclam.conf"]))
    assert freshclam["NotifyClamd"] == "/etc/mailstack/clamav/clamd.conf"


def test_clamav_container_is_hardened() -> None:
    clamav = compose_of(render(antivirus=True))["services"]["clamav"]
    assert clamav["cap_drop"] == ["ALL"]
    assert "cap_add" not in clamav
    assert clamav["security_opt"] == ["no-new-privileges:true"]
    assert clamav["read_only"] is True
    assert clamav["user"] == "974:974"
    assert clamav["mem_limit"] and clamav["pids_limit"]
    assert "./config/clamav:/etc/mailstack/clamav:ro" in clamav["volumes"]


def test_clamd_listens_only_on_loopback_and_its_backend_alias() -> None:
    files = render(antivirus=True, mode="production")
    clamd = directives(files["config/clamav/clamd.conf"])
    addresses = [value for name, value in clamd if name == "TCPAddr"]
    assert ("TCPSocket", "3310") in clamd
    clamav = compose_of(files)["services"]["clamav"]
    backend_aliases = clamav["networks"]["backend"]["aliases"]
    assert sorted(addresses) == sorted(["127.0.0.1", *backend_aliases])
    assert not (clamav["networks"]["frontend"] or {}).get("aliases")


def test_sandbox_signature_database_detects_eicar() -> None:
    ndb = (build_contexts_dir() / "clamav" / "mailstack-sandbox.ndb").read_text()
    name, target, offset, signature = ndb.strip().split(":")
    assert (target, offset) == ("0", "*")
    assert bytes.fromhex(signature) == EICAR
    assert name


@pytest.mark.parametrize("mode", ["sandbox", "production"])
def test_compose_accepts_the_antivirus_stack(mode: str, tmp_path: Path) -> None:
    assert_compose_accepts(render(antivirus=True, mode=mode), tmp_path)


def render_antivirus(antivirus: dict[str, Any]) -> dict[str, str]:
    """freshclam.conf's directives (production) with the antivirus section given."""
    config = validate_config(
        {**REFERENCE, "mode": "production", "features": {"antivirus": True}, "antivirus": antivirus}
    )
    files = render_stack(RenderInputs(config, "1.0.0"))
    return dict(directives(files["config/clamav/freshclam.conf"]))


def test_freshclam_asks_clamavs_service_twelve_times_a_day_by_default() -> None:
    freshclam = render_antivirus({})
    assert freshclam["DatabaseMirror"] == "database.clamav.net"
    assert freshclam["Checks"] == "12"
    assert "PrivateMirror" not in freshclam


def test_freshclam_fetches_only_from_the_private_mirrors_when_they_are_set() -> None:
    config = validate_config(
        {
            **REFERENCE,
            "mode": "production",
            "features": {"antivirus": True},
            "antivirus": {
                "private_mirrors": ["http://10.0.0.5:8000", "https://av.example.net/clamav"],
                "checks_per_day": 4,
            },
        }
    )
    text = render_stack(RenderInputs(config, "1.0.0"))["config/clamav/freshclam.conf"].decode()
    lines = [line for line in text.splitlines() if line.startswith(("PrivateMirror", "Database"))]
    assert lines == [
        "DatabaseDirectory /var/lib/clamav",
        "PrivateMirror http://10.0.0.5:8000",
        "PrivateMirror https://av.example.net/clamav",
    ]
    assert "Checks 4" in text.splitlines()


def test_another_database_mirror_is_a_key() -> None:
    assert render_antivirus({"mirror": "clamav.mirror.example.net"})["DatabaseMirror"] == (
        "clamav.mirror.example.net"
    )


@pytest.mark.parametrize(
    ("antivirus", "expected"),
    [
        # A newline would add a directive of the attacker's to freshclam.conf.
        (
            {"private_mirrors": ["http://a.example\nDatabaseDirectory /etc"]},
            "antivirus.private_mirrors.0",
        ),
        ({"private_mirrors": ["ftp://mirror.example"]}, "is not an http:// or https:// URL"),
        ({"private_mirrors": ["http://user:pw@mirror.example"]}, "credentials"),
        ({"private_mirrors": ["http://mirror.example/a b"]}, "spaces"),
        ({"mirror": "mirror.example DatabaseDirectory"}, "antivirus.mirror"),
        ({"checks_per_day": 48}, "antivirus.checks_per_day"),
        ({"checks_per_day": 0}, "antivirus.checks_per_day"),
    ],
)
def test_a_bad_mirror_or_check_count_is_one_line_naming_the_key(
    antivirus: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({**REFERENCE, "antivirus": antivirus})
    message = caught.value.message
    assert "\n" not in message
    assert expected in message
