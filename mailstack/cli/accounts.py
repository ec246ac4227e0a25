"""`domain`, `mailbox` and `alias`: the mail directory in PostgreSQL and the mail it holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import (
    aliases,
    directory,
    domain_quota,
    homes,
    mailstore,
    names,
    passwords,
)
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cluster.deployment import mailbox_executor
from mailstack.cluster.deployment import stack_executor as executor
from mailstack.errors import UsageError
from mailstack.mailauth import dkim
from mailstack.stack.config_values import normalize_address
from mailstack.stack.stackdir import Stack
from mailstack.stack.stackfiles import publish_domain_key
from mailstack.units import parse_size

domain_app = typer.Typer(help="Mail domains.", no_args_is_help=True)
mailbox_app = typer.Typer(
    help="Mailboxes (accounts that receive mail and log in).", no_args_is_help=True
)
alias_app = typer.Typer(
    help="Aliases: addresses (or @domain catch-alls) that deliver to other addresses.",
    no_args_is_help=True,
)

PurgeOption = Annotated[
    bool,
    typer.Option(
        "--purge",
        help="Also delete the stored mail (and calendars and contacts), for good (asks first).",
    ),
]
YesOption = Annotated[
    bool, typer.Option("--yes", help="Do not ask before --purge deletes stored mail.")
]
DomainFilter = Annotated[
    str | None, typer.Option("--domain", help="Only this domain.", show_default=False)
]


def register(app: typer.Typer) -> None:
    app.add_typer(domain_app, name="domain")
    app.add_typer(mailbox_app, name="mailbox")
    app.add_typer(alias_app, name="alias")


def _valid(kind: str, value: str) -> str:
    """A domain (DOMAIN) or an address (any other argument), by mailstack.accounts.names."""
    return names.require(kind, names.domain if kind == "DOMAIN" else names.address, value)


def _valid_mailbox(value: str) -> str:
    return names.require("ADDRESS", names.mailbox, value)


def _valid_source(value: str) -> str:
    """An alias source: an address, or '@domain' for a catch-all."""
    return names.require("SOURCE", names.source, value)


def _purge_flags(purge: bool, yes: bool) -> None:
    if yes and not purge:
        raise UsageError("--yes only confirms --purge; without --purge no mail is deleted")


def _confirm_purge(name: str, *, yes: bool, type_name: bool) -> mailstore.ConfirmPurge:
    """The question asked before stored mail is deleted (or --yes, which answers it)."""

    def confirm(mail: mailstore.StoredMail) -> bool:
        if yes:
            return True
        output.warn(f"--purge deletes the stored mail in {mail} for good")
        try:
            if type_name:
                answer = typer.prompt(f"Type {name} to delete it", default="", show_default=False)
                return str(answer).strip() == name
            return typer.confirm(f"Delete the stored mail of {name}?", default=False)
        except typer.Abort:  # end of input (not a terminal), Ctrl-C or Ctrl-D
            return False

    return confirm


# --- domain ----------------------------------------------------------------------------------


@domain_app.command("add")
@output.guarded
def domain_add(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org (IDN ok)")],
    directory_: StackDirOption = Path(),
) -> None:
    """Add a mail domain."""
    domain = _valid("DOMAIN", name)
    stack = Stack.load(directory_)
    directory.add_domain(executor(stack), domain)
    output.info(f"added domain {domain}")
    if stack.config.cluster.nodes:  # the nodes take new files only from a deploy
        made = dkim.ensure_key(stack.dir.root, domain)
        output.info(
            f"DKIM key for {domain} {'made' if made.created else 'kept'}: `mailstack cluster up` "
            "rolls it out to the cluster; `mailstack dns records` shows what to publish"
        )
        return
    output.info(str(publish_domain_key(stack, domain)))


@domain_app.command("list")
@output.guarded
def domain_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List mail domains."""
    stack = Stack.load(directory_)
    run = executor(stack)
    output.listing(domain_quota.with_quotas(run, directory.list_domains(run)), as_json)


