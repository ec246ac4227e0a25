"""`init`, `render`, `resolve` and `host`: creating and re-rendering a stack directory."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cluster import stackfile
from mailstack.errors import ConfigError, UsageError
from mailstack.images import builder
from mailstack.images.imagetags import DEBIAN_IMAGE
from mailstack.stack import stackfiles
from mailstack.stack.config import Config
from mailstack.stack.config_values import normalize_domain
from mailstack.stack.stackdir import StackDir


class RenderTarget(StrEnum):
    COMPOSE = "compose"
    SWARM = "swarm"


host_app = typer.Typer(help="Prepare this host (base image).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(output.guarded(init))
    app.command("render")(output.guarded(render))
    app.command("resolve")(output.guarded(resolve))
    app.add_typer(host_app, name="host")


def _ask(label: str, given: str | None, interactive: bool, option: str) -> str:
    """A validated domain-like answer: from the option, or asked until it is valid."""
    if given is not None:
        return given
    if not interactive:
        raise UsageError(f"{option}: is required with --non-interactive")
    while True:
        answer = str(typer.prompt(label))
        try:
            return normalize_domain(answer)
        except ValueError as e:
            output.error(f"{option}: {answer!r} {e}")


def init(
    hostname: Annotated[
        str | None, typer.Option(help="Fully qualified name of the mail server.")
    ] = None,
    domain: Annotated[str | None, typer.Option(help="The first mail domain.")] = None,
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Never ask; fail on anything missing.")
    ] = False,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox", help="Sandbox mode: local DNS zone only, outbound mail to a sink."
        ),
    ] = False,
    bind: Annotated[
        str | None,
        typer.Option("--bind", help="IPv4 address the published ports bind to (default all)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Re-initialise an existing stack (mailstack.yaml is backed up).")
    ] = False,
    directory: StackDirOption = Path(),
) -> None:
    """Create a stack directory: mailstack.yaml, secrets/ and the first render."""
    host = _ask(
        "Mail server hostname (e.g. mail.example.org)", hostname, not non_interactive, "--hostname"
    )
    mail_domain = _ask(
        "First mail domain (e.g. example.org)", domain, not non_interactive, "--domain"
    )
    try:
        extra: dict[str, Any] = {}
        if sandbox:
            extra["mode"] = "sandbox"
        if bind is not None:
            extra["network"] = {"bind_ipv4": bind}
        config = stackfiles.initial_config(host, mail_domain, extra)
    except ConfigError as e:
        # Name the option the operator typed, not the key inside the file.
        options = {"hostname": "--hostname", "domain": "--domain", "network.bind_ipv4": "--bind"}
        raise (e.named(options[e.key]) if e.key in options else e) from None
    result = stackfiles.init_stack(directory, config, force=force)
    for fact in result.host_facts:
        output.warn(fact.message)
    if result.config_backup:
        output.info(f"kept the previous mailstack.yaml as {result.config_backup.name}")
    output.info(f"created stack {config.project} for {config.hostname} in {result.stack_dir}")
    if result.secrets.created:
        output.info(f"generated {len(result.secrets.created)} secrets in secrets/ (mode 0600)")
    if result.backup_password_created:
        output.backup_password_notice(result.stack_dir)
    output.render_report(result.render)
    output.info("next: review mailstack.yaml, then `mailstack up`")
    output.info(
        "then make the first administrator: `mailstack admin add NAME` (its password is "
        "generated and shown once; there is no default)"
    )


def render(
    target: Annotated[
        RenderTarget,
        typer.Option(
            help="compose: one host (compose.yaml); swarm: also the cluster's stack file, "
            "swarm/stack.yaml (docs/cluster.md)."
        ),
    ] = RenderTarget.COMPOSE,
    directory: StackDirOption = Path(),
) -> None:
    """Re-render generated files from mailstack.yaml, keeping your edits (three-way merge)."""
    config = StackDir(directory).require().load_config() if target is RenderTarget.SWARM else None
    if config is not None and not config.cluster.nodes:
        raise UsageError(
            "--target swarm: mailstack.yaml lists no cluster.nodes",
            hint="add the swarm's nodes with their roles (docs/cluster.md)",
        )
    render_or_stop(directory, config, untouched="nothing running was touched")
    if config is not None:
        result = stackfile.write_stack_file(directory, config)
        for note in result.notes:
            output.warn(f"not in the cluster yet: {note}")
        output.info(f"wrote {stackfile.STACK_FILE}")


def render_or_stop(directory: Path, config: Config | None, *, untouched: str) -> None:
    """Render (merging the operator's edits) and print what changed; a conflict stops the
    command before it touches anything running."""
    report = stackfiles.render(directory, config)
    output.render_report(report)
    if report.conflicts:
        raise UsageError(
            f"{len(report.conflicts)} file(s) need your decision; {untouched}",
            hint="resolve each conflict, then `mailstack resolve FILE`",
        )


def resolve(
    files: Annotated[list[str], typer.Argument(help="Generated files you have resolved.")],
    directory: StackDirOption = Path(),
) -> None:
    """Mark render conflicts resolved: your edited file is accepted as the result."""
    for path in stackfiles.resolve(directory, files):
        output.info(f"resolved {path}")


@host_app.command("base-image")
@output.guarded
def base_image(
    rebuild: Annotated[bool, typer.Option(help="Make it again even if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Make the Debian base image with debootstrap from the host's apt mirror."""
    created = builder.ensure_base_image(rebuild=rebuild)
    if as_json:
        output.as_json({"image": DEBIAN_IMAGE, "created": created})
    else:
        verb = "created" if created else "already present:"
        output.info(f"base image {verb} {DEBIAN_IMAGE}")
