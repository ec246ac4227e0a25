"""The cluster's stack file (mailstack.cluster.stackfile, docs/cluster.md): compose.yaml
translated for Swarm, generated files as content-named configs and secrets, what cannot be
carried yet said as notes; `render --target swarm` and its refusals."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailstack import services
from mailstack.cluster import deployment, stackfile
from mailstack.errors import MailstackError
from mailstack.images import imagerefs
from mailstack.stack.config import validate_config
from tests.conftest import REFERENCE
from tests.unit.clirun import invoke, one_error_line

CLUSTER = """cluster:
  nodes:
    - {name: node1, engine: "ssh://root@node1.example.org", roles: [edge, mailbox, db]}
    - {name: node2, engine: "ssh://root@node2.example.org", roles: [edge, mailbox]}
    - {name: node3, engine: "ssh://root@node3.example.org", roles: [db]}
"""


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    code, out = invoke(
        "init", "--hostname", "mail.example.org", "--domain", "example.org",
        "--non-interactive", "--dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, out
    return tmp_path


def swarm_ready(stack: Path) -> Path:
    config = stack / "mailstack.yaml"
    config.write_text(config.read_text() + CLUSTER)
    imagerefs.write(stack, {image: f"mailstack/{image}:0123abcd" for image in services.IMAGES})
    return stack


def rendered_for_swarm(stack: Path) -> tuple[str, dict[str, Any]]:
    """`render --target swarm` on the stack made ready for it: what it printed, the stack file."""
    code, out = invoke("render", "--target", "swarm", "--dir", str(swarm_ready(stack)))
    assert code == 0, out
    return out, yaml.safe_load((stack / stackfile.STACK_FILE).read_text())


def test_render_target_swarm_writes_a_stack_file_swarm_can_deploy(stack: Path) -> None:
    code, out = invoke("render", "--target", "swarm", "--dir", str(swarm_ready(stack)))
    assert code == 0, out
    assert "wrote swarm/stack.yaml" in out
    document = yaml.safe_load((stack / stackfile.STACK_FILE).read_text())
    assert document["version"] == "3.9"  # what Debian's docker CLI deploys
    for name, service in document["services"].items():
        assert not {"build", "depends_on", "restart", "pull_policy", "mem_limit"} & set(service)
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name  # no IPVS for a VIP
        assert service["deploy"]["update_config"]["failure_action"] == "rollback", name
        assert service["image"] == f"mailstack/{services.of_stack_service(name).image}:0123abcd"
        for network in service["networks"].values():
            assert "ipv4_address" not in network, name
    assert {network["driver"] for name, network in document["networks"].items()
            if name != "node-host"} == {"overlay"}  # fmt: skip
    postfix = document["services"]["postfix"]
    assert postfix["deploy"]["mode"] == "global"
    assert postfix["deploy"]["placement"] == {"constraints": ["node.labels.mailstack.edge == true"]}
    assert {(port["published"], port["mode"]) for port in postfix["ports"]} == {
        (25, "host"), (465, "host"), (587, "host"),
    }  # fmt: skip
    assert postfix["dns"] == ["172.18.0.1"]  # docker_gwbridge's gateway: the node's resolver
    unbound = (stack / "config/resolver/unbound.conf").read_text()
    assert "interface: 172.18.0.1" in unbound
    assert "interface-automatic" not in unbound  # never every address of a node
    # DANE needs the AD bit: trust-ad by glibc's RES_OPTIONS, which Postfix's master imports.
    assert postfix["environment"]["RES_OPTIONS"] == "trust-ad"
    assert "RES_OPTIONS" in (stack / "config/postfix/main.cf").read_text()
    db = document["services"]["db"]["deploy"]
    assert (db["mode"], db["replicas"]) == ("replicated", 1)
    assert db["placement"]["constraints"] == ["node.labels.mailstack.db == primary"]
    assert document["services"]["resolver"]["networks"] == {"node-host": {}}
    # Dovecot's replies and learning: links, each an internal network of the two alone.
    for link, subnet in (("dovecot-to-postfix", "172.29.96.0/27"),
                         ("dovecot-to-rspamd", "172.29.96.32/27")):  # fmt: skip
        assert document["networks"][link] == {
            "driver": "overlay", "internal": True, "ipam": {"config": [{"subnet": subnet}]},
        }  # fmt: skip
    assert document["services"]["postfix"]["networks"]["dovecot-to-postfix"] == {
        "aliases": ["postfix-for-dovecot"]
    }
    # On a cluster the mailbox back ends send the replies and learn (the edge proxy none).
    assert set(document["services"]["mailbox-node2"]["networks"]) >= {"dovecot-to-postfix",
                                                                       "dovecot-to-rspamd"}  # fmt: skip
    assert "dovecot-to-postfix" not in document["services"]["dovecot"]["networks"]
    assert "dovecot-to-postfix" not in document["services"]["rspamd"]["networks"]
    master_cf = (stack / "config/postfix/master.cf").read_text()
    assert "-o mynetworks=172.29.96.0/27\n" in master_cf
    assert "submission_host = postfix-for-dovecot:10587" in (
        stack / "config/mailbox/dovecot.conf").read_text()  # fmt: skip
    assert "url=http://rspamd-for-dovecot:11334" in (
        stack / "config/mailbox/rspamd-learn.conf").read_text()  # fmt: skip
    assert "172.29.96.0/27" in (stack / "config/rspamd/local_addrs.inc").read_text()
    # What cannot be carried yet is said, not dropped in silence.
    assert "not in the cluster yet: front: its fixed address" in out
    assert "webmail: its fixed address" not in out  # its links stand for it


def test_the_webmail_reaches_and_is_reached_over_links_alone(stack: Path) -> None:
    _out, document = rendered_for_swarm(stack)
    joined = {name: set(service["networks"]) for name, service in document["services"].items()}
    for link, client, server in (("front-to-webmail", "front", "webmail"),
                                 ("webmail-to-db", "webmail", "db"),
                                 ("webmail-to-dovecot", "webmail", "dovecot")):  # fmt: skip
        assert {name for name, networks in joined.items() if link in networks} == {client, server}
        assert document["networks"][link]["internal"] is True
    # PHP-FPM takes no CIDR: every address of the front's link, and nothing else.
    fpm = (stack / "config/webmail/php-fpm.ini").read_text()
    allowed = next(line for line in fpm.splitlines() if line.startswith("listen.allowed_clients"))
    front_link = ipaddress.ip_network("172.29.96.64/27")
    assert allowed.split(" = ")[1].split(",") == ["127.0.0.1", *map(str, front_link.hosts())]
    nginx = (stack / "config/front/nginx.conf").read_text()
    assert "set $webmail_upstream webmail-for-front:9000;" in nginx
    assert "resolver 127.0.0.11" in nginx  # asked again as webmail tasks come and go
    pg_hba = (stack / "config/db/pg_hba.conf").read_text()
    assert "host    roundcube roundcube 172.29.96.96/27 " in pg_hba
    dovecot = (stack / "config/dovecot/dovecot.conf").read_text()
    assert "login_trusted_networks = 172.29.96.128/27\n" in dovecot
    roundcube = (stack / "config/webmail/config.inc.php").read_text()
    assert "'ssl://dovecot-for-webmail:993'" in roundcube
    assert document["services"]["webmail"]["environment"]["MAILSTACK_DB_HOST"] == "db-for-webmail"


def test_every_mounted_file_is_an_object_and_keys_are_secrets(stack: Path) -> None:
    invoke("render", "--target", "swarm", "--dir", str(swarm_ready(stack)))
    document = yaml.safe_load((stack / stackfile.STACK_FILE).read_text())
    for table in ("configs", "secrets"):
        for key, entry in document[table].items():
            source = (stack / "swarm" / entry["file"]).resolve()
            assert source.is_file(), (table, key)
            assert len(entry["name"]) <= 64
    postfix = document["services"]["postfix"]
    configs = {mount["target"]: mount for mount in postfix["configs"]}
    secrets = {mount["target"]: mount for mount in postfix["secrets"]}
    assert "/etc/mailstack/postfix/main.cf" in configs
    assert secrets["/etc/mailstack/tls/key.pem"]["mode"] == 0o400
    assert "/etc/mailstack/tls/key.pem" not in configs
    rspamd = {mount["target"] for mount in document["services"]["rspamd"]["secrets"]}
    assert any(target.startswith("/etc/mailstack/dkim/") for target in rspamd)


def small_compose(**service: Any) -> dict[str, Any]:
    return {"services": {"postfix": {"image": "mailstack/postfix:1", **service}}}


def translate(compose: dict[str, Any], files: dict[str, bytes] | None = None,
              key: bytes = b"k") -> stackfile.StackFile:  # fmt: skip
    return stackfile.stack_file(compose, files or {}, {}, project="p", secret_key=key)


def test_a_changed_file_is_a_new_config_object() -> None:
    compose = small_compose(volumes=["./config/postfix:/etc/mailstack/postfix:ro"])
    before = translate(compose, {"config/postfix/main.cf": b"a = 1\n"}).document["configs"]
    after = translate(compose, {"config/postfix/main.cf": b"a = 2\n"}).document["configs"]
    assert before.keys() == after.keys()
    assert before != after  # same key, a new name: Swarm rolls the service onto it


def test_secret_names_reveal_nothing_of_the_secret() -> None:
    compose = {**small_compose(secrets=["srs"]), "secrets": {"srs": {"file": "./secrets/srs"}}}
    files = {"secrets/srs": b"hunter2"}
    name = translate(compose, files, key=b"one").document["secrets"]["srs"]["name"]
    assert name != translate(compose, files, key=b"two").document["secrets"]["srs"]["name"]
    assert hashlib.sha256(b"hunter2").hexdigest()[:12] not in name


def test_a_port_bound_to_one_address_is_left_unpublished_and_said() -> None:
    result = translate(small_compose(ports=["127.0.0.1:9154:9154", "[::]:25:25", "587:587"]))
    ports = result.document["services"]["postfix"]["ports"]
    assert [(port["published"], port["target"]) for port in ports] == [(25, 25), (587, 587)]
    assert any("port 9154 is published on 127.0.0.1 alone" in note for note in result.notes)


def test_tmpfs_keeps_its_size_and_its_entrypoint_gets_owner_and_mode() -> None:
    tmpfs = ["/run:mode=0755,size=16m", "/tmp:mode=1777,size=1g", "/run/x:uid=33,gid=33,size=1m"]
    result = translate(small_compose(tmpfs=tmpfs, cap_add=["SETUID"]))
    postfix = result.document["services"]["postfix"]
    assert postfix["volumes"] == [
        {"type": "tmpfs", "target": "/run", "tmpfs": {"size": 16 * 1024**2}},
        {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 1024**3}},
        {"type": "tmpfs", "target": "/run/x", "tmpfs": {"size": 1024**2}},
    ]
    # compose/base/mailstack-tmpfs reads this; 1777 and root's is Docker's own default.
    assert postfix["environment"] == {"MAILSTACK_TMPFS": "/run=::0755 /run/x=33:33:"}
    assert postfix["cap_add"] == ["SETUID", "CHOWN"]  # to hand /run/x over, nothing more
    assert result.notes == []


def test_a_mode_alone_needs_no_chown_and_a_user_service_is_a_note() -> None:
    postfix = translate(small_compose(tmpfs=["/run:mode=0755"])).document["services"]["postfix"]
    assert "cap_add" not in postfix
    result = translate(small_compose(tmpfs=["/run/x:uid=33"], user="33:33"))
    assert "environment" not in result.document["services"]["postfix"]
    assert result.notes == ["postfix: the owners of its tmpfs mounts (it starts as user 33:33)"]


def test_every_entrypoint_given_tmpfs_owners_applies_them(stack: Path) -> None:
    invoke("render", "--target", "swarm", "--dir", str(swarm_ready(stack)))
    document = yaml.safe_load((stack / stackfile.STACK_FILE).read_text())
    images = Path(__file__).resolve().parents[2] / "compose"
    given = [name for name, service in document["services"].items()
             if "MAILSTACK_TMPFS" in (service.get("environment") or {})]  # fmt: skip
    assert {"rspamd", "resolver", "front", "webmail", "admin"} <= set(given)
    for name in given:
        entrypoint = (images / services.of_stack_service(name).image / "entrypoint").read_text()
        assert "\nmailstack-tmpfs " in entrypoint, name


def test_an_unbuilt_image_or_missing_secret_is_one_clear_error() -> None:
    compose = small_compose(image="${MAILSTACK_IMAGE_POSTFIX:-mailstack/postfix:unbuilt}")
    with pytest.raises(MailstackError, match="image postfix is not built yet"):
        translate(compose)
    compose = {**small_compose(), "secrets": {"srs": {"file": "./secrets/srs"}}}
    with pytest.raises(MailstackError, match=r"secret srs: \./secrets/srs is missing"):
        translate(compose)


def test_render_target_swarm_without_nodes_is_one_line(stack: Path) -> None:
    code, out = invoke("render", "--target", "swarm", "--dir", str(stack))
    assert code != 0
    assert one_error_line(out) == "--target swarm: mailstack.yaml lists no cluster.nodes"
    assert not (stack / "swarm").exists()


def test_render_target_swarm_before_a_build_is_one_line(stack: Path) -> None:
    config = stack / "mailstack.yaml"
    config.write_text(config.read_text() + CLUSTER)
    code, out = invoke("render", "--target", "swarm", "--dir", str(stack))
    assert code != 0
    assert "is not built yet" in out
    assert not (stack / stackfile.STACK_FILE).exists()


def test_the_nodes_labels_follow_their_roles() -> None:
    config = validate_config({**REFERENCE, **yaml.safe_load(CLUSTER)})
    assert deployment.wanted_labels(config) == {
        "node1": {"mailstack.edge": "true", "mailstack.mailbox": "true", "mailstack.db": "primary"},
        "node2": {"mailstack.edge": "true", "mailstack.mailbox": "true"},
        "node3": {"mailstack.db": "standby"},
    }  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_mailstack_tmpfs_gives_each_listed_directory_its_owner_and_mode(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "compose/base/mailstack-tmpfs"
    owned, moded = tmp_path / "owned", tmp_path / "moded"
    owned.mkdir(mode=0o755)
    moded.mkdir(mode=0o755)
    environment = {**os.environ, "MAILSTACK_TMPFS": f"{owned}=4242:4343:0700 {moded}=::0750"}
    subprocess.run(["sh", str(script)], env=environment, check=True)
    assert (owned.stat().st_uid, owned.stat().st_gid) == (4242, 4343)
    assert stat.S_IMODE(owned.stat().st_mode) == 0o700
    assert (moded.stat().st_uid, stat.S_IMODE(moded.stat().st_mode)) == (os.getuid(), 0o750)
    unset = {key: value for key, value in os.environ.items() if key != "MAILSTACK_TMPFS"}
    subprocess.run(["sh", str(script)], env=unset, check=True)  # one host: nothing to do


def link_address(tmp_path: Path, addresses: str, *links: str) -> subprocess.CompletedProcess[str]:
    """compose/base/mailstack-link-address with `hostname -I` answering ADDRESSES."""
    script = Path(__file__).resolve().parents[2] / "compose/base/mailstack-link-address"
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "hostname").write_text(f"#!/bin/sh\necho '{addresses}'\n")
    (fake / "hostname").chmod(0o755)
    environment = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(script), str(tmp_path), *links], env=environment,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_a_link_listener_gets_the_tasks_own_address_on_that_link(tmp_path: Path) -> None:
    # A task on the backend, the ingress of docker_gwbridge and two links; IPv6 skipped.
    addresses = "172.29.81.7 172.18.0.5 fd00::7 172.29.96.163 172.29.96.40"
    done = link_address(tmp_path, addresses, "postfix=172.29.96.160/27", "web=172.29.96.32/27")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link-postfix").read_text() == "172.29.96.163"  # no newline: Dovecot
    assert (tmp_path / "link-web").read_text() == "172.29.96.40"
    assert link_address(tmp_path, addresses).returncode == 0  # one host: nothing to bind


def test_a_task_without_an_address_on_its_link_stops_in_one_line(tmp_path: Path) -> None:
    refused = link_address(tmp_path, "172.29.81.7 172.29.96.40", "postfix=172.29.96.160/27")
    assert refused.returncode == 1
    assert refused.stderr == (
        "mailstack-link-address: this task has no address on the link postfix (172.29.96.160/27)\n"
    )
    assert not (tmp_path / "link-postfix").exists()


def test_an_empty_mounted_directory_is_an_empty_read_only_one() -> None:
    # overrides/resolver/ without a file: Unbound's include of *.conf wants the directory.
    compose = small_compose(volumes=["./overrides/postfix:/etc/mailstack/overrides:ro"])
    mounts = translate(compose).document["services"]["postfix"]["volumes"]
    assert mounts == [
        {"type": "tmpfs", "target": "/etc/mailstack/overrides", "read_only": True,
         "tmpfs": {"size": 4096}},
    ]  # fmt: skip


def test_postfix_on_every_edge_reaches_dovecot_over_its_link(stack: Path) -> None:
    _out, document = rendered_for_swarm(stack)
    joined = {name for name, service in document["services"].items()
              if "postfix-to-dovecot" in service["networks"]}  # fmt: skip
    assert joined == {"postfix", "dovecot"}
    # The listeners bind to Dovecot's address on the link (the entrypoint finds it).
    links = document["services"]["dovecot"]["environment"]["MAILSTACK_LINKS"]
    assert links.split()[0] == "postfix=172.29.96.160/27"
    dovecot = (stack / "config/dovecot/dovecot.conf").read_text()
    assert dovecot.count("address = </run/mailstack/link-postfix") == 2  # LMTP, SASL
    main_cf = (stack / "config/postfix/main.cf").read_text()
    assert "virtual_transport = lmtp:inet:dovecot-for-postfix:24\n" in main_cf
    assert "smtpd_sasl_path = inet:dovecot-for-postfix:12345\n" in main_cf
    # The edge proxy holds no mailbox to ask about its quota: the back end's LMTP refuses.
    assert "check_policy_service" not in main_cf
    assert "reject_unlisted_recipient\nsmtpd_sender_restrictions" in main_cf


def test_the_admin_service_listens_on_its_links_alone(stack: Path) -> None:
    out, document = rendered_for_swarm(stack)
    assert "admin: its fixed address" not in out
    admin = document["services"]["admin"]
    assert {"front-to-admin", "webmail-to-admin", "admin-to-db"} <= set(admin["networks"])
    environment = admin["environment"]
    assert "MAILSTACK_LISTEN" not in environment  # found on the links as the task starts
    assert environment["MAILSTACK_LINKS"] == "front=172.29.96.192/27 webmail=172.29.96.224/27"
    front_link = ipaddress.ip_network("172.29.96.192/27")
    assert environment["MAILSTACK_TRUSTED_PROXY"].split(",") == list(map(str, front_link.hosts()))
    assert environment["MAILSTACK_WEBMAIL_ADDRESS"] == "172.29.96.224/27"
    assert environment["MAILSTACK_DB_HOST"] == "db-for-admin"
    nginx = (stack / "config/front/nginx.conf").read_text()
    assert "set $admin_upstream admin-for-front:8080;" in nginx
    assert nginx.count("proxy_pass http://$admin_upstream;") == 3
    assert "fastcgi_pass $webmail_upstream;" in nginx
    pg_hba = (stack / "config/db/pg_hba.conf").read_text()
    assert "mailstack_admin 172.29.97.0/27 " in pg_hba
    roundcube = (stack / "config/webmail/config.inc.php").read_text()
    assert "'http://admin-for-webmail:8080/internal/v1/mfa/'" in roundcube


def test_radicale_is_reached_and_asks_dovecot_over_its_links_alone(stack: Path) -> None:
    out, document = rendered_for_swarm(stack)
    assert "dav: its fixed address" not in out
    dav = document["services"]["dav"]
    assert set(dav["networks"]) == {"front-to-dav", "dav-to-dovecot"}  # nothing else
    assert dav["environment"]["MAILSTACK_DOVECOT_AUTH"] == "dovecot-for-dav:12346"
    assert document["services"]["dovecot"]["environment"]["MAILSTACK_LINKS"] == (
        "postfix=172.29.96.160/27 dav=172.29.97.64/27"
    )
    dovecot = (stack / "config/dovecot/dovecot.conf").read_text()
    assert "address = </run/mailstack/link-dav\n    port = 12346" in dovecot
    nginx = (stack / "config/front/nginx.conf").read_text()
    assert "set $dav_upstream dav-for-front:5232;" in nginx
    assert "rewrite ^/dav/(.*)$ /$1 break;\n            proxy_pass http://$dav_upstream;" in nginx


def test_each_mailbox_node_has_a_back_end_of_its_own_behind_the_edge_proxy(stack: Path) -> None:
    _out, document = rendered_for_swarm(stack)
    swarm = document["services"]
    # One back end per mailbox node, pinned there, named on the proxy's link by its node.
    for node in ("node1", "node2"):
        back_end = swarm[f"mailbox-{node}"]
        assert back_end["deploy"]["placement"] == {"constraints": [f"node.hostname == {node}"]}
        assert back_end["deploy"]["replicas"] == 1
        assert back_end["networks"]["dovecot-to-mailbox"] == {
            "aliases": [f"mailbox-{node}-for-dovecot"]
        }
        # It sends replies and learns spam itself (the links whose client is dovecot on one
        # host); no port of its own.
        assert {"dovecot-to-postfix", "dovecot-to-rspamd"} <= set(back_end["networks"])
        assert "ports" not in back_end
        assert "mail:/var/mail" in back_end["volumes"]
        assert back_end["environment"]["MAILSTACK_LINKS"] == "proxy=172.29.97.96/27"
    assert "mailbox" not in swarm
    # The edge proxy: on every edge node, the mail ports published, no mail of its own.
    proxy = swarm["dovecot"]
    assert proxy["deploy"]["mode"] == "global"
    assert {port["target"] for port in proxy["ports"]} >= {143, 993, 4190}
    assert not [mount for mount in proxy["volumes"] if str(mount).startswith("mail")]
    assert proxy["healthcheck"]["test"][-1] == "proxy"
    assert "mail_crypt_private_key" not in {secret["source"] for secret in proxy["secrets"]}


def test_the_edge_proxy_passes_logins_and_deliveries_to_the_users_back_end(stack: Path) -> None:
    rendered_for_swarm(stack)
    proxy = (stack / "config/dovecot/dovecot.conf").read_text()
    assert "lmtp_proxy = yes\n" in proxy
    assert "mail_location" not in proxy and "passdb {\n  driver = sql\n" in proxy
    sql = (stack / "config/dovecot/dovecot-sql.conf.ext").read_text()
    only_proxied = "CASE WHEN '%s' IN ('imap', 'pop3', 'sieve', 'lmtp') THEN"
    assert f"{only_proxied} 'y' END AS proxy" in sql
    # The home node from the directory, the first mailbox node when it names none.
    assert (
        f"{only_proxied} 'mailbox-' || COALESCE((SELECT back_end FROM dovecot_back_ends "  # noqa: S608
        "WHERE username = '%u'), 'node1') || '-for-dovecot' END AS host" in sql
    )
    assert f"{only_proxied} 'proxied' END AS pass" in sql
    app_passwords = (stack / "config/dovecot/dovecot-sql-app-passwords.conf.ext").read_text()
    assert "END AS host" in app_passwords


def test_a_back_end_takes_logins_from_the_proxys_link_alone(stack: Path) -> None:
    rendered_for_swarm(stack)
    back_end = (stack / "config/mailbox/dovecot.conf").read_text()
    link = "172.29.97.96/27"
    assert (
        f"passdb {{\n  driver = static\n  args = nopassword=y allow_real_nets={link}\n}}"
        in back_end
    )
    assert f"login_trusted_networks = {link}\n" in back_end
    # No password is checked here, so nothing but the proxy's link reaches a login.
    assert "driver = sql\n  args = /run/mailstack/dovecot-sql-app-passwords" not in back_end
    # IMAP, LMTP, ManageSieve and doveadm (mailbox moves)
    assert back_end.count("address = </run/mailstack/link-proxy") == 4
    assert "port = 993" not in back_end and "auth_policy_server_url" not in back_end
    assert "mail_location = maildir:~/Maildir\n" in back_end
    # Its SQL settings are the userdb's alone: no proxy fields.
    assert "AS proxy" not in (stack / "config/mailbox/dovecot-sql.conf.ext").read_text()


def test_one_host_has_no_proxy_and_no_back_ends(stack: Path) -> None:
    invoke("render", "--dir", str(stack))
    assert not (stack / "config/mailbox").exists()
    assert "AS proxy" not in (stack / "config/dovecot/dovecot-sql.conf.ext").read_text()
    assert "lmtp_proxy" not in (stack / "config/dovecot/dovecot.conf").read_text()
