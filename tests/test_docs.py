"""The ```python samples of docs/*.md and README.md run in the suite, so they cannot drift.

README.md's first snippet runs as written, without any setup, on a CPU-only machine.

Each page's blocks run in order, as one script, in a fresh interpreter on 8 emulated CPU
devices, after `PRELUDE` (the setup docs/architecture.md says the samples assume). A block
whose first line is ``# partir/<file>.py`` quotes the source and must occur in that file
verbatim instead of being run. A sample that cannot run here (a cluster, real hardware, a
long search) is written as ```text, never skipped.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [*sorted(ROOT.glob("docs/*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
QUOTE = re.compile(r"# (partir/[\w/]+\.py)\n")

PRELUDE = """\
import jax

jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp
from jax.sharding import AxisType

import partir
from partir.testing import models, schedules

gpt = models.get("gpt")
train_step = gpt.fn
params, opt_state, batch = gpt.args
mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
BP, MP, Z3 = (lambda n=n: [schedules.tactic("gpt", n)] for n in ("BP", "MP", "Z3"))
schedule = [*BP(), *MP()]
steps = 2
"""


def blocks(page: pathlib.Path) -> list[str]:
    """The ```python blocks of ``page`` (a path), in order."""
    return BLOCK.findall(page.read_text())


def split(page: pathlib.Path) -> tuple[list[str], list[tuple[str, str]]]:
    """``page``'s blocks as (blocks to run, [(quoted source file, quoted text)])."""
    run, quoted = [], []
    for block in blocks(page):
        head = QUOTE.match(block)
        if head:
            quoted.append((head.group(1), block[head.end() :]))
        else:
            run.append(block)
    return run, quoted


RUNNABLE = [p for p in PAGES if p.name != "README.md" and split(p)[0]]


def test_pages_are_collected() -> None:
    # the glob must find the pages: a moved docs/ folder would otherwise test nothing
    assert len(PAGES) > 5 and len(RUNNABLE) > 3, [p.name for p in PAGES]


@pytest.mark.parametrize("page", [p for p in PAGES if split(p)[1]], ids=lambda p: p.name)
def test_quoted_source_is_verbatim(page: pathlib.Path) -> None:
    for path, text in split(page)[1]:
        source = (ROOT / path).read_text()
        assert text.strip() in source, f"{page.name} quotes {path}, which no longer holds:\n{text}"


def run_script(script: pathlib.Path, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """Run ``script`` (a file) in a fresh CPU-only interpreter with a bare environment, in
    ``tmp_path``, as a user's machine would."""
    env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)}
    env["MPLBACKEND"] = "Agg"
    # the suite's XLA compilation cache (tests/conftest.py): a user's machine may have one too
    env.update({k: v for k, v in os.environ.items() if k.startswith("JAX_PERSISTENT_CACHE")})
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        env["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_page_samples_run(page: pathlib.Path, tmp_path: pathlib.Path) -> None:
    run, _ = split(page)
    script = tmp_path / f"{page.stem}.py"
    script.write_text(PRELUDE + "\n" + "\n".join(run) + "\nprint('docs ok')\n")
    done = run_script(script, tmp_path)
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"
    assert "docs ok" in done.stdout


def test_readme_first_snippet_runs_as_written(tmp_path: pathlib.Path) -> None:
    # without the prelude: the README sets the device count itself, before any JAX op
    first, second = blocks(ROOT / "README.md")[:2]
    # the second block continues the first (it traces the same step)
    script = tmp_path / "readme_snippet.py"
    script.write_text(first + "\n" + second + "\nprint('snippet ok', float(loss))\n")
    done = run_script(script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "snippet ok" in done.stdout
    # nothing left to the user to puzzle over
    assert "Warning" not in done.stderr, done.stderr[-3000:]
