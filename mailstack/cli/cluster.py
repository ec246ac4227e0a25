"""`cluster up|status|down`: the stack on a Docker Swarm cluster (docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack.cli import output
from mailstack.cli.options import JsonOption, StackDirOption
from mailstack.cli.setup import render_or_stop
from mailstack.cluster import deployment
from mailstack.stack.stackdir import StackDir

cluster_app = typer.Typer(
    help="The stack on a Docker Swarm cluster: deploy, state, removal (docs/cluster.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")


@cluster_app.command("up")
@output.guarded
def up(
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait for the database, then apply the directory's migrations (without: "
            "deploy and return; the next `cluster up` applies them)."
        ),
    ] = True,
    directory: StackDirOption = Path(),
) -> None:
    """Render, label the nodes for their roles, give each node the images it lacks (unless
    images.registry is set) and deploy the stack through a manager."""
    config = StackDir(directory).require().load_config()
    render_or_stop(directory, config, untouched="the cluster was not touched")
    result = deployment.deploy(directory, config, wait=wait)
    for change in result.labels:
        labels = [f"{key}={value}" for key, value in change.added.items()]
        output.info(f"{change.node}: labels {' '.join(labels + ['-' + k for k in change.removed])}")
    for delivery in result.images:
        if delivery.error:
            output.warn(f"{delivery.node}: images not loaded ({delivery.error}); it runs "
                        "nothing new until `mailstack cluster up` reaches it")  # fmt: skip
        elif delivery.loaded:
            output.info(f"{delivery.node}: loaded {len(delivery.loaded)} image(s)")
    if result.migrations:
        output.info(f"applied migrations: {', '.join(result.migrations)}")
    for note in result.notes:
        output.warn(f"not in the cluster yet: {note}")
    output.info(f"deployed stack {config.project}; `mailstack cluster status` shows it converge")


@cluster_app.command("status")
@output.guarded
def status(directory: StackDirOption = Path(), as_json: JsonOption = False) -> None:
    """The swarm's nodes and the stack's services: running/wanted tasks, the latest error."""
    found = deployment.status(StackDir(directory).require().load_config())
    if as_json:
        output.as_json(found.to_json())
        return
    for node in found.nodes:
        labels = " ".join(f"{key}={value}" for key, value in sorted(node.labels.items()))
        output.info(
            f"node {node.hostname}: {node.state}, {node.availability}"
            f"{', manager ' + node.manager if node.manager else ''}  {labels}"
        )
    for service in found.services:
        mark = "ok" if service.converged else "NOT CONVERGED"
        line = f"{service.name}: {service.mode} {service.replicas} {mark}"
        output.info(
            line + (f" ({service.error})" if service.error and not service.converged else "")
        )


@cluster_app.command("down")
@output.guarded
def down(directory: StackDirOption = Path()) -> None:
    """Remove the stack's services; volumes (mail, queues, the database) stay on the nodes."""
    deployment.remove(StackDir(directory).require().load_config())
    output.info("stack removed; the nodes keep their volumes")
