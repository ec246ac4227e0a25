"""A signed Debian-format repository served on this machine, for the security-update tests.

An end-to-end test takes a real .deb from Debian (`download`), repacks it with a higher
version and a changelog entry naming a CVE (`repack`, `changelog_entry`), publishes it in a
`LocalAptRepository` that stands in for Debian's security suite, and points image builds and
scratch containers at it (`LocalAptRepository.sources_entry`).

The repository is served over HTTP on the default Docker bridge's gateway address only, on a
free port, and answers only clients on that bridge: `docker build` and `docker run` reach it,
nothing outside the machine does.

Host needs (Debian packages): apt-utils (apt-ftparchive), gnupg (gpg, gpg-agent), dpkg
(dpkg-deb, essential), iproute2 (ip: the bridge's and the machine's addresses), and the
Docker engine.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import ipaddress
import json
import re
import shutil
import stat
import subprocess
import tempfile
import textwrap
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_BRIDGE = "bridge"
COMPONENT = "main"
TEST_MAINTAINER = "mailstack tests <tests@example.test>"
# gpg-agent's sockets live in GNUPGHOME; a Unix socket path has room for 107 bytes.
_MAX_GNUPGHOME = 80


class CommandFailed(AssertionError):
    """An external program failed; the message quotes its command line and its output."""


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (never through a shell) and return it; raise CommandFailed on any failure."""
    command = " ".join(argv)
    try:
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        output = (e.stderr or b"") + (e.stdout or b"")
        raise CommandFailed(
            f"{command}: timed out after {timeout:.0f}s:\n{output.decode(errors='replace')}"
        ) from None
    except FileNotFoundError:
        raise CommandFailed(f"{command}: {argv[0]} is not installed") from None
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        stdout = result.stdout.decode(errors="replace").strip()
        raise CommandFailed(
            f"{command}: exit {result.returncode}:\n{stderr}"
            + (f"\n(stdout:)\n{stdout[-4000:]}" if stdout else "")
        )
    return result


# --- the default Docker bridge ---------------------------------------------------------------


def _bridge_network() -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Network]:
    """The default bridge's gateway and subnet: from Docker, or from the bridge's interface
    (Docker 20.10 leaves Gateway out of the default bridge's IPAM config)."""
    inspect = _run(["docker", "network", "inspect", DEFAULT_BRIDGE], timeout=60)
    network: dict[str, Any] = json.loads(inspect.stdout)[0]
    ipv4 = [
        config
        for config in (network.get("IPAM") or {}).get("Config") or []
        if ipaddress.ip_network(config["Subnet"]).version == 4
    ]
    if not ipv4:
        raise CommandFailed(f"docker network inspect {DEFAULT_BRIDGE}: no IPv4 subnet:\n{network}")
    subnet = ipaddress.IPv4Network(ipv4[0]["Subnet"])
    if ipv4[0].get("Gateway"):
        return ipaddress.IPv4Address(ipv4[0]["Gateway"]), subnet
    interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    shown = _run(["ip", "-json", "-4", "address", "show", "dev", interface], timeout=30)
    for link in json.loads(shown.stdout):
        for address in link.get("addr_info", []):
            local = ipaddress.IPv4Address(address["local"])
            if local in subnet:
                return local, subnet
    raise CommandFailed(f"no address of {interface} lies in the default bridge's subnet {subnet}")


def _local_addresses() -> set[ipaddress.IPv4Address]:
    """This machine's own IPv4 addresses (the host reaches the bridge address from them)."""
    shown = _run(["ip", "-json", "-4", "address", "show"], timeout=30)
    return {
        ipaddress.IPv4Address(address["local"])
        for link in json.loads(shown.stdout)
        for address in link.get("addr_info", [])
    }


def bridge_gateway() -> str:
    """The default Docker bridge's gateway IPv4 address (usually 172.17.0.1)."""
    return str(_bridge_network()[0])


# --- changelog and repacking -----------------------------------------------------------------


