"""Writing mailstack.yaml with every key documented inline, and the config reference page."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mailstack.stack.config import Config


def commented_yaml(config: Config) -> str:
    """The operator's file: every key, its current value and a comment saying what it does."""
    lines = [
        "# mailstack.yaml: the one file that describes this mail stack.",
        "# Change a value, then run `mailstack render` (or `mailstack up`) to apply it.",
        "# Reference: docs/config.md in the mailstack sources.",
        "",
    ]
    lines += _section_lines(config, indent=0)
    return "\n".join(lines) + "\n"


def _section_lines(model: BaseModel, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += _section_lines(value, indent + 1)
            if indent == 0:
                lines.append("")
        else:
            default = _default_text(field)
            suffix = f"  # default: {default}" if default is not None and indent > 0 else ""
            lines.append(f"{pad}{name}: {_scalar(value)}{suffix}")
    return lines


def _scalar(value: Any) -> str:
    # A list of entries (relay.by_sender_domain) is written as plain mappings, unset keys out.
    if isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
        value = [
            item.model_dump(exclude_none=True) if isinstance(item, BaseModel) else item
            for item in value
        ]
    # One line, however long: a wrapped flow list would not parse back at its indentation.
    dumped = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=False, width=float("inf")
    ).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def _default_text(field: FieldInfo) -> str | None:
    if field.is_required() or field.default_factory is not None:
        return None
    return _scalar(field.default)


def reference_markdown() -> str:
    """docs/config.md, generated from the model (a test keeps the file in sync)."""
    lines = [
        "# mailstack.yaml reference",
        "",
        "Generated from the config model (`mailstack/stack/config.py`); "
        "a test keeps this page in sync.",
        "Unknown keys are errors. Every value that reaches a generated file is validated.",
        "",
        "| key | default | description |",
        "|---|---|---|",
    ]
    lines += _reference_rows(Config, prefix="")
    return "\n".join(lines) + "\n"


def _reference_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _reference_rows(annotation, prefix=f"{key}.")
            continue
        default = "required" if field.is_required() else f"`{_default_text(field)}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {default} | {description} |")
    return rows
