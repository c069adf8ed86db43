"""The `partir` command: `partir demo` (`demo.py`), `partir opt` (xDSL's `xdsl-opt` with
partir's dialects and passes) and `partir calibrate` (`calibrate.py`, which measures this
machine for the simulator's `cpu` profile)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

DEMO_DESCRIPTION = """\
The tour of partir on the zoo's GPT training step (token + position embedding, pre-LN
causal attention, GELU MLP, cross-entropy, AdamW), on 8 emulated CPU devices: trace it into
partir IR; plan BP + MP + Z3 on a (batch=4, model=2) mesh and print what each tactic did
(the per-tactic history); list the planned collectives and conflicts; simulate the step on
TPU v5p and H100; run it and compare with the unpartitioned step; compile it and compare
XLA's collectives with the plan's; end with a one-screen summary. Exit status 0 only if
every check passed."""


def _demo(args: argparse.Namespace) -> int:
    import jax

    # before any JAX op: the CPU backend reads the device count once
    jax.config.update("jax_num_cpu_devices", 8)
    from partir.cli.demo import run_demo

    return run_demo(layers=args.layers, excerpt=args.excerpt, hardware=args.hardware)


CALIBRATE_DESCRIPTION = """\
Measure this machine for the simulator's `cpu` profile, on 8 emulated CPU devices running
at once (as a partitioned step runs): matmul throughput (f32 and bf16) and its efficiency by
size, memory bandwidth, the cost of a transcendental, the overhead of one more kernel, and
each collective (all_gather, all_reduce, reduce_scatter, all_to_all, collective_permute) at
several sizes and group sizes, fitted to latency + bandwidth terms. Writes the profile as
JSON where `get_hardware("cpu")` reads it ($PARTIR_CPU_PROFILE, else
~/.cache/partir/hardware/cpu.json) or to --output. Takes about a minute (--quick: seconds);
other work on the machine skews the numbers."""


def _calibrate(args: argparse.Namespace) -> int:
    import jax

    try:  # before any JAX op: the CPU backend reads the device count once
        jax.config.update("jax_num_cpu_devices", args.devices)
    except RuntimeError:
        pass  # JAX already started (calibrate called in-process): use its devices
    from partir.cli.calibrate import calibrate
    from partir.simulator import save_cpu_profile

    hardware = calibrate(quick=args.quick, progress=lambda line: print(line, flush=True))
    path = save_cpu_profile(hardware, args.output)
    print(
        f"cpu profile: {hardware.peak_f32_flops_per_s / 1e9:.2f} GFLOP/s f32, "
        f"{hardware.hbm_bandwidth_bytes_per_s / 1e9:.2f} GB/s, "
        f"{hardware.kernel_overhead_s * 1e6:.2f} us per kernel, per device; wrote {path}"
    )
    return 0


OPT_HELP = """\
usage: partir opt [-p PASSES] [-o OUTPUT_FILE] [xdsl-opt options] [input_file]

Run passes on a partir IR file (stdin when no file is given), as xdsl-opt does, with
partir's dialects and passes loaded.

partir's passes (-p takes a comma-separated list; options go in braces):
{passes}

options:
  -h, --help     this text
  --all-passes   list every pass: partir's, then xDSL's (cse, canonicalize, ...)
  --xdsl-help    every xdsl-opt option (-o, --split-input-file, --print-op-generic, ...)

Example:
  partir opt step.mlir -p partir-lower-to-spmd,partir-optimize-collectives
"""


def _fail(message: str) -> int:
    """A command-line mistake: one line on stderr, exit status 2 (as argparse does)."""
    print(f"partir: error: {message}", file=sys.stderr)
    return 2


def _pass_names(spec: str) -> list[str]:
    """The pass names of a pipeline spec such as ``a,b{opt=1 x=2},c``."""
    names, depth, current = [], 0, ""
    for c in spec:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            names.append(current)
            current = ""
        elif depth == 0:
            current += c
    names.append(current)
    return [n.strip() for n in names if n.strip()]


def _first_sentence(factory: object) -> str:
    """The first sentence of a pass's docstring."""
    try:
        doc = factory().__doc__ or ""  # type: ignore[operator]
    except Exception:  # a pass that fails to import still gets listed
        doc = ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".").replace("``", "`")


