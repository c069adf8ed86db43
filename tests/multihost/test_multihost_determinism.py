"""The same planning in two fresh interpreters with different ``PYTHONHASHSEED`` values
gives the same IR, tactics, device-local and emitted programs and fingerprints (manual
and `AutomaticPartition` schedules): what multi-controller JAX needs of every process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("mh_plan_worker.py")
SEEDS = ("0", "4242")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    """Both interpreters at once (they share nothing but the files they read)."""
    procs = []
    for seed in SEEDS:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
        env["PYTHONHASHSEED"] = seed
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=WORKER.parent,
            )
        )
    out = []
    try:
        for seed, p in zip(SEEDS, procs, strict=True):
            stdout, stderr = p.communicate(timeout=TIMEOUT_S)
            if p.returncode != 0:
                pytest.fail(f"planning under PYTHONHASHSEED={seed} failed:\n{stderr[-4000:]}")
            out.append(json.loads(stdout.splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


CASES = ("manual_annotate", "manual_spmd", "auto_model", "auto_both")


@pytest.mark.parametrize("case", CASES)
def test_plans_equal_across_hash_seeds(runs: list[dict], case: str) -> None:
    a, b = (r[case] for r in runs)
    for key in ("ir", "found", "lowered", "collectives", "emitted", "explain"):
        assert a[key] == b[key], f"{case}: {key} differs between hash seeds {SEEDS}"
    assert a["fingerprint"] == b["fingerprint"]


def test_fingerprints_tell_plans_apart(runs: list[dict]) -> None:
    prints = [runs[0][c]["fingerprint"] for c in CASES]
    assert len(set(prints)) == len(CASES)
    assert all(len(p) == 64 for p in prints)  # sha256 hex
    assert "ManualPartition(" in runs[0]["auto_both"]["found"]