@domain_app.command("quota")
@output.guarded
def domain_quota_command(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org")],
    size: Annotated[
        str | None,
        typer.Argument(
            metavar="[SIZE|none]",
            help="The domain's total for its mailboxes' quotas, e.g. 10G; none: no total. "
            "Without it: show the quota and what its mailboxes hold.",
            show_default=False,
        ),
    ] = None,
    directory_: StackDirOption = Path(),
) -> None:
    """Show or set a domain's quota: its mailboxes' quotas must fit within it."""
    domain = _valid("DOMAIN", name)
    quota_bytes = domain_quota.parse_quota("SIZE", size) if size is not None else None
    stack = Stack.load(directory_)
    if quota_bytes is None:
        output.info(str(domain_quota.show_quota(executor(stack), domain)))
        return
    output.info(str(domain_quota.set_quota(executor(stack), domain, quota_bytes)))


@domain_app.command("remove")
@output.guarded
def domain_remove(
    name: Annotated[str, typer.Argument(metavar="DOMAIN", help="e.g. example.org")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Also remove the domain's mailboxes and aliases."),
    ] = False,
    purge: PurgeOption = False,
    yes: YesOption = False,
    directory_: StackDirOption = Path(),
) -> None:
    """Remove a mail domain. Its stored mail is kept unless --purge."""
    domain = _valid("DOMAIN", name)
    _purge_flags(purge, yes)
    stack = Stack.load(directory_)
    if domain == stack.config.domain:
        raise UsageError(
            f"DOMAIN: {domain} is the stack's own domain (mailstack.yaml: domain) and "
            "cannot be removed"
        )
    if purge and stack.config.cluster.nodes:
        raise UsageError(
            "--purge: not for a whole domain on a cluster yet (its mail is spread over the "
            "back ends); purge each mailbox with `mailbox remove ADDRESS --purge` first"
        )
    removal = directory.remove_domain(
        executor(stack),
        domain,
        force=force,
        purge=purge,
        confirm=_confirm_purge(domain, yes=yes, type_name=True),
        collections=stack.config.features.dav,
    )
    output.info(str(removal))


# --- mailbox ---------------------------------------------------------------------------------

AddressArgument = Annotated[str, typer.Argument(metavar="ADDRESS", help="e.g. alice@example.org")]


def mailbox_address(value: str) -> str:
    """ADDRESS as the mail directory keys it (lower case), or one line naming it."""
    try:
        return normalize_address(value).lower()
    except ValueError as e:
        raise UsageError(f"ADDRESS: {value[:80]!r} {e}") from None


PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
GeneratePasswordOption = Annotated[
    bool,
    typer.Option(
        "--generate-password", help="Generate a strong password (~99 bits) and print it once."
    ),
]


@mailbox_app.command("add")
@output.guarded
def mailbox_add(
    address: AddressArgument,
    password_stdin: PasswordStdinOption = False,
    generate_password: GeneratePasswordOption = False,
    quota: Annotated[
        str | None,
        typer.Option(
            help="Storage quota, e.g. 2G, 500M; 0 for none. "
            "Default: mailboxes.default_quota in mailstack.yaml (2G unless set).",
            show_default=False,
        ),
    ] = None,
    back_end: Annotated[
        str | None,
        typer.Option(
            "--back-end",
            metavar="NODE",
            help="On a cluster: the mailbox node that holds its mail. Default: the mailbox "
            "node with the fewest mailboxes.",
            show_default=False,
        ),
    ] = None,
    directory_: StackDirOption = Path(),
) -> None:
    """Add a mailbox. The password is never taken from the command line."""
    mailbox = _valid_mailbox(address)
    quota_bytes = _size("--quota", quota) if quota is not None else None
    password = _new_password(password_stdin, generate_password)
    stack = Stack.load(directory_)
    back_ends = _back_ends(stack.config.cluster.mailbox_nodes, back_end)
    default = quota_bytes is None
    if quota_bytes is None:
        quota_bytes = parse_size(stack.config.mailboxes.default_quota)
    # Root obeys the domain quota too: the operator set it (`domain quota` raises it), and a
    # total that the host could exceed would not bound anything.
    directory.add_mailbox(
        executor(stack),
        mailbox,
        passwords.hash_password(password),
        quota_bytes,
        default_quota=default,
        back_ends=back_ends,
        first_back_end=next(iter(stack.config.cluster.mailbox_nodes), ""),
    )
    output.info(f"added mailbox {mailbox}")
    if generate_password:
        output.info(f"password (shown once, only its hash is stored): {password}")