def changelog_entry(
    source: str,
    version: str,
    distribution: str,
    changes: Sequence[str],
    date: datetime,
    *,
    urgency: str = "high",
    maintainer: str = TEST_MAINTAINER,
) -> str:
    """One Debian changelog entry (deb-changelog(5)), ending in a newline:

    source (version) distribution; urgency=high
    <blank>
      * change, wrapped at 78 columns
    <blank>
     -- Name <email>  RFC 2822 date
    """
    if date.tzinfo is None:
        raise ValueError("changelog_entry needs a timezone-aware date (RFC 2822 has an offset)")
    if not changes:
        raise ValueError("a changelog entry needs at least one change")
    items = "".join(
        textwrap.fill(change, width=78, initial_indent="  * ", subsequent_indent="    ") + "\n"
        for change in changes
    )
    return (
        f"{source} ({version}) {distribution}; urgency={urgency}\n\n"
        f"{items}\n"
        f" -- {maintainer}  {format_datetime(date)}\n"
    )


def _deb_fields(deb: Path, *names: str) -> dict[str, str]:
    """Control fields of a .deb (absent ones are left out)."""
    shown = _run(["dpkg-deb", "--field", str(deb), *names], timeout=60).stdout.decode()
    if len(names) == 1:
        return {names[0]: shown.strip()} if shown.strip() else {}
    fields: dict[str, str] = {}
    for line in shown.splitlines():
        name, _, value = line.partition(":")
        if value:
            fields[name.strip()] = value.strip()
    return fields


def _source_name(fields: Mapping[str, str]) -> str:
    """The source package's name: Source without a "(version)", else the package's own."""
    return fields.get("Source", fields["Package"]).split()[0]


def _deb_filename(package: str, version: str, architecture: str) -> str:
    """Debian's file name for a binary package (the epoch is left out)."""
    return f"{package}_{version.partition(':')[2] or version}_{architecture}.deb"


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative.lstrip("/")).resolve()
    if not path.is_relative_to(root.resolve()) or path == root.resolve():
        raise ValueError(f"{relative!r} is not a path inside the package")
    return path


def _set_control_fields(control: Path, version: str) -> None:
    """Set Version; Source loses a "(version)" (a binNMU's), the new version being its own."""
    lines = control.read_text().splitlines()
    for index, line in enumerate(lines):
        name = line.partition(":")[0].lower()
        if name == "version":
            lines[index] = f"Version: {version}"
        elif name == "source":
            lines[index] = f"Source: {line.partition(':')[2].split()[0]}"
    control.write_text("\n".join(lines) + "\n")


def _write_md5sums(tree: Path) -> None:
    """DEBIAN/md5sums as dh_md5sums writes it: every regular file but the conffiles."""
    debian = tree / "DEBIAN"
    conffiles_file = debian / "conffiles"
    conffiles = (
        {line.split()[-1].lstrip("/") for line in conffiles_file.read_text().splitlines() if line}
        if conffiles_file.exists()
        else set()
    )
    sums: list[str] = []
    for path in sorted(tree.rglob("*")):
        relative = path.relative_to(tree).as_posix()
        if relative == "DEBIAN" or relative.startswith("DEBIAN/") or relative in conffiles:
            continue
        if path.is_file() and not path.is_symlink():
            sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")  # noqa: S324  # dpkg's format
    md5sums = debian / "md5sums"
    md5sums.write_text("".join(sums))
    md5sums.chmod(0o644)


