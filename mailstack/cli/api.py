"""`api token create|list|revoke`: the REST API's bearer tokens, from the host."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer

from mailstack.accounts import names
from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.identity import tokens
from mailstack.stack.stackdir import Stack

api_app = typer.Typer(help="The REST API (/api/v1).", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: bearer tokens for /api/v1, scoped, stored hashed, revocable.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    api_app.add_typer(token_app, name="token")
    app.add_typer(api_app, name="api")


NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="What the token is for, e.g. provisioning, ci-2026.")
]


@token_app.command("create")
@output.guarded
def token_create(
    name: NameArgument,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"What it may do: {', '.join(tokens.SCOPES)} (repeatable; admin implies all, "
            "accounts and domains imply read).",
            show_default=False,
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="DURATION",
            help="Expire after this long, e.g. 90d, 12h (default: never).",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            metavar="ADMIN",
            help="Act for this (domain) administrator: its role and domains bound the token "
            "(default: root, every domain).",
            show_default=False,
        ),
    ] = None,
    directory_: StackDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Make a new API token and print it once (only its hash is stored)."""
    # Every argument is checked before the stack is touched.
    tokens.check_name(name)
    scopes = tokens.check_scopes(scope or [])
    tokens.check_expiry(expires)
    owner = names.require("--by", names.admin_name, by) if by is not None else None
    stack = Stack.load(directory_)
    created = tokens.create_token(stack.compose, name, scopes, expires, created_by=owner)
    if as_json:
        output.as_json(created)
    else:
        output.info(str(created))


@token_app.command("list")
@output.guarded
def token_list(directory_: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """List API tokens, revoked ones too (names, scopes, dates; never the tokens)."""
    stack = Stack.load(directory_)
    found = tokens.list_tokens(stack.compose, datetime.datetime.now(datetime.UTC))
    if not found and not as_json:
        output.info("no API tokens yet (mailstack api token create NAME --scope SCOPE)")
        return
    output.listing(found, as_json)


@token_app.command("revoke")
@output.guarded
def token_revoke(name: NameArgument, directory_: StackDirOption = Path()) -> None:
    """Revoke an API token for good (it stays listed, as revoked)."""
    tokens.check_name(name)
    stack = Stack.load(directory_)
    output.info(str(tokens.revoke_token(stack.compose, name)))
