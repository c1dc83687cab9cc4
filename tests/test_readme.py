"""The README's self-contained examples run as written (docs are part of the feature)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def block_containing(marker: str) -> str:
    matches = [block for block in python_blocks() if marker in block]
    assert len(matches) == 1, f"expected one README example containing {marker!r}, found {len(matches)}"
    return matches[0]


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ('soup.LoginRequest("user", "secret"', "SequencedData(data=b'hello'"),
        ("sequence=51", "101 b'message 101'"),
        ("RetryDelays(0.05, 5.0)", "[0.05, 0.1, 0.2, 0.4]\n0.05\n"),
    ],
)
def test_readme_example_runs(tmp_path: Path, marker: str, expected: str) -> None:
    code = block_containing(marker)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    reprs = [line for line in result.stdout.splitlines() if line.startswith("LoginRequest(")]
    assert all("secret" not in line for line in reprs), "a LoginRequest's repr shows its password"
