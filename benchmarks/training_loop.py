"""A 50-step training loop through `partir.partition` against `jax.jit`, side by side.

The zoo's unrolled GPT step (small config, below) on a (4, 2) ("batch", "model") mesh of 8
emulated CPU devices under BP+MP+Z3, three ways, each donating params and optimizer state
(``donate_argnums=(0, 1)``) and feeding each step its own outputs:

- ``annotate``: ``partir.partition(..., mode="annotate")``;
- ``spmd``: ``partir.partition(..., mode="spmd")``;
- ``jit``: ``jax.jit(step, in_shardings=..., out_shardings=..., donate_argnums=(0, 1))``
  with `NamedSharding`s built from the same PartitionSpecs as the plan's
  ``in_shardings``/``out_shardings`` (what ``benchmarks/runtime.py`` calls "hand": the
  same strategy written by hand as specs, nothing else).

Inputs are placed once before the loop (``plan.place``; ``device_put`` for ``jit``). The
three loops advance in interleaved rounds (one step of each per round, alternating order)
so that drift in the machine's load hits them alike. Reported:

- compilations of each loop (`jax.monitoring` backend-compile events during its steps; a
  partir loop must compile exactly once);
- the steady-state step time (median over steps after the first ``--skip``) and the ratios
  partir/jit (targets: annotate <= 1.05, spmd <= 1.15);
- the loss curves and their largest difference from jit's;
- per-device peak memory from ``compiled.memory_analysis()`` (arguments + outputs - aliased
  + temporaries), which with donation must not exceed jit's.

If the zoo's `GPTConfig` has a ``dropout`` field, the model is built with ``dropout=0.1``
and its fourth argument, a PRNG key: step ``i`` gets ``fold_in(key, i)``, the same in
every loop (placed before timing starts); the result says which.

Writes benchmarks/results/training_loop.json.

    python benchmarks/training_loop.py [--steps 50] [--layers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import time
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import numpy as np
from _results import write_result
from jax.sharding import AxisType, NamedSharding

import partir
from partir.testing import models, schedules

CONFIG = {
    "layers": 2,
    "d_model": 128,
    "heads": 4,
    "seq": 64,
    "batch": 16,
    "vocab": 512,
    "d_ff": 512,
}
SCHEDULE = "BP+MP+Z3"
DONATE = (0, 1)  # params, opt_state
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
MEMORY_GAP = (
    "spmd mode's extra temporaries are the embedding gradient: partir scatter-adds the "
    "token gradients into the whole [vocab, d_model] table on every device and then "
    "reduce-scatters it over batch (Z3 keeps the table split on batch; the tokens are split "
    "there too, so the scatter cannot be split on that axis). jit's partitioner splits the "
    "scatter over the model axis instead, where tokens and updates are replicated: each "
    "model rank scatters only the rows of its half of the vocabulary (indices shifted, the "
    "rest dropped) into a [vocab/2, d_model] buffer and moves rows with a collective-permute "
    "(measured: the gap is one [vocab/2, d_model] f32 buffer at vocab 256, 512 and 1000, "
    "and does not grow with layers, batch or sequence). Closing it needs an index-offset "
    "factor for gather/scatter (a table dim split over an axis the indices are replicated "
    "on) and a plan that uses it."
)


class Compilations:
    """Counts XLA backend compilations while `counting` names a variant."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.counting: str | None = None
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        if self.counting is not None and event == COMPILE_EVENT:
            self.counts[self.counting] = self.counts.get(self.counting, 0) + 1


def _has_dropout() -> bool:
    return any(f.name == "dropout" for f in dataclasses.fields(models.GPTConfig))


def _peak_bytes(compiled: Any) -> dict[str, int]:
    """Per-device bytes of one compiled step from XLA's buffer assignment."""
    m = compiled.memory_analysis()
    out = {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
    }
    # what stays allocated between steps: donation makes outputs reuse the inputs' buffers
    out["held_across_steps"] = out["arguments"] + out["outputs"] - out["aliased"]
    out["peak"] = out["held_across_steps"] + out["temporaries"]
    return out


def _variants(model: models.Model, mesh: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    sched = schedules.schedule("gpt", SCHEDULE)
    parts = {
        mode: partir.partition(sched, mesh=mesh, mode=mode, donate_argnums=DONATE)(model.fn)
        for mode in ("annotate", "spmd")
    }
    plans = {mode: fn.plan(*model.args) for mode, fn in parts.items()}
    ref = plans["annotate"]
    in_sh = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), ref.in_shardings)
    out_sh = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), ref.out_shardings)
    fns = {
        **parts,
        "jit": jax.jit(model.fn, in_shardings=in_sh, out_shardings=out_sh, donate_argnums=DONATE),
    }
    return fns, plans, in_sh


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _fresh_inputs(name: str, model: models.Model, plans: dict[str, Any], in_sh: Any) -> list[Any]:
    # every loop donates its inputs, so each gets its own copies of the example arguments
    host = jax.tree.map(lambda x: x if _is_key(x) else np.asarray(x), model.args)
    if name == "jit":
        return list(jax.device_put(host, in_sh))
    return list(plans[name].place(*host))


