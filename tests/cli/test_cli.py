"""The `partir` command: `demo` (in-process), `opt` and `xdsl-opt` with `partir-propagate`."""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr

import partir
from partir.cli.demo import run_demo
from partir.ir.context import make_context, parse_module
from partir.passes.propagate_pass import PropagatePass
from partir.testing import models, schedules

BIN = pathlib.Path(sys.executable).parent
CASE = pathlib.Path(__file__).parents[1] / "filecheck" / "passes" / "propagate.mlir"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


@pytest.mark.parametrize("command", [[], ["demo"], ["opt"]])
def test_help_on_every_command(command):
    result = run(sys.executable, "-m", "partir.cli", *command, "--help")
    assert result.stdout.startswith("usage: partir")
    assert "--help" in result.stdout


def test_demo_prints_every_section_and_passes():
    lines: list[str] = []
    status = run_demo(layers=2, out=lines.append)
    text = "\n".join(lines)
    assert status == 0, text
    for expected in (
        "[1/6] tracing",
        "history on mesh batch=4, model=2, simulated on tpu-v5p",
        "(unpartitioned)",
        "x all_reduce      over model",
        "tpu-v5p ",
        "h100 ",
        "partitioned equals unpartitioned",
        "compiled collectives match the plan",
        "SUMMARY",
        "OK: demo finished",
    ):
        assert expected in text, expected
    # the summary is one screen: at most 24 lines between the rules
    summary = text[text.index("SUMMARY") :]
    assert summary.count("\n") <= 24


def test_opt_propagate_matches_xdsl_opt():
    ours = run(
        str(BIN / "partir"), "opt", str(CASE), "-p", "partir-propagate", "--split-input-file"
    )
    theirs = run(str(BIN / "xdsl-opt"), str(CASE), "-p", "partir-propagate", "--split-input-file")
    assert ours.stdout == theirs.stdout
    assert ours.stdout.count("partir.shardings") >= 6


def test_opt_reports_a_bad_file_without_a_traceback(tmp_path):
    bad = tmp_path / "no_mesh.mlir"
    bad.write_text(
        "func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n  func.return %x : tensor<4xf32>\n}\n"
    )
    result = run(str(BIN / "partir"), "opt", str(bad), "-p", "partir-propagate", check=False)
    assert result.returncode == 1
    assert "partir opt: error: partir-propagate needs the mesh" in result.stderr
    assert "Traceback" not in result.stderr


def _strip_decisions(module, keep_paths):
    """Remove every sharding propagation wrote, keeping the seeds of `keep_paths`."""
    fn = next(op for op in module.ops if op.name == "func.func")
    attrs = []
    for a in fn.arg_attrs.data:
        entries = dict(a.data)
        if entries["partir.path"].data not in keep_paths:
            entries.pop("partir.sharding", None)
        attrs.append(DictionaryAttr(entries))
    fn.arg_attrs = ArrayAttr(attrs)
    for op in module.walk():
        for name in list(op.attributes):
            if name == "partir.shardings" or name.startswith("partir.region"):
                del op.attributes[name]


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_propagate_pass_reproduces_the_plan(model):
    """The pass, seeded with what BP and MP seeded, gives the plan's shardings everywhere."""
    m = models.get(model, abstract=True)
    mesh = jax.make_mesh((4, 2), ("batch", "model"))
    plan = partir.partition(schedules.schedule(model, "BP+MP"), mesh=mesh)(m.fn).plan(*m.args)
    expected = plan.ir().split("\n", 1)[1]
    seeded = {p for r in plan.records for p, d in r.seeded if d is not None}
    module = parse_module(expected)
    _strip_decisions(module, seeded)
    assert str(module).count("partir.sharding") < expected.count("partir.sharding")
    PropagatePass().apply(make_context(), module)
    ours = re.sub(r", partir.conflicts = \[.*?\]\}", "}", str(module), count=1)
    assert ours == str(parse_module(expected))


def test_propagate_pass_rejects_a_sharding_that_does_not_divide():
    text = CASE.read_text().split("// -----")[0].replace("tensor<8x16xf32>", "tensor<9x16xf32>")
    text = text.replace(
        "(tensor<9x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>",
        "(tensor<9x16xf32>, tensor<16x32xf32>) -> tensor<9x32xf32>",
    )
    module = parse_module(
        text.replace("tensor<8x32xf32>", "tensor<9x32xf32>").replace(
            "tensor<8x4xf32>", "tensor<9x4xf32>"
        )
    )
    with pytest.raises(Exception, match="splits dim 0 of size 9 over axes"):
        PropagatePass().apply(make_context(), module)


def test_tiny_function_round_trips_through_the_pass():
    def f(x, w):
        return jnp.tanh(x @ w)

    args = (jnp.ones((8, 16)), jnp.ones((16, 4)))
    plan = partir.partition([partir.ManualPartition({"x": 0}, axis="x")], mesh={"x": 2, "y": 4})(
        f
    ).plan(*args)
    text = plan.ir().split("\n", 1)[1]
    module = parse_module(text)
    PropagatePass().apply(make_context(), module)
    assert str(module) == str(parse_module(text))  # idempotent on a planned program


def _cli_error(*args: str) -> str:
    """Run `partir ARGS`, expect exit status 2 and one line on stderr; return that line."""
    result = run(str(BIN / "partir"), *args, check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_opt_missing_file_is_one_line(tmp_path):
    line = _cli_error("opt", str(tmp_path / "missing.mlir"), "-p", "partir-propagate")
    assert "missing.mlir" in line and "does not exist" in line


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [("partir-propogate", "partir-propagate"), ("cse,partir-lower-to-spmdd", "partir-lower-to-spmd"),
     ("partir-optimize-collectives{x=1},no-such-pass-at-all", None)],
)  # fmt: skip
def test_opt_unknown_pass_is_one_line_with_a_suggestion(spec, suggestion):
    line = _cli_error("opt", str(CASE), "-p", spec)
    assert "unknown pass" in line and "partir-propagate" in line
    if suggestion:
        assert f"did you mean {suggestion!r}" in line
    else:
        assert "did you mean" not in line


def test_opt_help_lists_partirs_passes_first_and_briefly():
    help_text = run(str(BIN / "partir"), "opt", "--help").stdout
    assert help_text.startswith("usage: partir opt")
    for name in ("partir-propagate", "partir-lower-to-spmd", "partir-optimize-collectives"):
        assert name in help_text
    assert "convert-arith-to-riscv" not in help_text  # xDSL's passes only with --all-passes
    assert len(help_text.splitlines()) < 30
    every = run(str(BIN / "partir"), "opt", "--all-passes").stdout.split()
    assert every[0].startswith("partir-") and "cse" in every


def test_demo_unknown_profile_fails_at_once():
    line = _cli_error("demo", "--hardware", "tpu-v5p", "h800")
    assert "h800" in line and "h100" in line  # names the mistake and lists the profiles
