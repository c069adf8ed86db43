"""Plan the zoo GPT step and print what decides the program, as JSON on stdout, for
`test_multihost_determinism.py` (run under different ``PYTHONHASHSEED`` values).

Usage: python mh_plan_worker.py
"""

import json

import jax

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)

from jax.sharding import AxisType  # noqa: E402
from mh_config import CONFIG  # noqa: E402

import partir  # noqa: E402
from partir.testing import models, schedules  # noqa: E402

mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
m = models.get("gpt", abstract=True, **CONFIG)
cases = {
    "manual_annotate": (schedules.schedule("gpt", "BP+MP+Z3"), "annotate"),
    "manual_spmd": (schedules.schedule("gpt", "BP+MP+Z3"), "spmd"),
    "auto_model": ([schedules.tactic("gpt", "BP"), partir.AutomaticPartition(["model"])], "spmd"),
    "auto_both": (
        [partir.AutomaticPartition(["batch", "model"], budget={"evaluations": 30})],
        "annotate",
    ),
}
out = {}
for name, (schedule, mode) in cases.items():
    plan = partir.partition(schedule, mesh=mesh, mode=mode)(m.fn).plan(*m.args)
    out[name] = {
        "fingerprint": plan.fingerprint(),
        "ir": plan.ir(),
        "found": repr(list(plan.tactics_found)),
        "lowered": str(plan.lowered.module),
        "collectives": str(plan.collectives()),
        "emitted": plan.lower().as_text(),
        "explain": plan.explain("params/blocks/0/attn/q"),
    }
print(json.dumps(out))