def _back_ends(mailbox_nodes: list[str], chosen: str | None) -> list[str]:
    """The back ends a new mailbox may get (the first on a tie): the one chosen, or every
    mailbox node; none on one host."""
    if chosen is None:
        return mailbox_nodes
    return [_mailbox_node("--back-end", chosen, mailbox_nodes)]


def _mailbox_node(option: str, value: str, mailbox_nodes: list[str]) -> str:
    if not mailbox_nodes:
        raise UsageError(
            f"{option} {value}: this stack runs on one host (mailstack.yaml lists no "
            "cluster.nodes); its one Dovecot holds every mailbox"
        )
    if value not in mailbox_nodes:
        raise UsageError(
            f"{option} {value}: not a mailbox node of this cluster; allowed: "
            + ", ".join(mailbox_nodes)
        )
    return value


@mailbox_app.command("move")
@output.guarded
def mailbox_move(
    address: AddressArgument,
    to: Annotated[
        str,
        typer.Option("--to", metavar="NODE", help="The mailbox node to hold its mail from now."),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="NODE",
            help="Copy from this back end instead of its home: what stayed on a node it was "
            "moved away from (a move that failed after the switch says so).",
            show_default=False,
        ),
    ] = None,
    directory_: StackDirOption = Path(),
) -> None:
    """On a cluster: move a mailbox's mail to another back end while it is in use (dsync,
    then the switch; its sessions end and log in again on the new home; docs/cluster.md)."""
    mailbox = _valid_mailbox(address)
    stack = Stack.load(directory_)
    nodes = stack.config.cluster.mailbox_nodes
    target = _mailbox_node("--to", to, nodes)
    origin = _mailbox_node("--from", source, nodes) if source is not None else None
    output.info(str(homes.move_mailbox(executor(stack), mailbox, target, nodes, source=origin)))


