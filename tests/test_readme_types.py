"""The README's Python examples pass ``mypy --strict``, and ``subscribe()``'s options are typed: a
misspelt one is a type error for mypy and a ``TypeError`` at call time (issue 29, item 6)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nasdaq_protocols import soup

README = Path(__file__).resolve().parents[1] / "README.md"


def mypy_strict(folder: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``files`` (checked as Python 3.10, the oldest supported)."""
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version", "3.10"]
    return subprocess.run(
        [*command, *map(str, files)], cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_readme_python_examples_pass_mypy_strict(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    files = []
    for number, block in enumerate(blocks, 1):
        files.append(tmp_path / f"readme_example_{number}.py")
        files[-1].write_text(block)
    result = mypy_strict(tmp_path, files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_subscribe_option_is_a_type_error_for_mypy(tmp_path: Path) -> None:
    example = tmp_path / "misspelt.py"
    example.write_text(
        "from nasdaq_protocols import soup\n\n"
        'feed = soup.subscribe(("127.0.0.1", 7000), "u", "p", backof_max=1.0)\n'
        'good = soup.subscribe(("127.0.0.1", 7000), "u", "p", backoff_max=1.0, max_attempts=None)\n'
        'blocking = soup.subscribe_sync(("127.0.0.1", 7000), "u", "p", login_timout=1.0)\n'
    )
    result = mypy_strict(tmp_path, [example])
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout
    assert '"backof_max"' in errors[0] and "misspelt.py:3:" in errors[0]
    assert '"login_timout"' in errors[1] and "misspelt.py:5:" in errors[1]


@pytest.mark.parametrize(
    ("misspelt", "hint"), [("backof_max", " (did you mean 'backoff_max'?)"), ("heartbeat", "")]
)
def test_a_misspelt_subscribe_option_is_a_type_error_at_call_time(misspelt: str, hint: str) -> None:
    for subscribe in (soup.subscribe, soup.subscribe_sync):
        with pytest.raises(TypeError) as raised:
            subscribe(("127.0.0.1", 7000), "u", "p", **{misspelt: 1.0})  # type: ignore[operator]
        said = f"{subscribe.__name__}() got an unexpected keyword argument {misspelt!r}{hint}"
        assert str(raised.value) == said
