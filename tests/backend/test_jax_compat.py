"""Tests for partir.backend.jax_compat: the tested JAX range, its warning, and the
version-independent form of the parameters that changed between JAX versions."""

from __future__ import annotations

import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import pytest

import partir
from partir import ir
from partir.backend import jax_compat

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_installed_jax_is_in_the_declared_range() -> None:
    low, high = jax_compat.SUPPORTED
    assert jax_compat.version_warning() is None, jax.__version__
    # pyproject.toml declares the same range the module checks
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"jax>={low},<{high}"' in text
    assert f'"jaxlib>={low},<{high}"' in text


@pytest.mark.parametrize(
    ("version", "in_range"),
    [("0.11.1", True), ("0.12.0.1", True), ("0.12.9", True), ("0.11.0", False),
     ("0.10.2", False), ("0.13.0", False), ("1.0.0", False), ("0.13.0.dev20261201", False)],
)  # fmt: skip
def test_version_warning_names_the_tested_range(version: str, in_range: bool) -> None:
    message = jax_compat.version_warning(version)
    if in_range:
        assert message is None
    else:
        low, high = jax_compat.SUPPORTED
        assert message is not None
        assert version in message and f"jax>={low},<{high}" in message


def test_out_of_range_jax_warns_at_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jax, "__version__", "0.14.0")
    with pytest.warns(UserWarning, match=r"tested with jax>=0\.11\.1,<0\.13; this is jax 0\.14\.0"):
        jax_compat.check_version()


def test_only_jax_compat_reads_jax_internals() -> None:
    """Every version-sensitive access (jax.extend, jax.core, jax._src) lives in one module."""
    pattern = re.compile(r"^\s*(from|import)\s+jax\.(extend|core|_src|interpreters)\b|jax\.core\.")
    offenders = []
    for path in (ROOT / "partir").rglob("*.py"):
        if path.name == "jax_compat.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_parameters_are_counts_in_the_ir(reverse: bool) -> None:
    """A scan with two closed-over constants, two carries and one scanned input."""
    w, b = jnp.arange(3.0), jnp.float32(0.5)

    def f(c0, c1, xs):
        def body(carry, x):
            a, k = carry
            return (a * w + x + b, k + 1), a.sum() * b

        return jax.lax.scan(body, (c0, c1), xs, reverse=reverse)

    args = (jnp.ones(3), jnp.int32(0), jnp.ones((4, 3)))
    program = partir.trace(f, *args)
    (scan,) = [op for op in program.module.walk() if isinstance(op, ir.ScanOp)]
    params = dict(scan.params.items())
    assert "ft_in" not in params and "ft_out" not in params
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    assert n_carry == 2
    assert len(scan.operands) == n_consts + n_carry + 1
    assert params["reverse"] is reverse and params["length"] == 4
    # printed and parsed back, the program still runs and agrees with JAX
    reparsed = partir.parse(str(program.module))
    got = jax.tree.leaves(reparsed.to_jax()(*jax.tree.leaves(args)))
    want = jax.tree.leaves(jax.jit(f)(*args))
    for g, e in zip(got, want, strict=True):
        assert jnp.allclose(g, e)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: jax.grad(lambda y: jnp.tanh(y).sum())(x),  # one_minus_square (jax >= 0.12)
        lambda x: jnp.log2(x + 2.0),
        lambda x: jnp.arctanh(x / 4.0),
    ],
)
def test_new_elementwise_primitives_partition_like_elementwise_ops(fn) -> None:
    """Primitives added in newer JAX shard along every dimension, with no warning."""
    x = jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)
    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh={"batch": 8})(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = step.plan(x)
    assert tuple(plan.out_shardings.spec)[:1] == ("batch",)
    assert not list(plan.collectives())
    assert jnp.allclose(step(x), jax.jit(fn)(x), atol=1e-6)