def repack(
    deb: Path,
    out_dir: Path,
    version: str,
    changelog_entry: str,
    replace_files: Mapping[str, bytes] | None = None,
) -> Path:
    """A copy of `deb` at `version`, with `changelog_entry` on top of its changelog.Debian.gz
    and `replace_files` ({path inside the package: content}, modes kept) swapped in.

    The new version stands for a source upload: a binNMU's "Source: name (version)" becomes
    "Source: name" and its changelog.Debian.<arch>.gz (the binNMU entry) goes. DEBIAN/md5sums
    is regenerated; every file is owned by root. Returns out_dir/<package>_<version>_<arch>.deb.
    """
    fields = _deb_fields(deb, "Package", "Source", "Architecture")
    package, architecture = fields["Package"], fields["Architecture"]
    source = _source_name(fields)
    header = f"{source} ({version}) "
    if not changelog_entry.startswith(header):
        raise ValueError(f"the changelog entry must start with {header!r}: {changelog_entry!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aptrepo-repack-") as work:
        tree = Path(work) / "tree"
        _run(["dpkg-deb", "--raw-extract", str(deb), str(tree)], timeout=120)
        _set_control_fields(tree / "DEBIAN" / "control", version)

        docs = tree / "usr" / "share" / "doc" / package
        if docs.is_symlink():
            raise ValueError(
                f"{deb.name}: /usr/share/doc/{package} is a symlink to "
                f"{docs.readlink()} (dh_installdocs --link-doc): its changelog is another "
                "package's; repack that package instead"
            )
        docs.mkdir(mode=0o755, parents=True, exist_ok=True)
        changelog = docs / "changelog.Debian.gz"
        previous = gzip.decompress(changelog.read_bytes()) if changelog.exists() else b""
        entry = changelog_entry.rstrip("\n").encode() + b"\n"
        text = entry + (b"\n" + previous if previous else b"")
        changelog.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))  # gzip -9n
        changelog.chmod(0o644)
        (docs / f"changelog.Debian.{architecture}.gz").unlink(missing_ok=True)

        for relative, content in (replace_files or {}).items():
            target = _inside(tree, relative)
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise ValueError(f"{deb.name}: {relative} is not a regular file in the package")
            mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)

        _write_md5sums(tree)
        out = out_dir / _deb_filename(package, version, architecture)
        _run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)], timeout=300)
    return out


# --- downloading a real package --------------------------------------------------------------

_DOWNLOAD_SCRIPT = """\
set -eu
apt-get -q -o Dir::Etc::SourceList=/dev/null update
work=$(mktemp -d)
chown _apt "$work"
cd "$work"
apt-get -q -o Dir::Etc::SourceList=/dev/null download "$1"
for deb in *.deb; do
  install -m 0644 -o "$2" -g "$3" "$deb" /out/
  echo "downloaded: $deb"
done
"""


