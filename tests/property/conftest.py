"""Reports the oracle's coverage (`test_oracle.COVERAGE`: which primitives, rule factor kinds
and collectives its drawn cases reached) at the end of the session, and writes it as JSON where
$PARTIR_ORACLE_COVERAGE names a file."""

import json
import os
import sys


def pytest_terminal_summary(terminalreporter):
    """Print what the oracle exercised (nothing when it did not run)."""
    module = next((m for n, m in sys.modules.items() if n.endswith("test_oracle")), None)
    coverage = getattr(module, "COVERAGE", None)
    if not coverage:
        return
    terminalreporter.section("oracle coverage")
    for section, counts in sorted(coverage.items()):
        items = ", ".join(f"{k} {n}" for k, n in counts.most_common())
        terminalreporter.write_line(f"{section} ({len(counts)}): {items}")
    path = os.environ.get("PARTIR_ORACLE_COVERAGE")
    if path:
        with open(path, "w") as f:
            json.dump({s: dict(c) for s, c in coverage.items()}, f, indent=1, sort_keys=True)