def _step_keys(model: models.Model, in_sh: Any, steps: int) -> list[Any] | None:
    """One dropout key per step, the same for every loop, placed before timing starts."""
    if len(model.args) < 4:
        return None
    base = model.args[3]
    return [jax.device_put(jax.random.fold_in(base, i), in_sh[3]) for i in range(steps)]


def run(model: models.Model, mesh: Any, steps: int, skip: int) -> dict[str, Any]:
    fns, plans, in_sh = _variants(model, mesh)
    counter = Compilations()
    state = {name: _fresh_inputs(name, model, plans, in_sh) for name in fns}
    keys = _step_keys(model, in_sh, steps)
    times: dict[str, list[float]] = {name: [] for name in fns}
    losses: dict[str, list[float]] = {name: [] for name in fns}
    for step in range(steps):
        order = list(fns) if step % 2 == 0 else list(reversed(fns))
        for name in order:
            params, opt_state, batch, *_ = state[name]
            extra = [keys[step]] if keys is not None else []
            counter.counting = name
            t0 = time.perf_counter()
            params, opt_state, loss = jax.block_until_ready(
                fns[name](params, opt_state, batch, *extra)
            )
            times[name].append(time.perf_counter() - t0)
            counter.counting = None
            state[name] = [params, opt_state, batch, *extra]
            losses[name].append(float(loss))
    # donation really happened: the jit and partir steps consumed their inputs
    donated_ok = {}
    for name in fns:
        probe = _fresh_inputs(name, model, plans, in_sh)
        fns[name](*probe)
        donated_ok[name] = all(x.is_deleted() for x in jax.tree.leaves(probe[:2]))
    memory = {
        "annotate": _peak_bytes(plans["annotate"].lower().compile()),
        "spmd": _peak_bytes(plans["spmd"].lower().compile()),
        "jit": _peak_bytes(fns["jit"].lower(*jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=s.sharding),
            state["jit"],
        )).compile()),
    }  # fmt: skip
    steady = {name: statistics.median(t[skip:]) for name, t in times.items()}
    jit_losses = np.asarray(losses["jit"])
    return {
        "compilations": {name: counter.counts.get(name, 0) for name in fns},
        "first_step_s (compile + run)": {name: round(t[0], 2) for name, t in times.items()},
        "steady_step_ms (median)": {name: round(1e3 * v, 3) for name, v in steady.items()},
        "steady_step_ms (min)": {name: round(1e3 * min(t[skip:]), 3) for name, t in times.items()},
        "annotate_over_jit": round(steady["annotate"] / steady["jit"], 3),
        "spmd_over_jit": round(steady["spmd"] / steady["jit"], 3),
        "loss_first_last": {name: [v[0], v[-1]] for name, v in losses.items()},
        "loss_max_abs_diff_vs_jit": {
            name: float(np.max(np.abs(np.asarray(v) - jit_losses)))
            for name, v in losses.items()
            if name != "jit"
        },
        "loss_curves": losses,
        "donated_inputs_deleted": donated_ok,
        "memory_bytes_per_device": memory,
        "peak_memory_over_jit": {
            name: round(memory[name]["peak"] / memory["jit"]["peak"], 3)
            for name in ("annotate", "spmd")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per loop")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of timing")
    for key, value in CONFIG.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "training_loop.json")
    )
    args = parser.parse_args()
    config: dict[str, Any] = {key: getattr(args, key) for key in CONFIG}
    dropout = _has_dropout()
    if dropout:
        config["dropout"] = 0.1
    load_before = [round(v, 2) for v in os.getloadavg()]
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    model = models.get("gpt", **config)
    t0 = time.perf_counter()
    row = run(model, mesh, args.steps, args.skip)
    compiles = row["compilations"]
    result = {
        "benchmark": f"{args.steps}-step GPT training loop, {SCHEDULE}, donation on, mesh (4, 2) "
        "of 8 CPU devices: partir annotate / spmd vs jax.jit with the same PartitionSpecs",
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "config": config,
        "dropout": "dropout=0.1 (GPTConfig has the field)"
        if dropout
        else "none (GPTConfig has no dropout field)",
        "steps": args.steps,
        "skip": args.skip,
        "targets": "compilations of each partir loop == 1; annotate_over_jit <= 1.05; "
        "spmd_over_jit <= 1.15; equal loss curves; peak memory <= jit's",
        "met": {
            "one_compilation": compiles["annotate"] == 1 and compiles["spmd"] == 1,
            "annotate_time": row["annotate_over_jit"] <= 1.05,
            "spmd_time": row["spmd_over_jit"] <= 1.15,
            "loss_curves_equal (max abs diff <= 1e-4)": all(
                v <= 1e-4 for v in row["loss_max_abs_diff_vs_jit"].values()
            ),
            "memory": all(v <= 1.0 for v in row["peak_memory_over_jit"].values()),
            "donation (arguments + outputs - aliased <= jit's)": all(
                row["memory_bytes_per_device"][name]["held_across_steps"]
                <= row["memory_bytes_per_device"]["jit"]["held_across_steps"]
                for name in ("annotate", "spmd")
            ),
        },
        "memory_gap": MEMORY_GAP
        if row["peak_memory_over_jit"]["spmd"] > 1.0
        else "none: both partir modes peak at or below jit",
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        **row,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
