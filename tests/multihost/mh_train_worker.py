"""One process of the 2-process test (`test_multihost_run.py`): JAX's distributed runtime
on 127.0.0.1 with gloo CPU collectives, 4 CPU devices per process.

Usage: python mh_train_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Plans the zoo GPT step under BP+MP+Z3 in both modes on a (batch=4, model=2) mesh over
all 8 devices, feeds this process only its half of the batch through `plan.shard_batch`,
runs 3 steps, gathers losses and parameters to every process (process 0 writes them),
and records fingerprints, the plan's cross-host axes and the errors partir raises on
disagreeing processes and on a wrong local shape. Writes OUT_DIR/process{ID}.json (and
process 0 also OUT_DIR/{mode}.npz).
"""

import json
import os
import sys

import jax

pid, count, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=count,
    process_id=pid,
    initialization_timeout=60,
)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from mh_config import CONFIG, STEPS  # noqa: E402

import partir  # noqa: E402
from partir.api import multihost as _multihost  # noqa: E402
from partir.errors import LocalShapeError, PlanMismatchError  # noqa: E402
from partir.testing import models, schedules  # noqa: E402

record: dict = {"process": pid, "devices": jax.device_count(), "local": jax.local_device_count()}
mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
m = models.get("gpt", **CONFIG)
params, opt_state, batch = m.args
abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), m.args)
record["cross_host_axes"] = sorted(_multihost.cross_host_axes(mesh) or ())

for mode in ("annotate", "spmd"):
    step = partir.partition(schedules.schedule("gpt", "BP+MP+Z3"), mesh=mesh, mode=mode)(m.fn)
    plan = step.plan(*abstract)  # checks that both processes made this plan
    record[f"fingerprint_{mode}"] = plan.fingerprint()
    # this process's rows of the batch, as the plan lays them out over the processes
    rows = {path: _multihost.local_part(s, shape)[0] for path, s, (shape, _) in zip(
        plan.program.input_paths, plan._flat_in, plan.input_signature[1], strict=True
    ) if path.startswith("batch")}  # fmt: skip
    record[f"batch_rows_{mode}"] = sorted(set(rows.values()))
    ((lo, hi),) = set(rows.values())
    local_batch = jax.tree_util.tree_map(lambda x, lo=lo, hi=hi: np.asarray(x)[lo:hi], batch)
    p, o, b = plan.shard_batch(params, opt_state, local_batch)
    losses = []
    for _ in range(STEPS):
        p, o, loss = plan(p, o, b)
        losses.append(float(multihost_utils.process_allgather(loss, tiled=True)))
    record[f"losses_{mode}"] = losses
    gathered = multihost_utils.process_allgather(p, tiled=True)
    if pid == 0:
        flat = jax.tree_util.tree_leaves_with_path(gathered)
        np.savez(
            os.path.join(out_dir, f"{mode}.npz"),
            **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat},
        )
    if mode == "annotate":
        report = plan.simulate("cpu")
        record["topology"] = str(report.topology)
        try:  # 3 rows where this process holds 4 (or all 8)
            plan.shard_batch(params, opt_state, jax.tree_util.tree_map(lambda x: x[:3], batch))
        except LocalShapeError as e:
            record["local_shape_error"] = str(e)

auto = partir.partition(
    [schedules.tactic("gpt", "BP"), partir.AutomaticPartition(["model"])], mesh=mesh
)(m.fn)
auto_plan = auto.plan(*abstract)
record["fingerprint_auto"] = auto_plan.fingerprint()
record["found_auto"] = repr(list(auto_plan.tactics_found))

# planned while an enclosing jax.jit traces: the agreement check runs all the same
tiny = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh)(
    lambda x: (x * 3).sum()
)
x = jax.make_array_from_process_local_data(
    NamedSharding(mesh, P("batch")), np.ones((4, 4), np.float32), (8, 4)
)
under_jit = jax.jit(lambda x: tiny(x) + 1)(x)
record["under_jit"] = float(multihost_utils.process_allgather(under_jit, tiled=True))

# processes that disagree: a schedule that differs by process must be refused on both
own = schedules.schedule("gpt", "BP" if pid == 0 else "MP")
try:
    partir.partition(own, mesh=mesh)(m.fn).plan(*abstract)
except PlanMismatchError as e:
    record["mismatch_error"] = str(e)

with open(os.path.join(out_dir, f"process{pid}.json"), "w") as f:
    json.dump(record, f)
multihost_utils.sync_global_devices("done")
jax.distributed.shutdown()