def download(package: str, image: str, sources_file: Path, out_dir: Path) -> Path:
    """The real .deb of `package` ("name", "name=version" or "name/suite"), as Debian's
    mirror has it: fetched by apt in a throwaway container of `image` (a Debian image, no apt
    lists needed) on the default bridge, with `sources_file` (deb822 .sources or one-line
    .list) mounted in its /etc/apt/sources.list.d/ and its /etc/apt/sources.list ignored.
    The file lands in out_dir, owned by out_dir's owner, mode 0644."""
    if sources_file.suffix not in {".sources", ".list"}:
        raise ValueError(f"apt reads only *.sources and *.list files, not {sources_file.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    owner = out_dir.stat()
    result = _run(
        [
            "docker",
            "run",
            "--rm",
            "--pull=never",
            f"--network={DEFAULT_BRIDGE}",
            f"--volume={sources_file.resolve()}:/etc/apt/sources.list.d/{sources_file.name}:ro",
            f"--volume={out_dir.resolve()}:/out",
            image,
            *("sh", "-c", _DOWNLOAD_SCRIPT, "download", package),
            *(str(owner.st_uid), str(owner.st_gid)),
        ],
        timeout=900,
    )
    names: list[str] = re.findall(r"^downloaded: (.+)$", result.stdout.decode(), flags=re.MULTILINE)
    if len(names) != 1:
        raise CommandFailed(
            f"apt-get download {package} in {image}: expected one .deb, got {names}:\n"
            + result.stderr.decode(errors="replace")
        )
    return out_dir / names[0]


# --- the repository --------------------------------------------------------------------------


class _RepositoryRequestHandler(SimpleHTTPRequestHandler):
    """Files of the archive, always the current ones, and no request log on stderr."""

    def send_head(self) -> Any:
        # Last-Modified has one-second resolution: a publish in the same second as apt's last
        # fetch would otherwise be answered "304 Not Modified" and apt would keep stale lists.
        del self.headers["If-Modified-Since"]
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _BridgeOnlyHTTPServer(ThreadingHTTPServer):
    """Answers only containers on the default bridge and this machine itself: Linux accepts a
    packet for the bridge's address on any interface, so the bound address alone is not a
    fence. (A packet from outside cannot carry one of the machine's own addresses: Linux
    drops such martians.)"""

    daemon_threads = True
    bridge: ipaddress.IPv4Network
    local: set[ipaddress.IPv4Address]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        client = ipaddress.ip_address(client_address[0])
        return client in self.bridge or client in self.local or client.is_loopback


def _host_architecture() -> str:
    return _run(["dpkg", "--print-architecture"], timeout=30).stdout.decode().strip()


def _pool_directory(source: str) -> str:
    """pool/main/<p>/<source>, or pool/main/<libp>/<source> for lib* (Debian's layout)."""
    prefix = source[:4] if source.startswith("lib") and len(source) > 3 else source[0]
    return f"pool/{COMPONENT}/{prefix}/{source}"


def _kill_agent(gnupghome: str, short_home: str | None) -> None:
    """Stop the GNUPGHOME's gpg-agent; remove the short symlink's directory, if any."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["gpgconf", "--homedir", gnupghome, "--kill", "gpg-agent"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    if short_home is not None:
        shutil.rmtree(short_home, ignore_errors=True)


@dataclass
class LocalAptRepository:
    """A signed Debian repository in `root` with one suite, one component ("main"), served on
    the default bridge's gateway.

    root/gnupg         the private signing key (never served)
    root/keyring.gpg   its public key, a binary keyring for apt's Signed-By
    root/archive/      what is served: dists/<suite>/{InRelease,Release,Release.gpg,
                       main/binary-<arch>/Packages{,.gz}} and pool/main/<p>/<source>/*.deb
    """

    root: Path
    suite: str = "bookworm-security"
    codename: str | None = None  # the suite's own name when None
    origin: str = "mailstack-test"
    label: str = "mailstack-test"
    release_version: str = "12"
    architectures: tuple[str, ...] = ()  # the host's architecture when empty
    url: str | None = field(default=None, init=False)  # set while serve() runs
    fingerprint: str = field(default="", init=False)
    _gnupghome: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.codename = self.codename or self.suite
        self.architectures = self.architectures or (_host_architecture(),)
        self.archive.mkdir(parents=True, exist_ok=True)
        home = self.root / "gnupg"
        home.mkdir(mode=0o700, exist_ok=True)
        home.chmod(0o700)
        # gpg-agent puts its sockets in GNUPGHOME; a deep pytest tmp dir would make their
        # paths too long for a Unix socket, so gpg then goes through a short symlink to it.
        short_home: str | None = None
        self._gnupghome = str(home)
        if len(self._gnupghome) > _MAX_GNUPGHOME:
            short_home = tempfile.mkdtemp(prefix="aptrepo-gnupg-")
            (Path(short_home) / "home").symlink_to(home)
            self._gnupghome = str(Path(short_home) / "home")
        weakref.finalize(self, _kill_agent, self._gnupghome, short_home)
        self.fingerprint = self._secret_key() or self._generate_key()
        exported = self._gpg("--export", self.fingerprint).stdout
        if not exported:
            raise CommandFailed(f"gpg --export {self.fingerprint}: no public key")
        self.keyring_path.write_bytes(exported)
        self.keyring_path.chmod(0o644)
        _kill_agent(self._gnupghome, None)  # publish() starts it again when it signs

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def keyring_path(self) -> Path:
        return self.root / "keyring.gpg"

    # -- signing key --

    def _gpg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return _run(
            ["gpg", "--batch", "--no-tty", "--homedir", self._gnupghome, *args], timeout=timeout
        )

    def _secret_key(self) -> str | None:
        listed = self._gpg("--list-secret-keys", "--with-colons").stdout.decode()
        fingerprints = re.findall(r"^fpr:(?::*)([0-9A-F]{40}):", listed, flags=re.MULTILINE)
        return fingerprints[0] if fingerprints else None

    def _generate_key(self) -> str:
        self._gpg(
            "--passphrase", "", "--quick-gen-key",
            f"{self.label} archive signing key (test only) <archive@example.test>",
            "ed25519", "sign", "never",
        )  # fmt: skip
        fingerprint = self._secret_key()
        if fingerprint is None:
            raise CommandFailed(f"gpg --quick-gen-key made no key in {self._gnupghome}")
        return fingerprint

    # -- publishing --

    def publish(self, debs: Iterable[Path]) -> None:
        """Make the repository offer exactly `debs` (replacing what it offered before), with
        Packages, Packages.gz and a Release signed as InRelease and Release.gpg."""
        staging = self.root / "archive.new"
        shutil.rmtree(staging, ignore_errors=True)
        pool = staging / "pool" / COMPONENT
        pool.mkdir(parents=True)
        for deb in debs:
            fields = _deb_fields(deb, "Package", "Source", "Version", "Architecture")
            if fields["Architecture"] not in {*self.architectures, "all"}:
                raise ValueError(
                    f"{deb.name} is for {fields['Architecture']}, the repository for "
                    f"{', '.join(self.architectures)}"
                )
            directory = staging / _pool_directory(_source_name(fields))
            directory.mkdir(parents=True, exist_ok=True)
            name = _deb_filename(fields["Package"], fields["Version"], fields["Architecture"])
            if (directory / name).exists():
                raise ValueError(f"{name} is in the set twice")
            shutil.copyfile(deb, directory / name)
            (directory / name).chmod(0o644)

        suite = staging / "dists" / self.suite
        for architecture in self.architectures:
            binary = suite / COMPONENT / f"binary-{architecture}"
            binary.mkdir(parents=True)
            packages = _run(
                ["apt-ftparchive", "--arch", architecture, "packages", f"pool/{COMPONENT}"],
                cwd=staging,
                timeout=300,
            ).stdout
            (binary / "Packages").write_bytes(packages)
            (binary / "Packages.gz").write_bytes(gzip.compress(packages, 9, mtime=0))

        release_fields = {
            "Origin": self.origin,
            "Label": self.label,
            "Suite": self.suite,
            "Codename": self.codename,
            "Version": self.release_version,
            "Architectures": " ".join(self.architectures),
            "Components": COMPONENT,
            "Description": f"{self.label} test repository",
        }
        options = [f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in release_fields.items()]
        release = _run(["apt-ftparchive", *options, "release", "."], cwd=suite, timeout=120).stdout
        (suite / "Release").write_bytes(release)
        signer = ["--local-user", self.fingerprint, "--digest-algo", "SHA512"]
        self._gpg(
            *signer, "--clearsign", "--output", str(suite / "InRelease"), str(suite / "Release")
        )
        self._gpg(
            *signer, "--armor", "--detach-sign",
            "--output", str(suite / "Release.gpg"), str(suite / "Release"),
        )  # fmt: skip
        _kill_agent(self._gnupghome, None)  # no agent lingers between publishes

        # Swap in the new archive; the server always serves root/archive.
        previous = self.root / "archive.old"
        shutil.rmtree(previous, ignore_errors=True)
        if self.archive.exists():
            self.archive.rename(previous)
        staging.rename(self.archive)
        shutil.rmtree(previous, ignore_errors=True)

    # -- serving --

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the archive over HTTP on the default bridge's gateway, on a free port, to
        clients on that bridge only; yields the base URL (also in self.url)."""
        gateway, subnet = _bridge_network()
        handler = functools.partial(_RepositoryRequestHandler, directory=str(self.archive))
        server = _BridgeOnlyHTTPServer((str(gateway), 0), handler)
        server.bridge, server.local = subnet, _local_addresses()
        thread = threading.Thread(
            target=server.serve_forever, name=f"aptrepo-{self.suite}", daemon=True
        )
        thread.start()
        self.url = f"http://{gateway}:{server.server_address[1]}/"
        try:
            yield self.url
        finally:
            self.url = None
            server.shutdown()
            server.server_close()
            thread.join(timeout=30)

    def sources_entry(self) -> str:
        """The deb822 stanza for this repository (while serve() runs), for a .sources file."""
        if self.url is None:
            raise RuntimeError("the repository has no URL until serve() runs")
        return (
            "Types: deb\n"
            f"URIs: {self.url}\n"
            f"Suites: {self.suite}\n"
            f"Components: {COMPONENT}\n"
            f"Signed-By: {self.keyring_path}\n"
        )
