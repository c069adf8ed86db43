"""Mutation testing: do the tests fail when a rule, a pass or the simulator is wrong?

Each mutant in `catalogue.MUTANTS` replaces one line of partir/rules/, partir/passes/ or
partir/simulator/. For each one this script copies the repository to a scratch directory
(never touching the checkout it runs from: other processes may be importing it), applies the
mutant there, runs the mutant's tests against the copy (``PYTHONPATH`` pointing at it) and
records whether some test failed (killed) or all passed (survived).

    python tests/mutation/run.py                   # every mutant, its relevant tests
    python tests/mutation/run.py --only 3          # the first 3 mutants (or --only id,id)
    python tests/mutation/run.py --oracle-only     # only the hypothesis oracle, per mutant
    python tests/mutation/run.py --examples 100    # oracle examples per mode (default: ci's)

It writes benchmarks/results/mutation.json (``--out`` to change): per mutant its id, kind,
file:line, the original and mutated line, the tests run, killed or survived, the first failing
test and, in oracle mode, hypothesis's falsifying example. Survivors carry the catalogue's
explanation. This file is not collected by pytest (it is not named ``test_*.py``) and is not
part of ``make test``: a full run takes an hour on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from catalogue import MUTANTS, ORACLE, Mutant  # noqa: E402

ROOT = HERE.parent.parent
IGNORE = shutil.ignore_patterns(".venv*", ".git", ".hypothesis", "__pycache__", "*.egg-info")


def locate(root: pathlib.Path, m: Mutant) -> int:
    """The 1-based line `m.find` is on; it must occur exactly once in the file."""
    text = (root / m.file).read_text()
    if text.count(m.find) != 1:
        raise SystemExit(f"{m.id}: {m.find!r} occurs {text.count(m.find)} times in {m.file}")
    return text[: text.index(m.find)].count("\n") + 1


def _falsifying(output: str) -> str | None:
    """Hypothesis's report of the falsifying example, trimmed, from pytest's output."""
    # "Failing test case" from hypothesis 6.1xx on; "Falsifying example" before
    hits = [
        i for i in (output.find("Falsifying example"), output.find("Failing test case")) if i >= 0
    ]
    if not hits:
        return None
    start = min(hits)
    lines = []
    for line in output[start:].splitlines():
        if re.match(r"^(tests/|FAILED|=+ |_+ )", line) and lines:
            break
        lines.append(line.removeprefix("E ").rstrip())
    return "\n".join(lines[:80])


def _first_failure(output: str) -> str | None:
    hit = re.search(r"^(FAILED|ERROR) (\S+)", output, re.M)
    return hit.group(2) if hit else None


def run_mutant(
    copy: pathlib.Path, m: Mutant, tests: list[str], env: dict[str, str], timeout: float
) -> dict:
    """Apply `m` to `copy`, run `tests` there, restore the file; the result record."""
    path = copy / m.file
    original = path.read_text()
    line = locate(copy, m)
    old_line = original.splitlines()[line - 1]
    mutated = original.replace(m.find, m.replace)
    path.write_text(mutated)
    new_line = mutated.splitlines()[line - 1]
    # no:randomly: the tests run in the order given, so the focused files come first
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider"]
    cmd += ["-p", "no:randomly"]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [*cmd, *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, output = None, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else ""
    finally:
        path.write_text(original)
    record = {
        "id": m.id,
        "kind": m.kind,
        "where": f"{m.file}:{line}",
        "original": old_line.strip(),
        "mutated": new_line.strip(),
        "tests": tests,
        "seconds": round(time.monotonic() - started, 1),
    }
    if rc is None:
        record["status"] = "timeout"
    elif rc == 0:
        record["status"] = "survived"
        record["explanation"] = m.survivor_note or "UNEXPLAINED: no test fails"
    elif rc in (1, 2):  # 1: a test failed, 2: collection or usage error (an import failed)
        record["status"] = "killed"
        record["killed_by"] = _first_failure(output)
        falsifying = _falsifying(output)
        if falsifying:
            record["falsifying_example"] = falsifying
    else:
        record["status"] = f"error rc={rc}"
        record["output_tail"] = output[-2000:]
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the catalogue (or part of it); write the JSON; exit 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="N (the first N mutants) or comma-separated mutant ids")
    ap.add_argument("--oracle-only", action="store_true", help="only the oracle, oracle kinds")
    ap.add_argument("--examples", type=int, help="oracle examples per mode (default 300)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--no-shrink", action="store_true", help="report hypothesis's first failure")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds per mutant")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mutation.json"))
    args = ap.parse_args(argv)

    mutants = [m for m in MUTANTS if m.oracle_kind or not args.oracle_only]
    if args.only:
        if args.only.isdigit():
            mutants = mutants[: int(args.only)]
        else:
            wanted = set(args.only.split(","))
            mutants = [m for m in mutants if m.id in wanted]
    for m in mutants:
        locate(ROOT, m)  # fail before the long runs if the catalogue went stale

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="partir-mutation-"))
    copy = scratch / "repo"
    shutil.copytree(ROOT, copy, ignore=IGNORE)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    env["HYPOTHESIS_PROFILE"] = "mutation"
    if args.examples:
        env["PARTIR_MUTATION_EXAMPLES"] = str(args.examples)
    if args.no_shrink:  # shrinking a killed mutant's example can take longer than finding it
        env["PARTIR_MUTATION_NO_SHRINK"] = "1"
    check = subprocess.run(
        [sys.executable, "-c", "import partir; print(partir.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not check.startswith(str(copy)):
        raise SystemExit(f"the copy is not the partir imported: {check}")

    # The unmutated copy must pass what the mutants will run, or every mutant reads as killed.
    union = sorted({t for m in mutants for t in ([ORACLE] if args.oracle_only else m.tests)})
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
    cmd += ["-p", "no:randomly", *union]
    started = time.monotonic()
    if args.no_baseline:
        base = subprocess.CompletedProcess(cmd, 0, "", "")
    else:
        base = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, check=False)
    baseline = {
        "tests": union,
        "rc": "skipped" if args.no_baseline else base.returncode,
        "seconds": round(time.monotonic() - started),
    }
    print(f"baseline: rc={baseline['rc']} ({baseline['seconds']}s)", flush=True)
    if base.returncode != 0:
        print((base.stdout + base.stderr)[-3000:])
        raise SystemExit("the unmutated tests fail: fix them before judging mutants")

    records = []
    for k, m in enumerate(mutants):
        tests = [ORACLE] if args.oracle_only else list(m.tests)
        rec = run_mutant(copy, m, tests, env, args.timeout)
        records.append(rec)
        print(f"[{k + 1}/{len(mutants)}] {m.id}: {rec['status']} ({rec['seconds']}s)", flush=True)
        _write(args, baseline, records, partial=k + 1 < len(mutants))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _write(args: argparse.Namespace, baseline: dict, records: list[dict], partial: bool) -> None:
    """Write (or, after each mutant, update) this mode's section of the JSON."""

    killed = sum(r["status"] == "killed" for r in records)
    result = {
        "mode": "oracle only" if args.oracle_only else "relevant tests (a subset of make test)",
        "oracle_examples_per_mode": args.examples or 300,
        "oracle_shrinks": not args.no_shrink,
        "complete": not partial,
        "baseline": baseline,
        "mutants": len(records),
        "killed": killed,
        "killed_fraction": round(killed / max(1, len(records)), 3),
        "survivors": [r["id"] for r in records if r["status"] != "killed"],
        "results": records,
    }
    out = pathlib.Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    key = "oracle_only" if args.oracle_only else "relevant_tests"
    previous[key] = result
    out.write_text(json.dumps(previous, indent=1) + "\n")
    if not partial:
        print(f"{killed}/{len(records)} killed; wrote {out} [{key}]")


if __name__ == "__main__":
    sys.exit(main())