@mailbox_app.command("list")
@output.guarded
def mailbox_list(
    domain: DomainFilter = None,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List mailboxes with their usage against their quota."""
    only = _valid("DOMAIN", domain) if domain is not None else None
    stack = Stack.load(directory_)
    report = directory.mailbox_report(executor(stack), only)
    if report.usage_unavailable:
        output.warn(report.usage_unavailable)
    output.listing(report.mailboxes, as_json)


@mailbox_app.command("remove")
@output.guarded
def mailbox_remove(
    address: AddressArgument,
    purge: PurgeOption = False,
    yes: YesOption = False,
    directory_: StackDirOption = Path(),
) -> None:
    """Remove a mailbox (and aliases to or from it). Its stored mail is kept unless --purge."""
    mailbox = _valid("ADDRESS", address)
    _purge_flags(purge, yes)
    stack = Stack.load(directory_)
    removal = directory.remove_mailbox(
        mailbox_executor(stack, mailbox),
        mailbox,
        purge=purge,
        confirm=_confirm_purge(mailbox.lower(), yes=yes, type_name=False),
        collections=stack.config.features.dav,
    )
    output.info(str(removal))


@mailbox_app.command("passwd")
@output.guarded
def mailbox_passwd(
    address: AddressArgument,
    password_stdin: PasswordStdinOption = False,
    generate_password: GeneratePasswordOption = False,
    directory_: StackDirOption = Path(),
) -> None:
    """Set a new password. It is never taken from the command line."""
    mailbox = _valid("ADDRESS", address)
    password = _new_password(password_stdin, generate_password, label="New password")
    stack = Stack.load(directory_)
    run = mailbox_executor(stack, mailbox)
    directory.set_mailbox_password(run, mailbox, passwords.hash_password(password))
    # Whoever signed in with the old password is out: web sessions by the database (0014),
    # IMAP and ManageSieve sessions here.
    mailstore.kick_sessions(run, mailbox.lower())
    output.info(f"changed the password of {mailbox.lower()}; its open sessions were ended")
    if generate_password:
        output.info(f"new password (shown once, only its hash is stored): {password}")


@mailbox_app.command("quota")
@output.guarded
def mailbox_quota(
    address: AddressArgument,
    size: Annotated[str, typer.Argument(metavar="SIZE", help="e.g. 2G, 500M; 0 for none.")],
    directory_: StackDirOption = Path(),
) -> None:
    """Change a mailbox's storage quota (within its domain's quota, if it has one)."""
    mailbox = _valid("ADDRESS", address)
    quota_bytes = _size("SIZE", size)
    stack = Stack.load(directory_)
    # Within the domain quota for root too (see mailbox_add).
    output.info(str(directory.set_mailbox_quota(executor(stack), mailbox, quota_bytes)))


# --- alias -----------------------------------------------------------------------------------

SourceArgument = Annotated[
    str,
    typer.Argument(metavar="SOURCE", help="An address, or @domain for a catch-all."),
]


@alias_app.command("add")
@output.guarded
def alias_add(
    source: SourceArgument,
    destinations: Annotated[
        list[str],
        typer.Argument(metavar="DEST...", help="Mailboxes or outside addresses.", min=1),
    ],
    directory_: StackDirOption = Path(),
) -> None:
    """Deliver mail for SOURCE to every DEST (local or outside addresses)."""
    alias = _valid_source(source)
    targets = [_valid("DEST", destination) for destination in destinations]
    stack = Stack.load(directory_)
    output.info(str(aliases.add_alias(executor(stack), alias, targets)))


@alias_app.command("remove")
@output.guarded
def alias_remove(
    source: SourceArgument,
    destinations: Annotated[
        list[str] | None,
        typer.Argument(metavar="[DEST...]", help="Only these destinations (default: all)."),
    ] = None,
    directory_: StackDirOption = Path(),
) -> None:
    """Remove an alias, or some of its destinations."""
    alias = _valid_source(source)
    targets = [_valid("DEST", destination) for destination in destinations or []]
    stack = Stack.load(directory_)
    output.info(str(aliases.remove_alias(executor(stack), alias, targets)))


@alias_app.command("list")
@output.guarded
def alias_list(
    domain: DomainFilter = None,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List aliases and catch-alls with their destinations."""
    only = _valid("DOMAIN", domain) if domain is not None else None
    stack = Stack.load(directory_)
    output.listing(aliases.list_aliases(executor(stack), only), as_json)


# --- helpers ---------------------------------------------------------------------------------


def _size(name: str, text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise UsageError(f"{name}: {text[:80]!r} {e}") from None


def _new_password(from_stdin: bool, generate: bool, label: str = "Password") -> str:
    """A password typed twice, read from stdin, or generated; never from argv."""
    if generate and from_stdin:
        raise UsageError("--generate-password and --password-stdin: choose one")
    if generate:
        return passwords.generate_password()
    password = read_password(from_stdin, label)
    passwords.check_password_strength(password)
    return password


def read_password(from_stdin: bool, label: str = "Password", confirm: bool = True) -> str:
    """One line of stdin, or typed at the terminal: twice for a new password (confirm),
    once for one another server checks."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    first = str(typer.prompt(label, hide_input=True))
    if not confirm:
        return first
    second = str(typer.prompt(f"Repeat {label.lower()}", hide_input=True))
    if first != second:
        raise UsageError("password: the two entries differ; nothing was changed")
    return first
