"""Documentation generated from code stays in sync with it."""

from __future__ import annotations

from pathlib import Path

from mailstack.stack.config import parse_config
from mailstack.stack.configfile import commented_yaml, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_is_in_sync_with_the_model() -> None:
    documented = (ROOT / "docs" / "config.md").read_text()
    assert documented == reference_markdown(), (
        "docs/config.md is stale: regenerate it with "
        "python -c 'from mailstack.stack.configfile import reference_markdown as r; print(r(), end=\"\")'"
        " > docs/config.md"
    )


def test_commented_yaml_round_trips_to_the_same_config(reference_config) -> None:  # type: ignore[no-untyped-def]
    text = commented_yaml(reference_config)
    assert parse_config(text.encode()) == reference_config
    # Every key is explained in a comment.
    assert text.count("# ") >= 20