def _pipeline_arg(argv: Sequence[str]) -> str:
    """The value of ``-p``/``--passes`` in `argv` (empty when not given)."""
    for i, a in enumerate(argv):
        if a in ("-p", "--passes") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--passes="):
            return a.split("=", 1)[1]
        if a.startswith("-p") and not a.startswith("--") and len(a) > 2:
            return a[2:]
    return ""


def _opt(argv: Sequence[str]) -> int:
    import difflib

    from xdsl.universe import Universe
    from xdsl.utils.exceptions import DiagnosticException, ParseError
    from xdsl.xdsl_opt_main import xDSLOptMain

    # xdsl-opt finds partir's dialects and passes through the package's entry point.
    passes = Universe.get_multiverse().all_passes
    ours = sorted(n for n in passes if n.startswith("partir-"))
    argv = list(argv)
    if "--all-passes" in argv:
        print("\n".join([*ours, *sorted(n for n in passes if n not in ours)]))
        return 0
    if "-h" in argv or "--help" in argv:
        width = max(map(len, ours))
        listing = "\n".join(
            textwrap.fill(
                _first_sentence(passes[n]),
                width=92,
                initial_indent=f"  {n:<{width}}  ",
                subsequent_indent=" " * (width + 4),
            )
            for n in ours
        )
        print(OPT_HELP.format(passes=listing), end="")
        return 0
    if "--xdsl-help" in argv:
        argv = ["--help"]
    for name in _pass_names(_pipeline_arg(argv)):
        if name not in passes:
            close = difflib.get_close_matches(name, list(passes), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            return _fail(
                f"unknown pass {name!r}{hint} partir's passes: {', '.join(ours)} "
                "(`partir opt --all-passes` lists every pass)"
            )
    try:
        main = xDSLOptMain(args=argv)
    except SystemExit as e:  # argparse has printed its error
        return int(e.code or 0)
    path = main.args.input_file
    if path is not None and not os.path.isfile(path):
        return _fail(f"input file {path!r} does not exist (give a .mlir file, or none for stdin)")
    try:
        main.run()
    except (DiagnosticException, ParseError) as e:
        # the message names the problem; the traceback into xDSL adds nothing
        print(f"partir opt: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `partir` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["opt"]:
        return _opt(argv[1:])
    parser = argparse.ArgumentParser(
        prog="partir", description="Compiler-style SPMD partitioning for JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="plan, simulate, run and check the GPT training step under BP+MP+Z3",
        description=DEMO_DESCRIPTION,
    )
    demo.add_argument(
        "--layers", type=int, default=2, help="number of transformer layers (default 2)"
    )
    demo.add_argument("--excerpt", type=int, default=12, help="IR lines to show (default 12)")
    demo.add_argument(
        "--hardware",
        nargs="+",
        default=["tpu-v5p", "h100"],
        metavar="PROFILE",
        help="simulator profiles to predict the step on; the first is the history's "
        "(default: tpu-v5p h100)",
    )
    sub.add_parser(
        "opt", help="run partir passes on an IR file, like xdsl-opt (see `partir opt --help`)"
    )
    calibrate = sub.add_parser(
        "calibrate",
        help="measure this machine's CPU devices for the simulator's cpu profile",
        description=CALIBRATE_DESCRIPTION,
    )
    calibrate.add_argument(
        "--output",
        metavar="PATH",
        default=None,
        help="JSON file to write (default: $PARTIR_CPU_PROFILE or "
        "~/.cache/partir/hardware/cpu.json, where the simulator looks)",
    )
    calibrate.add_argument(
        "--quick", action="store_true", help="fewer sizes and runs: seconds, rougher numbers"
    )
    calibrate.add_argument(
        "--devices", type=int, default=8, help="emulated CPU devices to measure on (default 8)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.command == "calibrate":
        return _calibrate(args)
    from partir.errors import SimulatorError
    from partir.simulator import get_hardware

    for name in args.hardware:  # at once, not after tracing and planning
        try:
            get_hardware(name)
        except SimulatorError as e:
            return _fail(f"--hardware: {e}")
    return _demo(args)
