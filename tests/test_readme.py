"""The README's first code block runs as written on a CPU-only machine, in a fresh
interpreter (it sets the device count itself, before any JAX op)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_first_snippet_runs_as_written(tmp_path: pathlib.Path) -> None:
    first, second = python_blocks()[:2]
    # the second block continues the first (it traces the same step)
    script = tmp_path / "readme_snippet.py"
    script.write_text(first + "\n" + second + "\nprint('snippet ok', float(loss))\n")
    env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "snippet ok" in done.stdout
    assert "Warning" not in done.stderr, done.stderr[
        -3000:
    ]  # nothing left to the user to puzzle over
