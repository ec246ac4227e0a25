"""The apt sources images are built from: the host's, with -updates and -security."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.errors import MailstackError, UsageError
from mailstack.images import aptsources

DEB822 = """\
Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# another distribution's repository is not for the images
Types: deb
URIs: https://vendor.invalid/apt
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/vendor.gpg
"""

ONE_LINE = """\
deb http://mirror.invalid/debian bookworm main
deb [arch=amd64 signed-by=/etc/apt/keyrings/local.gpg] http://mirror.invalid/debian bookworm-updates main
deb-src http://mirror.invalid/debian bookworm main
deb http://mirror.invalid/debian-security bookworm-security main  # fixes
"""


def test_deb822_sources_give_the_release_updates_and_security_suites() -> None:
    chosen = aptsources.image_sources(aptsources.parse_sources(DEB822))
    assert [entry.suites for entry in chosen] == [
        ("bookworm", "bookworm-updates"),
        ("bookworm-security",),
    ]
    assert chosen[0].components == ("main", "non-free-firmware")
    assert all("vendor" not in uri for entry in chosen for uri in entry.uris)


def test_one_line_sources_give_the_same_suites_and_keep_signed_by() -> None:
    chosen = aptsources.image_sources(aptsources.parse_sources(ONE_LINE))
    assert sorted(suite for entry in chosen for suite in entry.suites) == sorted(aptsources.SUITES)
    assert chosen[1].signed_by == "/etc/apt/keyrings/local.gpg"
    assert aptsources.keyring_files(chosen) == ["/etc/apt/keyrings/local.gpg"]


def test_sources_without_the_security_suite_are_refused() -> None:
    text = "deb http://mirror.invalid/debian bookworm main\n"
    text += "deb http://mirror.invalid/debian bookworm-updates main\n"
    with pytest.raises(MailstackError, match=r"no bookworm-security suite.*security fixes"):
        aptsources.image_sources(aptsources.parse_sources(text))


def test_a_disabled_stanza_is_not_used() -> None:
    text = DEB822.replace("Suites: bookworm-security\n", "Suites: bookworm-security\nEnabled: no\n")
    with pytest.raises(MailstackError, match="bookworm-security"):
        aptsources.image_sources(aptsources.parse_sources(text))


def test_the_image_sources_name_keyrings_inside_the_image() -> None:
    chosen = aptsources.image_sources(aptsources.parse_sources(DEB822))
    keyrings = aptsources.keyring_files(chosen)
    inside = {path: aptsources.image_keyring_path(path, i) for i, path in enumerate(keyrings)}
    text = aptsources.render_deb822(chosen, inside)
    assert "Signed-By: /etc/apt/keyrings/00-debian-archive-keyring.gpg" in text
    assert "Suites: bookworm-security" in text
    # The rendered file reads back as the same entries (keyring paths aside).
    again = aptsources.parse_sources(text)
    assert [(e.uris, e.suites, e.components) for e in again] == [
        (e.uris, e.suites, e.components) for e in chosen
    ]


def test_an_inline_key_is_carried_over_verbatim() -> None:
    text = (
        "Types: deb\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates bookworm-security\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGQ\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )
    chosen = aptsources.image_sources(aptsources.parse_sources(text))
    assert chosen[0].inline_key
    assert aptsources.keyring_files(chosen) == []
    rendered = aptsources.render_deb822(chosen, {})
    assert "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGQ\n" in rendered
    assert aptsources.parse_sources(rendered)[0].signed_by == chosen[0].signed_by


def test_debootstrap_uses_the_mirror_that_serves_the_release() -> None:
    entries = aptsources.parse_sources(DEB822)
    assert aptsources.debootstrap_mirror(entries) == "http://mirror.invalid/debian"
    with pytest.raises(MailstackError, match="no http"):
        aptsources.debootstrap_mirror(aptsources.parse_sources(DEB822.split("\n\n")[1]))


def test_images_apt_sources_names_a_file_that_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"images\.apt_sources.*not a readable file"):
        aptsources.configured_sources(tmp_path / "missing.sources")
    chosen = tmp_path / "mirror.sources"
    chosen.write_text(DEB822)
    assert len(aptsources.configured_sources(chosen)) == 3
