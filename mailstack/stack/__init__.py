"""A loaded stack: its directory (mailstack.stack.stackdir), its validated config and the Compose
adapter for its project. Every command that works on a stack starts from `Stack.load`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailstack.adapters.compose import Compose
from mailstack.stack.config import Config
from mailstack.stack.stackdir import StackDir


@dataclass(frozen=True)
class Stack:
    """A loaded stack directory: its files, its config and its Compose adapter."""

    dir: StackDir
    config: Config
    compose: Compose

    @classmethod
    def load(cls, root: Path) -> Stack:
        stack_dir = StackDir(root).require()
        config = stack_dir.load_config()
        return cls(stack_dir, config, Compose(stack_dir.root, config.project))
