"""Sequence parallelism on a video transformer: DSP vs Megatron-SP vs Ulysses, and the search.

The zoo's ``video_dit`` (spatial attention over S, temporal attention over T, an MLP per
block; `partir.testing.models.video_dit`) is traced at three sequence sizes ``T x S`` from
shapes alone and planned on abstract meshes of 8 and 64 devices, the sequence axis ``seq``
of size 8 (64 devices: ``batch=8 x seq=8``). Each schedule splits the activations over
``seq`` in its own way:

- ``dsp``: `partir.DSP` (Zhao et al. 2024, arXiv 2403.10266): each stage sharded on the
  dim it does not attend over, switched with all-to-alls.
- ``megatron_sp``: Megatron sequence parallelism (Korthikanti et al. 2022) for this model:
  the Megatron layout of `partir.tactics.MP` on the ``seq`` axis plus the input split on
  time, so each block gathers the sequence before its column-parallel matmuls and
  reduce-scatters after its row-parallel ones.
- ``ulysses``: `partir.tactics.sequence.Ulysses` (Jacobs et al. 2023, arXiv 2309.14509):
  the sequence split on time outside attention, q, k, v re-tiled to heads around every
  attention and the output re-tiled back (4 all-to-alls per attention forward).

And ``auto``: ``[BP, AutomaticPartition("seq")]``, judged on each hardware profile (an
evaluation budget of `AUTO_EVALUATIONS`, deterministic), whose stage family over the
named values can express DSP's dimension switch (`partir.tactics.auto.space`); the JSON
gives its choice and its step time over DSP's. For each row: bytes one device sends per
step on ``seq`` (activations, from `plan.collectives()`), all collectives' bytes, and the
simulated step time on ``h100`` and ``tpu-v5p``. Writes
benchmarks/results/sequence_parallel.json and .png.

    python benchmarks/sequence_parallel.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from _results import write_result

import partir
from partir.tactics import BP, DSP, MP
from partir.tactics.sequence import Ulysses
from partir.testing import models

SIZES = ((16, 64), (32, 256), (64, 1024))
"""(time, space) per row: 1k, 8k and 64k tokens per video."""
MESHES = {8: {"batch": 1, "seq": 8}, 64: {"batch": 8, "seq": 8}}
HARDWARE = ("h100", "tpu-v5p")
CONFIG = {"layers": 2, "d_model": 256, "heads": 8, "d_ff": 1024, "dtype": "bfloat16"}
AUTO_EVALUATIONS = 48
"""Candidates the search simulates per row and profile (its singles take 21)."""


def schedules() -> dict[str, list]:
    """Strategy name -> schedule (each splits activations over ``seq``)."""
    return {
        "dsp": [*BP(), *DSP()],
        "megatron_sp": [
            *BP(),
            *MP(axis="seq"),
            partir.ManualPartition({"batch/x": 1}, axis="seq"),
        ],
        "ulysses": [*BP(), *Ulysses()],
    }


def auto_schedule(hw: str) -> list:
    """The search on ``seq`` after BP, judged on `hw`."""
    budget = {"evaluations": AUTO_EVALUATIONS}
    return [*BP(), partir.AutomaticPartition("seq", hardware=hw, budget=budget)]


def measure(
    devices: int, time_len: int, space: int, name: str, schedule: list, hardware=HARDWARE
) -> dict:
    """One row: plan `schedule` on the abstract mesh and count and simulate it (on each
    profile of `hardware`)."""
    batch = MESHES[devices]["batch"]
    m = models.video_dit(abstract=True, batch=batch, time=time_len, space=space, **CONFIG)
    t0 = time.perf_counter()
    plan = partir.partition(schedule, mesh=MESHES[devices], mode="spmd")(m.fn).plan(*m.args)
    table = [c for c in plan.collectives() if c.communicates]
    seq = [c for c in table if "seq" in c.axes and not c.serves]
    kinds: dict[str, int] = {}
    for c in seq:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    row = {
        "strategy": name,
        "devices": devices,
        "mesh": MESHES[devices],
        "time": time_len,
        "space": space,
        "tokens": time_len * space,
        "seq_activation_bytes": sum(c.bytes for c in seq),
        "seq_collectives": kinds,
        "all_bytes": sum(c.bytes for c in table),
        "plan_s": round(time.perf_counter() - t0, 2),
    }
    for hw in hardware:
        report = plan.simulate(hw)
        row[f"step_time_s_{hw}"] = report.step_time_s
        row[f"communication_s_{hw}"] = report.communication_time_s
    if name.startswith("auto"):
        row["found"] = [repr(t) for t in plan.tactics_found]
    return row


def auto_rows(rows: list[dict], devices: int, time_len: int, space: int) -> list[dict]:
    """The search's row per profile it is judged on, with its step time over DSP's."""
    dsp = next(
        r for r in rows
        if r["strategy"] == "dsp" and r["devices"] == devices and r["time"] == time_len
        and r["space"] == space
    )  # fmt: skip
    out = []
    for hw in HARDWARE:
        row = measure(devices, time_len, space, f"auto_{hw}", auto_schedule(hw), (hw,))
        row["over_dsp"] = row[f"step_time_s_{hw}"] / dsp[f"step_time_s_{hw}"]
        row["is_dsp_layout"] = any(t.startswith("DSP(") for t in row["found"]) and (
            row["seq_collectives"] == dsp["seq_collectives"]
        )
        out.append(row)
    return out


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """Bytes per device on ``seq`` and simulated step time per strategy, per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = sorted({r["strategy"] for r in rows if not r["strategy"].startswith("auto")})
    for devices, style in zip(sorted(MESHES), ("-", "--"), strict=False):
        for name in names:
            sel = sorted(
                (r for r in rows if r["strategy"] == name and r["devices"] == devices),
                key=lambda r: r["tokens"],
            )
            tokens = [r["tokens"] for r in sel]
            label = f"{name}, {devices} dev"
            axes[0].plot(tokens, [r["seq_activation_bytes"] / 2**20 for r in sel], style,
                         marker="o", label=label)  # fmt: skip
            for ax, hw in zip(axes[1:], HARDWARE, strict=True):
                ax.plot(tokens, [r[f"step_time_s_{hw}"] * 1e3 for r in sel], style,
                        marker="o", label=label)  # fmt: skip
    axes[0].set_ylabel("activation bytes sent on seq per device (MiB)")
    for ax, hw in zip(axes[1:], HARDWARE, strict=True):
        ax.set_ylabel(f"simulated step time on {hw} (ms)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens per video (T x S)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("video_dit: sequence parallelism over 8 ranks (partir plans, simulated)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    """Run every (devices, size, strategy) row, then write the JSON and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest size")
    args = parser.parse_args()
    rows = []
    for devices in sorted(MESHES):
        for time_len, space in SIZES[:1] if args.quick else SIZES:
            for name, schedule in schedules().items():
                rows.append(measure(devices, time_len, space, name, schedule))
                r = rows[-1]
                print(f"{devices:3d} dev T={time_len:3d} S={space:5d} {name:12s} "
                      f"seq bytes {r['seq_activation_bytes']:>12,}  "
                      f"h100 {r['step_time_s_h100'] * 1e3:8.3f} ms  {r['seq_collectives']}")  # fmt: skip
            for r in auto_rows(rows, devices, time_len, space):
                rows.append(r)
                hw = r["strategy"][len("auto_") :]
                print(f"{devices:3d} dev T={time_len:3d} S={space:5d} {r['strategy']:12s} "
                      f"{hw} {r[f'step_time_s_{hw}'] * 1e3:8.3f} ms = {r['over_dsp']:.3f} x dsp "
                      f"(dsp layout: {r['is_dsp_layout']}, {r['plan_s']} s)")  # fmt: skip
    ratios = {}
    for r in rows:
        if r["strategy"] == "dsp":
            ref = next(
                x for x in rows
                if x["strategy"] == "megatron_sp" and x["devices"] == r["devices"]
                and x["tokens"] == r["tokens"]
            )  # fmt: skip
            ratios[f"{r['devices']}dev_{r['tokens']}tok"] = (
                r["seq_activation_bytes"] / ref["seq_activation_bytes"]
            )
    auto = {
        f"{r['strategy']}_{r['devices']}dev_{r['tokens']}tok": r["over_dsp"]
        for r in rows if r["strategy"].startswith("auto")
    }  # fmt: skip
    result = {
        "model": {"name": "video_dit", **CONFIG},
        "meshes": {str(k): v for k, v in MESHES.items()},
        "rows": rows,
        "dsp_over_megatron_sp_bytes": ratios,
        "auto_over_dsp_step_time": auto,
        "auto_max_over_dsp": max(auto.values()) if auto else None,
        "note": (
            "seq_activation_bytes counts collectives on the seq axis that are not gradient "
            "reductions. DSP switches layouts with one all-to-all at each named value "
            "(docs/tactics.md, DSP); Ulysses with four around every attention. auto_<hw> "
            "rows: AutomaticPartition('seq') after BP judged on <hw> (step time on that "
            "profile only), over_dsp its step time over DSP's there."
        ),
    }
    here = pathlib.Path(__file__).parent / "results"
    write_result(result, here / "sequence_parallel.json")
    plot(rows, here / "sequence_parallel.png")


if __name__ == "__main__":
    main()
