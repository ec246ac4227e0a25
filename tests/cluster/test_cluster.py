"""The cluster tests (docs/cluster.md), in one module so one swarm of three docker-in-docker
nodes serves them all (tests/cluster/conftest.py; pytest-xdist hands a module to one worker).

The ground: the nodes form a swarm of three managers, take images without a registry, and
run a global service whose port is published in host mode on every node (how the edge's mail
ports are published: the client's own address reaches the daemon), each node answering for
itself.

The stack: `mailstack cluster up|status|down` from the host. The nodes take the labels of
their roles, Swarm accepts the stack file rendered from the stack directory, places each
service where its record says, mounts every generated file as a config (keys as secrets,
root-only) and rolls a changed file in as a new object. Convergence (every service healthy
on the cluster) is not asserted yet: the services that admit a fixed address are still being
adapted (docs/cluster.md, "Open steps"). The stack's images are not loaded, so its tasks are
placed but never start: these tests prove the stack file and its placement, not the daemons.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import re
import smtplib
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from mailstack import services
from mailstack.cluster import deployment
from mailstack.images import imagerefs
from mailstack.stack.config import Config, validate_config
from tests.cluster.nodes import Node, docker, load_images
from tests.e2e.conftest import _build_lock, mailstack
from tests.e2e.steady import SteadySender

pytestmark = pytest.mark.e2e

PROBE_IMAGE = "mailstack/debian:bookworm"  # the base every mailstack image starts from
PROBE_PORT = 8080
# Answers each connection with the name of the node its task runs on (perl-base is in
# Debian's minimal base).
PROBE = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(Listen => 5, LocalPort => "
    f"{PROBE_PORT}, ReuseAddr => 1) or die $!; while (my $c = $s->accept) "
    "{ print $c `hostname`; close $c }"
)


def test_three_managers_form_a_swarm_with_one_leader(nodes: list[Node]) -> None:
    listed = (
        nodes[0]
        .docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
        .split("\n")
    )
    rows = sorted(line.split() for line in listed if line)
    assert [row[0] for row in rows] == [node.name for node in nodes]
    assert all(row[1] == "Ready" for row in rows), rows
    statuses = sorted(row[2] for row in rows)
    assert statuses == ["Leader", "Reachable", "Reachable"], rows


def test_a_global_service_answers_on_every_node_in_host_mode(nodes: list[Node]) -> None:
    load_images(nodes, [PROBE_IMAGE])
    nodes[0].docker(
        "service", "create", "--detach", "--name", "probe", "--mode", "global",
        "--hostname", "{{.Node.Hostname}}",
        "--publish", f"mode=host,target={PROBE_PORT},published={PROBE_PORT}",
        PROBE_IMAGE, "perl", "-e", PROBE,
    )  # fmt: skip
    answers = {node.name: _answer(node.address) for node in nodes}
    assert answers == {node.name: node.name for node in nodes}


def _answer(address: str, timeout: float = 180) -> str:
    """The probe's answer on a node's own address, once its task runs there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, PROBE_PORT), timeout=5) as connection:
                answer = connection.recv(256).decode().strip()
                if answer:
                    return answer
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no probe answer on {address}:{PROBE_PORT} in {timeout} s")
        time.sleep(1)


PROJECT = "msclu"
PLACED_WITHIN_SECONDS = 60


def cluster_section(nodes: list[Node], roles: list[list[str]]) -> str:
    lines = ["cluster:", "  nodes:"]
    for node, its_roles in zip(nodes, roles, strict=True):
        lines += [
            f"    - name: {node.name}",
            f"      engine: {node.engine}",
            f"      roles: [{', '.join(its_roles)}]",
        ]
    return "\n".join(lines) + "\n"


