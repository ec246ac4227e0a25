"""DKIM keys: made once per domain (RSA 2048, 0600), recorded, published, shown."""

from __future__ import annotations

import base64
import datetime
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from mailstack.cli.main import app
from mailstack.errors import MailstackError, UsageError
from mailstack.mailauth import dkim
from mailstack.stack.config import Config, validate_config
from mailstack.stack.render import RenderInputs, render_stack
from tests.conftest import REFERENCE

NOW = datetime.datetime(2025, 3, 14, 9, 26, tzinfo=datetime.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_made_once_with_private_modes_and_recorded(tmp_path: Path) -> None:
    first = dkim.ensure_key(tmp_path, "example.test", now=NOW)
    assert first.created
    assert first.key.selector == "ms20250314"
    key_file = tmp_path / "dkim" / "example.test.ms20250314.key"
    assert mode(tmp_path / "dkim") == 0o700
    assert mode(key_file) == 0o600
    assert mode(tmp_path / "dkim" / "selectors.map") == 0o600
    assert dkim.read_selectors(tmp_path) == {"example.test": "ms20250314"}
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048

    pem = key_file.read_bytes()
    again = dkim.ensure_key(tmp_path, "example.test", now=NOW + datetime.timedelta(days=40))
    assert not again.created
    assert again.key == first.key
    assert key_file.read_bytes() == pem


def test_the_record_carries_the_public_half_of_the_key(tmp_path: Path) -> None:
    key = dkim.ensure_key(tmp_path, "example.test", now=NOW).key
    private = serialization.load_pem_private_key(
        (tmp_path / "dkim" / "example.test.ms20250314.key").read_bytes(), password=None
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.txt == f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
    assert key.record_name == "ms20250314._domainkey.example.test"
    assert (key.key_type, key.bits, key.active) == ("rsa", 2048, True)


def test_zone_data_is_split_into_strings_of_at_most_255(tmp_path: Path) -> None:
    key = dkim.ensure_key(tmp_path, "example.test", now=NOW).key
    strings = key.zone_data.split('" "')
    assert len(strings) == 2
    assert all(len(s.strip('"')) <= 255 for s in strings)
    assert "".join(s.strip('"') for s in strings) == key.txt
    assert key.zone_line.startswith("ms20250314._domainkey.example.test. IN TXT ( ")


def test_every_domain_has_its_own_key(tmp_path: Path) -> None:
    one = dkim.ensure_key(tmp_path, "example.test", now=NOW).key
    two = dkim.ensure_key(tmp_path, "xn--bcher-kva.example.test", now=NOW).key
    assert one.public_key != two.public_key
    assert [k.domain for k in dkim.load_keys(tmp_path)] == [
        "example.test",
        "xn--bcher-kva.example.test",
    ]
    assert dkim.read_selectors(tmp_path) == {
        "example.test": "ms20250314",
        "xn--bcher-kva.example.test": "ms20250314",
    }


def test_a_missing_key_for_a_recorded_selector_is_an_error_not_a_silent_new_key(
    tmp_path: Path,
) -> None:
    dkim.ensure_key(tmp_path, "example.test", now=NOW)
    (tmp_path / "dkim" / "example.test.ms20250314.key").unlink()
    with pytest.raises(MailstackError, match="is missing"):
        dkim.ensure_key(tmp_path, "example.test", now=NOW)
    assert not (tmp_path / "dkim" / "example.test.ms20250314.key").exists()


def test_an_older_key_stays_published_but_not_active(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.test", now=NOW)
    (tmp_path / "dkim" / "selectors.map").write_text("example.test ms20260101\n")
    newer = dkim.ensure_key(tmp_path, "other.test", now=NOW)  # unrelated domain
    assert newer.created
    (tmp_path / "dkim" / "example.test.ms20260101.key").write_bytes(
        (tmp_path / "dkim" / "example.test.ms20250314.key").read_bytes()
    )
    shown = dkim.show(tmp_path, "example.test")
    assert [(k.selector, k.active) for k in shown] == [
        ("ms20260101", True),
        ("ms20250314", False),
    ]


def test_foreign_files_in_the_key_directory_are_ignored(tmp_path: Path) -> None:
    dkim.ensure_key(tmp_path, "example.test", now=NOW)
    (tmp_path / "dkim" / "notes.txt").write_text("mine\n")
    (tmp_path / "dkim" / "Bad Name.key").write_text("x\n")
    assert [k.domain for k in dkim.load_keys(tmp_path)] == ["example.test"]


@pytest.mark.parametrize(
    "line", ["example.test", "example.test sel extra", "exa mple.test/x sel", "x.test Sel_1"]
)
def test_a_broken_selector_map_names_file_and_line(tmp_path: Path, line: str) -> None:
    (tmp_path / "dkim").mkdir()
    (tmp_path / "dkim" / "selectors.map").write_text(f"# comment\n{line}\n")
    with pytest.raises(MailstackError, match=r"selectors\.map:2"):
        dkim.read_selectors(tmp_path)


@pytest.mark.parametrize("hostile", ["../etc", "a/b.test", "x.test\nevil", "", ".x.test"])
def test_hostile_domain_never_becomes_a_path(tmp_path: Path, hostile: str) -> None:
    with pytest.raises(UsageError):
        dkim.ensure_key(tmp_path, hostile, now=NOW)
    assert not list(tmp_path.rglob("*.key"))


def test_show_for_a_domain_without_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no DKIM key"):
        dkim.show(tmp_path, "example.test")


def _unbound(config: Config, keys: tuple[dkim.DkimKey, ...]) -> str:
    rendered = render_stack(RenderInputs(config, "1", dkim_keys=keys))
    return rendered["config/resolver/unbound.conf"].decode()


def test_the_sandbox_zone_serves_every_key(tmp_path: Path, reference_config: Config) -> None:
    dkim.ensure_key(tmp_path, "example.test", now=NOW)
    dkim.ensure_key(tmp_path, "shop.example.test", now=NOW)
    keys = tuple(dkim.load_keys(tmp_path))
    text = _unbound(reference_config, keys)
    for key in keys:
        assert f"local-data: '{key.record_name}. 300 IN TXT {key.zone_data}'" in text


def test_production_renders_no_sandbox_records(tmp_path: Path) -> None:
    keys = (dkim.ensure_key(tmp_path, "example.test", now=NOW).key,)
    text = _unbound(validate_config({**REFERENCE, "mode": "production"}), keys)
    assert "local-data" not in text
    assert "reject.example.test" not in text


def test_the_cli_shows_selector_size_and_record(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "stack"
    init = runner.invoke(
        app,
        [
            "init",
            "--non-interactive",
            "--hostname",
            "mail.example.test",
            "--domain",
            "example.test",
            "--dir",
            str(root),
        ],
    )
    assert init.exit_code == 0, init.output
    # The first domain's key is made by init's render.
    assert mode(root / "dkim") == 0o700
    shown = runner.invoke(app, ["dkim", "show", "EXAMPLE.test", "--dir", str(root), "--json"])
    assert shown.exit_code == 0, shown.output
    [record] = json.loads(shown.output)
    assert record["domain"] == "example.test"
    assert (record["key_type"], record["bits"], record["active"]) == ("rsa", 2048, True)
    assert record["txt"].startswith("v=DKIM1; k=rsa; p=MII")
    text = runner.invoke(app, ["dkim", "show", "example.test", "--dir", str(root)])
    assert text.exit_code == 0
    assert "rsa 2048 bits" in text.output and "._domainkey.example.test. IN TXT" in text.output
    private = (root / "dkim" / f"example.test.{record['selector']}.key").read_text()
    assert private.splitlines()[1] not in shown.output + text.output

    missing = runner.invoke(app, ["dkim", "show", "other.test", "--dir", str(root)])
    assert missing.exit_code == 2
    bad = runner.invoke(app, ["dkim", "show", "not a domain", "--dir", str(root)])
    assert bad.exit_code == 2 and "DOMAIN" in bad.output


# --- Ed25519 (policy.dkim.ed25519) ------------------------------------------------------------


def test_an_ed25519_key_is_made_once_in_rspamds_form_and_kept_apart(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = dkim.ensure_ed25519_key(tmp_path, "example.org", NOW)
    assert dkim.ensure_ed25519_key(tmp_path, "example.org") == key  # made once
    (path,) = (tmp_path / "dkim" / "ed25519").glob("example.org.*.key")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    raw = base64.b64decode(path.read_bytes())  # seed + public key, as rspamd reads it
    seed, public = raw[:32], raw[32:]
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert (
        derived.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == public
    )
    assert key.txt == f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    assert key.selector == "ed20250314"
    # Not an RSA selector: rotation and `dkim show` never see it.
    assert dkim.load_keys(tmp_path) == []
    assert dkim.published_keys(tmp_path, ed25519_on=False) == []
    assert dkim.published_keys(tmp_path, ed25519_on=True) == [key]


def test_a_damaged_ed25519_key_is_named(tmp_path: Path) -> None:
    dkim.ensure_ed25519_key(tmp_path, "example.org", NOW)
    (path,) = (tmp_path / "dkim" / "ed25519").glob("*.key")
    path.write_text(base64.b64encode(b"x" * 64).decode())
    with pytest.raises(MailstackError, match="is not an Ed25519 key"):
        dkim.load_ed25519_keys(tmp_path)


def test_rspamd_signs_twice_only_with_ed25519_on(tmp_path: Path) -> None:
    key = dkim.ensure_ed25519_key(tmp_path, "example.org", NOW)
    data = {**REFERENCE, "policy": {"dkim": {"ed25519": True}}}
    on = render_stack(RenderInputs(validate_config(data), "1", dkim_keys=(key,)))
    signing = on["config/rspamd/dkim_signing.conf"].decode()
    assert '"example.org" {' in signing
    assert '{ path = "/run/rspamd/dkim/$domain.$selector.key"; }' in signing  # from the map
    assert f'selector = "{key.selector}"' in signing
    off = render_stack(RenderInputs(validate_config(REFERENCE), "1"))
    assert "domain {" not in off["config/rspamd/dkim_signing.conf"].decode()
