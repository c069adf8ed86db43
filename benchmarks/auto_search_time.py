"""How long AutomaticPartition searches: 32-layer GPT steps, and from 8 to 4096 devices.

All plans only (ShapeDtypeStruct inputs, `models.get(..., abstract=True)`); the schedule is
``[BP on "batch", AutomaticPartition(["model"])]`` judged on h100, default budget.
"Search time" is the automatic tactic's own wall time (`report.search_time_s`: decision
space, every simulated candidate, the ILP, the search, the chosen tactics printed); the
whole plan (tracing the step, building the propagation engine, BP) is reported beside it.

1. The 32-layer GPT step with scanned layers (``gpt_scan``, layers=32): target <= 10 s.
2. The same step unrolled (``gpt``, layers=32, 14k ops): target <= 60 s.
   Both at the zoo's default width and at a `LARGE` one where tensor parallelism pays.
3. Flatness in the device count: one large ``gpt_scan`` config (every dim divisible by the
   largest mesh) on meshes of 8 to 4096 devices, in two series: (batch, model) in ratio
   2:1 (8 to 2048 devices) and model fixed at 8 (8 to 4096). Target: the largest mesh's
   search time within 1.5x of the 8-device one's in each series.

Writes benchmarks/results/auto_search_time.json.

    python benchmarks/auto_search_time.py [--skip-unrolled]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

import jax

jax.config.update("jax_num_cpu_devices", 8)

from _results import write_result  # noqa: E402

import partir  # noqa: E402
from partir.testing import models, schedules  # noqa: E402

HARDWARE = "h100"
FLAT_CONFIG = {
    "layers": 32, "d_model": 4096, "heads": 64, "d_ff": 16384, "seq": 2048, "batch": 4096,
    "vocab": 65536, "dtype": "bfloat16",
}  # fmt: skip
"""A 32-layer decoder whose every sharded dim divides by the largest mesh axis."""
LARGE = {
    "d_model": 1024, "heads": 16, "d_ff": 4096, "seq": 512, "batch": 16, "vocab": 8192,
    "dtype": "bfloat16",
}  # fmt: skip
"""A width at which tensor parallelism pays, so the search has something to find (at the
zoo's default width nothing beats BP alone and the search stops early)."""
SERIES = {
    "ratio 2:1": [(4, 2), (8, 4), (16, 8), (32, 16), (64, 32)],
    "model 8": [(1, 8), (8, 8), (64, 8), (512, 8)],
}


def measure(name: str, mesh: dict[str, int], **config: Any) -> dict[str, Any]:
    """Plan [BP, AutomaticPartition(['model'])] once; the search's and the plan's time."""
    model = models.get(name, abstract=True, **config)
    schedule = [schedules.tactic(name, "BP"), partir.AutomaticPartition(["model"])]
    start = time.perf_counter()
    plan = partir.partition(schedule, mesh=mesh, mode="spmd", hardware=HARDWARE)(model.fn).plan(
        *model.args
    )
    plan_s = time.perf_counter() - start
    report = plan.records[1].report  # type: ignore[attr-defined]
    ops = sum(1 for _ in plan.program.module.walk())
    return {
        "model": name,
        "config": config,
        "mesh": mesh,
        "devices": mesh["batch"] * mesh["model"],
        "ops": ops,
        "groups": report.groups,
        "classes": report.classes,
        "evaluations": report.evaluations,
        "search_s": round(report.search_time_s, 3),
        "ilp_s": round(report.ilp_time_s, 4),
        "plan_s": round(plan_s, 3),
        "chosen": report.chosen,
        "step_time_s": report.step_time_s,
        "prefix_step_time_s": report.prefix_step_time_s,
        "ilp_bound_s": report.ilp_bound,
        "gap": report.gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-unrolled", action="store_true")
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "auto_search_time.json")
    )
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "AutomaticPartition search time (plans only, h100 judge)",
        "schedule": "[BP on 'batch', AutomaticPartition(['model'])]",
        "machine": {"cpus": os.cpu_count(), "jax": jax.__version__},
    }
    mesh = {"batch": 4, "model": 2}
    for size, config in (("default", {}), ("large", LARGE)):
        scan = measure("gpt_scan", mesh, layers=32, **config)
        print(f"gpt_scan 32 layers, {size}:", json.dumps(scan), flush=True)
        result[f"gpt_scan_32_{size}"] = {**scan, "target_s": 10.0, "ok": scan["search_s"] <= 10.0}
        if not args.skip_unrolled:
            unrolled = measure("gpt", mesh, layers=32, **config)
            print(f"gpt 32 layers unrolled, {size}:", json.dumps(unrolled), flush=True)
            result[f"gpt_32_unrolled_{size}"] = {
                **unrolled, "target_s": 60.0, "ok": unrolled["search_s"] <= 60.0,
            }  # fmt: skip
    flat: dict[str, Any] = {}
    for series, meshes in SERIES.items():
        rows = []
        for b, m in meshes:
            row = measure("gpt_scan", {"batch": b, "model": m}, **FLAT_CONFIG)
            print(f"{series} {b}x{m}:", json.dumps(row), flush=True)
            rows.append(row)
        times = [r["search_s"] for r in rows]
        growth = times[-1] / times[0]
        flat[series] = {
            "rows": rows,
            "devices": [r["devices"] for r in rows],
            "search_s": times,
            "largest_over_smallest": round(growth, 3),
            "ok": growth <= 1.5,
        }
    result["flatness"] = {**flat, "target": "search_s at the largest mesh <= 1.5x at 8 devices"}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
