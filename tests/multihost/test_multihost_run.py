"""Two processes x 4 CPU devices on JAX's distributed runtime (gloo, 127.0.0.1): the zoo
GPT step under BP+MP+Z3 in both modes equals a single-process run, and both processes
make the same plans (manual and automatic)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from mh_config import CONFIG, STEPS

import partir
from partir.testing import models, schedules

WORKER = Path(__file__).with_name("mh_train_worker.py")
PROCESSES = 2
TIMEOUT_S = 240
"""Per run of both workers: a hung collective fails the test instead of the CI job."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the worker and its children
            p.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multihost")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env["PARTIR_CPU_PROFILE"] = os.environ["PARTIR_CPU_PROFILE"]
    port = str(_free_port())
    procs, logs = [], []
    try:
        for pid in range(PROCESSES):
            logs.append(log := open(out / f"log{pid}.txt", "w"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(pid), str(PROCESSES), port, str(out)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=WORKER.parent,
                    start_new_session=True,
                )
            )
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill(procs)
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if codes != [0] * PROCESSES:
        tails = "\n".join(
            f"--- process {i} (exit {c}):\n"
            + "\n".join((out / f"log{i}.txt").read_text().splitlines()[-30:])
            for i, c in enumerate(codes)
        )
        pytest.fail(f"multi-process run failed:\n{tails}")
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads((out / f"process{i}.json").read_text()) for i in range(PROCESSES)]


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[list[float], dict[str, np.ndarray]]]:
    """The same plans run on this one process (8 devices), the same 3 steps."""
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    m = models.get("gpt", **CONFIG)
    out = {}
    for mode in ("annotate", "spmd"):
        step = partir.partition(schedules.schedule("gpt", "BP+MP+Z3"), mesh=mesh, mode=mode)
        plan = step(m.fn).plan(*m.args)
        p, o, b = plan.place(*m.args)
        losses = []
        for _ in range(STEPS):
            p, o, loss = plan(p, o, b)
            losses.append(float(loss))
        flat = jax.tree_util.tree_leaves_with_path(p)
        out[mode] = (losses, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})
    return out


def test_multihost_layout(run: Path) -> None:
    for r in _records(run):
        assert (r["devices"], r["local"]) == (8, 4)
        assert r["cross_host_axes"] == ["batch"]
        assert r["topology"] == "batch=4: ethernet cross-host, model=2: loopback"
    rows = [r["batch_rows_annotate"] for r in _records(run)]
    assert rows == [[[0, 4]], [[4, 8]]]  # each process was fed only its half


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_multihost_matches_single_process(run: Path, reference: dict, mode: str) -> None:
    ref_losses, ref_params = reference[mode]
    for r in _records(run):
        np.testing.assert_allclose(r[f"losses_{mode}"], ref_losses, rtol=0, atol=1e-5)
    got = np.load(run / f"{mode}.npz")
    assert sorted(got.files) == sorted(ref_params)
    for path, want in ref_params.items():
        np.testing.assert_allclose(got[path], want, rtol=0, atol=1e-5, err_msg=path)
    # the steps did train: a plan that ran nothing would match only the initial params
    initial = jax.tree_util.tree_leaves_with_path(models.get("gpt", **CONFIG).args[0])
    assert any(not np.allclose(got[jax.tree_util.keystr(k)], v) for k, v in initial)


def test_multihost_fingerprints_agree(run: Path) -> None:
    a, b = _records(run)
    for key in ("fingerprint_annotate", "fingerprint_spmd", "fingerprint_auto", "found_auto"):
        assert a[key] == b[key], key
    assert a["fingerprint_annotate"] != a["fingerprint_spmd"]
    assert "axis='model'" in a["found_auto"]


def test_multihost_planned_inside_jit(run: Path) -> None:
    # x = ones[8, 4] split over both processes; (x * 3).sum() + 1
    assert [r["under_jit"] for r in _records(run)] == [97.0, 97.0]


def test_multihost_disagreeing_processes_raise(run: Path) -> None:
    for r in _records(run):
        msg = r["mismatch_error"]
        assert "the 2 processes made different plans" in msg
        assert "What differs: schedule" in msg
        assert f"process {r['process']}: " in msg and "(this one)" in msg


def test_multihost_local_shape_error(run: Path) -> None:
    for r in _records(run):
        msg = r["local_shape_error"]
        assert f"local shape [3, 16] on process {r['process']} of 2" in msg
        assert "global shape is [8, 16]" in msg and "must hold [4, 16]" in msg
        lo = 4 * r["process"]
        assert f"its part: {lo}:{lo + 4}" in msg