# The small cluster: two edge + mailbox back ends, a third node with the standby.
ROLES = [["edge", "mailbox", "db"], ["edge", "mailbox"], ["db"]]


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """base with over's values, sections merged key by key."""
    result = dict(base)
    for key, value in over.items():
        result[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return result


def cluster_stack(root: Path, nodes: list[Node], settings: dict[str, Any]) -> Config:
    """A stack directory for the three nodes: `mailstack init`, then settings over its
    mailstack.yaml (sections merged) and the cluster section."""
    mailstack(
        "init", "--hostname", "mail.example.test", "--domain", "example.test",
        "--non-interactive", "--dir", str(root),
    )  # fmt: skip
    path = root / "mailstack.yaml"
    config = yaml.safe_load(path.read_text())
    config = merged(config, settings)
    path.write_text(yaml.safe_dump(config, sort_keys=False) + cluster_section(nodes, ROLES))
    return validate_config(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def stack(nodes: list[Node], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster-stack")
    cluster_stack(root, nodes, {"project": PROJECT})
    # Images the nodes do not hold: Swarm places the tasks, which then wait for an image.
    imagerefs.write(root, {image: f"mailstack/{image}:not-loaded" for image in services.IMAGES})
    mailstack("cluster", "up", "--no-wait", "--dir", str(root))
    return root


def inspect(node: Node, service: str) -> dict:  # type: ignore[type-arg]
    return json.loads(node.docker("service", "inspect", f"{PROJECT}_{service}"))[0]


def placed_on(node: Node, service: str, expected: set[str] | None = None) -> set[str]:
    """The nodes Swarm has put the service's tasks on (each try of a task counts: without
    images they are rejected and placed again), once they are the expected ones or the time
    is up (without expected ones: once there are any)."""
    deadline = time.monotonic() + PLACED_WITHIN_SECONDS
    while True:
        listed = node.docker("service", "ps", "--format", "{{.Node}}", f"{PROJECT}_{service}")
        found = {line for line in listed.split() if line}
        if (found == expected if expected else found) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_the_nodes_carry_the_labels_of_their_roles(nodes: list[Node], stack: Path) -> None:
    labels = {
        node.name: json.loads(nodes[0].docker("node", "inspect", node.name))[0]["Spec"]["Labels"]
        for node in nodes
    }
    assert labels == {
        nodes[0].name: {"mailstack.edge": "true", "mailstack.mailbox": "true", "mailstack.db": "primary"},
        nodes[1].name: {"mailstack.edge": "true", "mailstack.mailbox": "true"},
        nodes[2].name: {"mailstack.db": "standby"},
    }  # fmt: skip


def test_each_service_is_placed_by_its_role(nodes: list[Node], stack: Path) -> None:
    edge = {nodes[0].name, nodes[1].name}
    everywhere = {node.name for node in nodes}
    primary = {nodes[0].name}
    for service, where in [
        ("postfix", edge), ("front", edge), ("rspamd", edge), ("mta-sts", edge),
        ("db", primary), ("redis", primary), ("resolver", everywhere),
    ]:  # fmt: skip
        assert placed_on(nodes[0], service, where) == where, service
    # The edge proxy on every edge node, each mailbox node's back end on that node alone.
    assert placed_on(nodes[0], "dovecot", edge) == edge
    for node in nodes[:2]:
        assert placed_on(nodes[0], f"mailbox-{node.name}", {node.name}) == {node.name}
    postfix = inspect(nodes[0], "postfix")
    assert "Global" in postfix["Spec"]["Mode"]
    assert postfix["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.labels.mailstack.edge == true"
    ]
    update = postfix["Spec"]["UpdateConfig"]
    assert (update["FailureAction"], update["Order"]) == ("rollback", "stop-first")
    assert inspect(nodes[0], "rspamd")["Spec"]["UpdateConfig"]["Order"] == "start-first"


def test_mail_ports_are_published_on_each_edge_node_in_host_mode(
    nodes: list[Node], stack: Path
) -> None:
    ports = inspect(nodes[0], "postfix")["Spec"]["EndpointSpec"]["Ports"]
    assert {(port["PublishedPort"], port["PublishMode"]) for port in ports} == {
        (25, "host"), (465, "host"), (587, "host"),
    }  # fmt: skip
    assert inspect(nodes[0], "db")["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"


def test_generated_files_are_configs_and_keys_are_root_only_secrets(
    nodes: list[Node], stack: Path
) -> None:
    container = inspect(nodes[0], "postfix")["Spec"]["TaskTemplate"]["ContainerSpec"]
    configs = {config["File"]["Name"]: config for config in container["Configs"]}
    main_cf = configs["/etc/mailstack/postfix/main.cf"]
    data = json.loads(nodes[0].docker("config", "inspect", main_cf["ConfigID"]))[0]["Spec"]["Data"]
    assert base64.b64decode(data) == (stack / "config/postfix/main.cf").read_bytes()
    secrets = {secret["File"]["Name"]: secret["File"] for secret in container["Secrets"]}
    assert secrets["/etc/mailstack/tls/key.pem"]["Mode"] == 0o400
    assert secrets["db_postfix_password"]["Mode"] == 0o400
    assert "/etc/mailstack/tls/key.pem" not in configs


def test_a_changed_file_rolls_in_as_a_new_config(nodes: list[Node], stack: Path) -> None:
    # The service spec itself is no witness here: without images every update fails, and
    # Swarm rolls the spec back (failure_action: rollback) at a moment of its own.
    def override_config() -> tuple[str, bytes]:
        document = yaml.safe_load((stack / "swarm/stack.yaml").read_text())
        mounted = {c["target"]: c["source"] for c in document["services"]["postfix"]["configs"]}
        name = document["configs"][mounted["/etc/mailstack/overrides/main.cf"]]["name"]
        data = json.loads(nodes[0].docker("config", "inspect", name))[0]["Spec"]["Data"]
        return name, base64.b64decode(data)

    override = stack / "overrides/postfix/main.cf"
    override.write_text("smtpd_banner = $myhostname ESMTP cluster\n")
    mailstack("cluster", "up", "--no-wait", "--dir", str(stack))
    before, _ = override_config()
    override.write_text("smtpd_banner = $myhostname ESMTP cluster, changed\n")
    mailstack("cluster", "up", "--no-wait", "--dir", str(stack))
    after, data = override_config()
    assert after != before
    assert data == override.read_bytes()  # the swarm holds the new bytes under the new name


def test_status_lists_the_nodes_and_services(nodes: list[Node], stack: Path) -> None:
    found = json.loads(mailstack("cluster", "status", "--json", "--dir", str(stack)).stdout)
    assert sorted(node["hostname"] for node in found["nodes"]) == [node.name for node in nodes]
    by_name = {service["name"]: service for service in found["services"]}
    assert by_name["postfix"]["mode"] == "global"
    assert by_name["db"]["mode"] == "replicated"
    # No image is loaded: nothing runs, and status says so rather than "ok".
    assert not by_name["postfix"]["converged"]


def test_a_node_missing_from_the_swarm_stops_up_with_one_line(
    nodes: list[Node], stack: Path
) -> None:
    config = stack / "mailstack.yaml"
    kept = config.read_text()
    try:
        config.write_text(kept.replace(f"name: {nodes[2].name}", "name: node-gone"))
        refused = mailstack("cluster", "up", "--dir", str(stack), check=False)
        assert refused.returncode != 0
        assert "node-gone not in the swarm" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        config.write_text(kept)


def test_down_removes_the_services(nodes: list[Node], stack: Path) -> None:
    mailstack("cluster", "down", "--dir", str(stack))
    deadline = time.monotonic() + 60
    while nodes[0].docker("service", "ls", "--quiet", "--filter", f"name={PROJECT}_").strip():
        assert time.monotonic() < deadline, "services left after cluster down"
        time.sleep(1)


# --- the stack runs: the services a cluster carries so far, on the three nodes -----------------

CONVERGED_PROJECT = "msrun"
PASSWORD = "Correct-horse-42-battery"
CONVERGED_WITHIN_SECONDS = 120  # the bound, from `cluster up` returning
# What waits for its links before it runs on a cluster (docs/cluster.md, Open steps).
NOT_ON_A_CLUSTER_YET = {"antivirus": False}


class Running(NamedTuple):
    root: Path
    up_output: str  # what `cluster up` printed


@pytest.fixture(scope="module")
def running(nodes: list[Node], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A sandbox stack deployed with its images loaded on every node, `cluster up` waiting
    for the database and applying the directory's migrations; removed at the end."""
    root = tmp_path_factory.mktemp("cluster-running")
    settings = {
        "mode": "sandbox", "project": CONVERGED_PROJECT, "features": NOT_ON_A_CLUSTER_YET,
        # The test's outside sender has no SPF for the nodes' addresses: no greylisting wait.
        "policy": {"spam": {"greylisting": False}},
    }  # fmt: skip
    cluster_stack(root, nodes, settings)
    with _build_lock():  # the e2e session may be building the same images
        mailstack("build", "--dir", str(root))
    try:  # `cluster up` gives each node the images it lacks (no registry)
        yield Running(root, mailstack("cluster", "up", "--dir", str(root)).stdout)
    finally:
        mailstack("cluster", "down", "--dir", str(root), check=False)


def test_up_applies_the_directory_migrations_once_the_database_runs(running: Running) -> None:
    assert "applied migrations: 0001_directory" in running.up_output


def test_up_gives_each_node_the_images_of_its_roles(nodes: list[Node], running: Running) -> None:
    config = validate_config(yaml.safe_load((running.root / "mailstack.yaml").read_text()))
    references = imagerefs.read(running.root)
    for node, settings in zip(nodes, config.cluster.nodes, strict=True):
        wanted = deployment.images_for(settings, config, references)
        assert f"{node.name}: loaded {len(wanted)} image(s)" in running.up_output
        held = set(node.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split())
        assert set(wanted) <= held, node.name
    # The db node takes no edge image; an edge node no database.
    assert references["postfix"] not in deployment.images_for(config.cluster.nodes[2], config,
                                                              references)  # fmt: skip
    assert references["db"] not in deployment.images_for(config.cluster.nodes[1], config,
                                                          references)  # fmt: skip


def test_the_stack_converges_with_no_failed_task(nodes: list[Node], running: Running) -> None:
    deadline = time.monotonic() + CONVERGED_WITHIN_SECONDS
    while True:
        status = mailstack("cluster", "status", "--json", "--dir", str(running.root))
        found = json.loads(status.stdout)
        waiting = [s["name"] for s in found["services"] if not s["converged"]]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not waiting, f"not converged within {CONVERGED_WITHIN_SECONDS}s: {waiting}"
    assert {s["name"] for s in found["services"]} >= {
        "db", "redis", "resolver", "rspamd", "dovecot", "postfix", "front", "mta-sts", "sink",
        "webmail", "admin", "dav", *(f"mailbox-{node.name}" for node in nodes[:2]),
    }  # fmt: skip
    tasks = (
        nodes[0]
        .docker(
            "stack",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.CurrentState}} {{.Error}}",
            CONVERGED_PROJECT,
        )
        .splitlines()
    )
    failed = [task for task in tasks if " Failed " in task or " Rejected " in task]
    assert not failed, failed
    assert all(" Running " in task for task in tasks), tasks  # none replaced either


def test_each_edge_node_answers_smtp_itself(nodes: list[Node], running: Running) -> None:
    for node in nodes[:2]:  # the edge nodes; port 25 in host mode on each
        with socket.create_connection((node.address, 25), timeout=30) as connection:
            banner = connection.makefile("rb").readline()
        # postscreen's greeting (220-, multi-line: its pregreet test) from the node's Postfix
        assert banner.startswith(b"220-mail.example.test ESMTP"), (node.name, banner)
    with pytest.raises(OSError):  # the db node runs no edge service
        socket.create_connection((nodes[2].address, 25), timeout=5).close()


# --- the webmail: the front, PHP-FPM, PostgreSQL and Dovecot over links --------------------


def https(
    node: Node,
    root: Path,
    path: str,
    form: dict[str, str] | None = None,
    cookies: str = "",
    extra: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, http.client.HTTPMessage, str]:
    """One request to the front on the node's own address (host mode), the chain checked
    against the stack's CA and the hostname the certificate names; a POST when form."""
    context = ssl.create_default_context(cafile=str(root / "tls/ca.pem"))
    context.check_hostname = False  # the node's address; the certificate's name checked below
    connection = http.client.HTTPSConnection(node.address, 443, context=context, timeout=60)
    headers = {"Host": "mail.example.test", "Cookie": cookies, **(extra or {})}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        verb = method or ("POST" if form else "GET")
        connection.request(verb, path, body=body, headers=headers)
        response = connection.getresponse()
        certificate: Any = connection.sock.getpeercert()
        names = [value for _kind, value in certificate["subjectAltName"]]
        assert "mail.example.test" in names, names
        return response.status, response.headers, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def mailbox(running: Running) -> tuple[str, str]:
    """A mailbox added as an operator would: `mailbox add` reaches the directory in the db
    task, wherever the swarm runs it."""
    address, password = f"user-{uuid.uuid4().hex[:8]}@example.test", PASSWORD
    mailstack("mailbox", "add", address, "--password-stdin", "--dir", str(running.root),
              stdin=password + "\n")  # fmt: skip
    return address, password


def test_a_mailbox_added_on_a_cluster_signs_in_to_the_webmail_through_each_edge(
    nodes: list[Node], running: Running, mailbox: tuple[str, str]
) -> None:
    """Roundcube, behind each edge node's front, signs the user in: the front reaches
    PHP-FPM, Roundcube its database and Dovecot's IMAP, each over its link alone."""
    (address, password), root = mailbox, running.root
    for node in nodes[:2]:
        status, headers, page = https(node, root, "/")
        assert status == 200, (node.name, status, page[:300])
        token = re.search(r'name="_token" value="([^"]+)"', page)
        assert token, (node.name, page[:300])
        cookies = "; ".join(c.split(";", 1)[0] for c in headers.get_all("Set-Cookie") or [])
        form = {
            "_token": token.group(1), "_task": "login", "_action": "login",
            "_timezone": "UTC", "_url": "", "_user": address, "_pass": password,
        }  # fmt: skip
        status, headers, page = https(node, root, "/?_task=login", form, cookies)
        # Signed in: Roundcube sends the browser on to the mail view (a failed sign-in
        # answers the login form again).
        assert status == 302, (node.name, status, page[:500])
        assert "_task=mail" in headers["Location"], (node.name, headers["Location"])


def test_the_admin_api_answers_through_each_edge_from_the_database(
    nodes: list[Node], running: Running
) -> None:
    """The front reaches the admin service over its link, the admin service PostgreSQL over
    its own: a well-formed unknown token is looked up in the directory and refused (401), as
    the admin service's health check does it. (With the admin service on, the webmail's
    sign-in above also asked it about a second factor, over the webmail's link.)"""
    unknown = "msk_" + "0" * 43
    for node in nodes[:2]:
        status, _headers, body = https(node, running.root, "/api/v1/mailboxes",
                                       extra={"Authorization": f"Bearer {unknown}"})  # fmt: skip
        assert status == 401, (node.name, status, body[:300])
        assert "error" in json.loads(body), body


def test_calendars_answer_the_mailbox_through_each_edge(
    nodes: list[Node], running: Running, mailbox: tuple[str, str]
) -> None:
    """The front reaches Radicale over its link, Radicale asks Dovecot's auth over its own:
    the mailbox's password opens its calendars (207), a wrong one does not (401)."""
    (address, password), root = mailbox, running.root
    for node in nodes[:2]:
        for secret, expected in ((password, 207), ("wrong-" + password, 401)):
            basic = base64.b64encode(f"{address}:{secret}".encode()).decode()
            status, _headers, body = https(
                node, root, f"/dav/{address}/", method="PROPFIND",
                extra={"Authorization": f"Basic {basic}", "Depth": "0"},
            )  # fmt: skip
            assert status == expected, (node.name, status, body[:300])


# --- mail through either edge: Postfix reaches Dovecot over its link -----------------------


def tls_context(root: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "tls/ca.pem"))
    context.check_hostname = False  # a node's address; the chain is still the stack's
    return context


def running_on(nodes: list[Node], service: str) -> Node:
    """The node that runs the service's one task."""
    listed = nodes[0].docker("service", "ps", "--filter", "desired-state=running",
                             "--format", "{{.Node}}", f"{CONVERGED_PROJECT}_{service}")  # fmt: skip
    return next(node for node in nodes if node.name in listed.split())


def test_mail_through_either_edge_node_reaches_the_mailbox(
    nodes: list[Node], running: Running, mailbox: tuple[str, str]
) -> None:
    """Each edge node's Postfix authenticates a client (the edge proxy's SASL) and delivers
    (LMTP, which the proxy passes on to the user's back end) over its link: a message
    submitted on one edge and one received on the other's port 25 both arrive, read through
    the first edge; postscreen logs the client's own address."""
    (address, password), root = mailbox, running.root
    tag = uuid.uuid4().hex[:8]
    first, second = nodes[0], nodes[1]
    submitted = EmailMessage()
    submitted["From"], submitted["To"] = address, address
    submitted["Subject"], submitted["Message-ID"] = f"submitted {tag}", make_msgid()
    submitted.set_content("through the first edge node's submission port\n")
    with smtplib.SMTP(first.address, 587, timeout=60) as smtp:
        smtp.starttls(context=tls_context(root))
        smtp.login(address, password)
        smtp.send_message(submitted)
    received = EmailMessage()
    received["From"], received["To"] = "someone@sender.example", address
    received["Subject"], received["Message-ID"] = f"received {tag}", make_msgid()
    received.set_content("from outside, to the second edge node's port 25\n")
    with smtplib.SMTP(second.address, 25, timeout=60) as smtp:
        smtp.ehlo("mx.sender.example")
        client = smtp.sock.getsockname()[0]
        smtp.send_message(received)
    deadline = time.monotonic() + 120
    while True:
        with imaplib.IMAP4_SSL(first.address, 993, ssl_context=tls_context(root)) as imap:
            imap.login(address, password)
            found = set()
            # Where it is filed is rspamd's verdict (an outside sender without SPF for the
            # node's address may land in Junk); delivered is what this test asks.
            for folder in ("INBOX", "Junk"):
                imap.select(folder, readonly=True)
                found |= {
                    subject
                    for subject in (f"submitted {tag}", f"received {tag}")
                    if imap.search(None, "SUBJECT", f'"{subject}"')[1][0].split()
                }
        if len(found) == 2 or time.monotonic() > deadline:
            break
        time.sleep(2)
    logs = nodes[0].docker("service", "logs", "--tail", "200", f"{CONVERGED_PROJECT}_postfix")
    assert found == {f"submitted {tag}", f"received {tag}"}, logs[-4000:]
    # Host-mode ports: postscreen sees the client itself, not a balancer or a bridge.
    assert re.search(rf"postscreen\[\d+\]: CONNECT from \[{re.escape(client)}\]:", logs), logs


# --- home back ends: the edge proxy passes each user on to the node that holds their mail ---


@pytest.fixture(scope="module")
def homes(nodes: list[Node], running: Running) -> dict[str, str]:
    """{node: a mailbox whose home back end it is}, added with `mailbox add --back-end`."""
    found = {}
    for node in (nodes[0].name, nodes[1].name):
        address = f"home-{uuid.uuid4().hex[:8]}@example.test"
        mailstack("mailbox", "add", address, "--back-end", node, "--password-stdin",
                  "--dir", str(running.root), stdin=PASSWORD + "\n")  # fmt: skip
        found[node] = address
    return found


def test_an_imap_login_through_either_edge_reaches_the_users_home_back_end(
    nodes: list[Node], running: Running, homes: dict[str, str]
) -> None:
    """Through each edge node's proxy, each user's IMAP login and what they store land on
    their home back end and only there; the back end logs the client's own address (the
    proxy forwards it, believed from the proxy's link alone)."""
    tag = uuid.uuid4().hex[:8]
    clients: set[str] = set()
    for edge in nodes[:2]:
        for address in homes.values():
            with imaplib.IMAP4_SSL(
                edge.address, 993, ssl_context=tls_context(running.root)
            ) as imap:
                clients.add(imap.sock.getsockname()[0])
                imap.login(address, PASSWORD)
                message = f"Subject: stored {tag} via {edge.name}\r\n\r\nkept\r\n".encode()
                assert imap.append("INBOX", "", None, message)[0] == "OK"
    for home, address in homes.items():
        back_end = f"{CONVERGED_PROJECT}_mailbox-{home}"
        assert running_on(nodes, f"mailbox-{home}").name == home
        logs = service_logs(nodes[0], back_end)
        login = rf"imap-login: Info: Login: user=<{re.escape(address)}>.*?rip=([0-9a-f.:]+)"
        logins = re.findall(login, logs)
        assert len(logins) == 2 and set(logins) <= clients, (logins, clients, logs[-3000:])
        other = next(address for node, address in homes.items() if node != home)
        assert f"user=<{other}>" not in logs
        stored = mailbox_exec(nodes, home, "doveadm", "search", "-u", address,
                              "mailbox", "INBOX", "SUBJECT", f"stored {tag}")  # fmt: skip
        assert len(stored.splitlines()) == 2, stored


def sent_by(sender: SteadySender, count: int, seconds: float = 120) -> None:
    """Wait until the sender has handed over `count` messages."""
    deadline = time.monotonic() + seconds
    while len(sender.sent) < count and not sender.refused:
        assert time.monotonic() < deadline, (sender.sent, sender.retries)
        time.sleep(0.5)


def service_logs(node: Node, service: str, *options: str) -> str:
    """What the service's tasks wrote, stderr (where Dovecot logs) included."""
    return docker("exec", node.name, "sh", "-c",
                  " ".join(["docker", "service", "logs", *options, service, "2>&1"]))  # fmt: skip


def mailbox_exec(nodes: list[Node], home: str, *command: str, user: str = "root") -> str:
    """A command in the back end's container on its node."""
    node = next(node for node in nodes if node.name == home)
    container = node.docker("ps", "-q", "--filter",
                            f"label=com.docker.swarm.service.name={CONVERGED_PROJECT}_mailbox-{home}")  # fmt: skip
    return node.docker("exec", "--user", user, container.split()[0], *command)


def test_a_mailbox_moves_to_the_other_back_end_under_use_and_loses_nothing(
    nodes: list[Node], running: Running, homes: dict[str, str]
) -> None:
    """`mailbox move` while mail keeps arriving through an edge and an IMAP session is open:
    every message is found after the move, the open session is ended, and the next login
    lands on the new home."""
    source, target = nodes[0].name, nodes[1].name
    address, root = homes[source], running.root
    tag = uuid.uuid4().hex[:8]

    def deliver(subject: str) -> None:
        message = EmailMessage()
        message["From"], message["To"] = "someone@sender.example", address
        message["Subject"], message["Message-ID"] = f"{subject} {tag}", make_msgid()
        message.set_content("arrives while the mailbox moves\n")
        with smtplib.SMTP(nodes[1].address, 25, timeout=60) as smtp:
            smtp.ehlo("mx.sender.example")
            smtp.send_message(message)

    session = imaplib.IMAP4_SSL(nodes[0].address, 993, ssl_context=tls_context(root))
    session.login(address, PASSWORD)
    session.select("INBOX")
    sender = SteadySender(deliver, interval=0.3)
    sender.start()
    try:
        sent_by(sender, 3)  # mail is arriving when the move begins
        moved = mailstack("mailbox", "move", address, "--to", target, "--dir", str(root))
        sent_by(sender, len(sender.sent) + 3)  # and after it ends
    finally:
        sender.finish()
    assert f"moved mailbox {address} from {source} to {target}" in moved.stdout
    assert not sender.refused, sender.refused
    with pytest.raises((imaplib.IMAP4.abort, OSError)):  # its session on the old home ended
        session.noop()
        session.noop()
    wanted = {f"{subject} {tag}" for subject in sender.sent}
    deadline = time.monotonic() + 120
    while True:
        with imaplib.IMAP4_SSL(nodes[1].address, 993, ssl_context=tls_context(root)) as imap:
            imap.login(address, PASSWORD)
            found: set[str] = set()
            for folder in ("INBOX", "Junk"):
                imap.select(folder, readonly=True)
                for number in imap.search(None, "SUBJECT", tag)[1][0].split():
                    header = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0]
                    found.add(header[1].decode().removeprefix("Subject:").strip())
        if found >= wanted or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not wanted - found, (sorted(wanted - found), sender.retries)
    # The next login landed on the new home: its back end logged it, with the client's address.
    logs = service_logs(nodes[0], f"{CONVERGED_PROJECT}_mailbox-{target}", "--since", "5m")
    assert f"imap-login: Info: Login: user=<{address}>" in logs


def test_the_mailbox_commands_reach_the_users_home_back_end(
    nodes: list[Node], running: Running, homes: dict[str, str]
) -> None:
    """Commands on one mailbox's mail run on its home back end, not on the edge proxy: a
    Sieve script stored and shown, and a purge that deletes the mail where it is."""
    home = nodes[1].name
    address, root = homes[home], running.root
    script = 'require "fileinto";\nif header :contains "subject" "x" { fileinto "Junk"; }\n'
    mailstack("mailbox", "sieve", "set", address, "-", "--dir", str(root), stdin=script)
    shown = mailstack("mailbox", "sieve", "show", address, "--dir", str(root))
    assert shown.stdout.strip() == script.strip()
    local = address.split("@")[0]
    # As vmail: /var/mail is its own (0750), and root in the container has no DAC_OVERRIDE.
    mailbox_exec(nodes, home, "test", "-d", f"/var/mail/example.test/{local}", user="vmail")
    removed = mailstack("mailbox", "remove", address, "--purge", "--yes", "--dir", str(root))
    assert f"deleted the stored mail in /var/mail/example.test/{local}" in removed.stdout
    with pytest.raises(AssertionError):  # its directory is gone from its back end
        mailbox_exec(nodes, home, "test", "-e", f"/var/mail/example.test/{local}", user="vmail")
