"""process.pipe: producer | consumer without a shell, streamed, each side's failure quoted
(`cluster up` copies images into a node as docker save | docker load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.adapters import process
from mailstack.errors import ExternalCommandFailed, MailstackError


def test_the_producers_output_reaches_the_consumer_whole(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    # 8 MiB: more than a pipe holds, so it must stream rather than sit in a buffer.
    process.pipe(["head", "-c", str(8 << 20), "/dev/zero"], ["sh", "-c", f"cat > {copy}"],
                 timeout=60, what="copy")  # fmt: skip
    assert copy.stat().st_size == 8 << 20


def test_a_failing_producer_is_quoted_even_when_the_consumer_succeeds() -> None:
    with pytest.raises(ExternalCommandFailed) as failed:
        process.pipe(["sh", "-c", "echo no such image >&2; exit 3"], ["cat"],
                     timeout=60, what="docker save | docker load")  # fmt: skip
    assert failed.value.message.startswith("docker save | docker load (sh exit 3) failed")
    assert "no such image" in failed.value.message


def test_a_failing_consumer_is_quoted() -> None:
    with pytest.raises(ExternalCommandFailed) as failed:
        process.pipe(["echo", "data"], ["sh", "-c", "cat >/dev/null; echo refused >&2; exit 1"],
                     timeout=60, what="load")  # fmt: skip
    assert failed.value.message.startswith("load (sh exit 1) failed")
    assert "refused" in failed.value.message


def test_a_missing_program_is_one_line() -> None:
    with pytest.raises(MailstackError) as missing:
        process.pipe(["no-such-program-here"], ["cat"], timeout=60, what="x")
    assert missing.value.message == "no-such-program-here is not installed or not on PATH"
