"""The mutants `run.py` applies: one-line bugs in partir/rules/, partir/passes/ and
partir/simulator/, each with the tests that should catch it.

A mutant replaces the unique text `find` of `file` (it must sit on one line) with `replace`.
`oracle_kind` marks the eleven kinds the hypothesis oracle alone must kill (issue #20): its
`--oracle-only` mode runs only the oracle on those. `survivor_note` explains a mutant known to
survive (equivalent behaviour); an unexplained survivor is a missing test.
"""

from __future__ import annotations

from dataclasses import dataclass

ORACLE = "tests/property/test_oracle.py"

# The focused, deterministic cases first (pytest runs files in the order given, skipping a
# file already collected, and run.py stops at the first failure): they kill in seconds what
# the oracle, last, may take minutes to find.
FOCUSED = ("tests/passes/test_mutant_kills.py", "tests/passes/test_partial_flow.py")
RULES_TESTS = (
    *FOCUSED,
    "tests/rules/test_rules.py",
    "tests/test_filecheck.py",
    "tests/passes",
    ORACLE,
)
PROPAGATION_TESTS = (
    *FOCUSED,
    "tests/passes",
    "tests/rules/test_rules.py",
    "tests/test_filecheck.py",
    "tests/plan/test_conflict_kinds.py",
    "tests/api/test_numerics.py",
    ORACLE,
)
LOWERING_TESTS = (
    *FOCUSED,
    "tests/test_filecheck.py",
    "tests/api/test_numerics.py",
    "tests/passes/test_published_tables.py",
    "tests/backend",
    ORACLE,
)
SIMULATOR_TESTS = ("tests/passes/test_mutant_kills.py", "tests/simulator")


@dataclass(frozen=True)
class Mutant:
    """One single-line mutant."""

    id: str
    kind: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    oracle_kind: bool = False
    survivor_note: str | None = None


def _m(id: str, kind: str, file: str, find: str, replace: str, tests, **kw) -> Mutant:
    return Mutant(id, kind, f"partir/{file}", find, replace, tuple(tests), **kw)


MUTANTS: list[Mutant] = [
    # ---- the eleven kinds of issue #20 (the oracle alone must kill these) ----
    _m("edges-mul-linear", "mul treated as linear (partial x partial stays partial)",
       "passes/edges.py", '"mul": "one"', '"mul": "all"', PROPAGATION_TESTS, oracle_kind=True),
    _m("safe-whole-always", "operand without the reduce factor taken as safe whole",
       "passes/propagate.py", "        return is_zero(v)", "        return True",
       PROPAGATION_TESTS, oracle_kind=True),
    _m("transpose-inverse", "transpose with the inverse permutation", "rules/shape.py",
       "results=[(0, permutation.index(d))]", "results=[(0, permutation[d])]", RULES_TESTS,
       oracle_kind=True),
    _m("conflict-unrecorded", "conflict left unrecorded", "passes/propagate.py",
       "            self._conflict(edge, axis, claims)", "            pass", PROPAGATION_TESTS,
       oracle_kind=True),
    _m("split-reduce-drop-allreduce", "dropped all-reduce in optimize_collectives",
       "ir/spmd.py",
       "rw.replace_all_uses_with(old.results[0], reduced.result)",
       "rw.replace_all_uses_with(old.results[0], local.outs[0])", LOWERING_TESTS,
       oracle_kind=True),
    _m("rev-pass-through", "rev treated as pass-through", "rules/shape.py",
       "kind = REPLICATE if d in reversed_dims else FactorKind.PASS", "kind = FactorKind.PASS",
       RULES_TESTS, oracle_kind=True),
    _m("reduce-max-as-sum", "wrong reduction kind (max pending as sum)", "rules/reduction.py",
       'FactorKind.REDUCE, "max")', 'FactorKind.REDUCE, "sum")', RULES_TESTS, oracle_kind=True),
    _m("slice-limit-off-by-one", "off-by-one in slice localisation",
       "passes/localize.py", "local if limit == full else limit",
       "local - 1 if limit == full else limit", LOWERING_TESTS, oracle_kind=True),
    _m("lower-drop-allreduce", "dropped collective (all_reduce of a partial operand)",
       "passes/lower_to_spmd.py", "        if extra_partial:", "        if False:",
       LOWERING_TESTS, oracle_kind=True),
    _m("iota-dim-pass", "wrong factor kind (iota's counting dim passes through)",
       "rules/shape.py", "kind=REPLICATE if d == axis else FactorKind.PASS)",
       "kind=FactorKind.PASS)", RULES_TESTS, oracle_kind=True),
    _m("broadcast-wrong-dim", "wrong dim (broadcast source dim off by one)", "rules/shape.py",
       "        d = source.get(r)", "        d = source.get(r + 1)", RULES_TESTS,
       oracle_kind=True),
    # ---- rules ----
    _m("reduce-min-as-max", "wrong reduction kind (min pending as max)", "rules/reduction.py",
       'FactorKind.REDUCE, "min")', 'FactorKind.REDUCE, "max")', RULES_TESTS),
    _m("concat-dim-pass", "wrong factor kind (concatenated dim passes through)",
       "rules/shape.py", "b.factor(operand_shapes[i][d], operands=[(i, d)], kind=REPLICATE)",
       "b.factor(operand_shapes[i][d], operands=[(i, d)], kind=FactorKind.PASS)", RULES_TESTS),
    _m("pad-always-pass", "padded dim passes through", "rules/shape.py",
       "        if tuple(config) == (0, 0, 0):", "        if True:", RULES_TESTS),
    _m("dynamic-slice-always-pass", "dynamically sliced dim passes through", "rules/shape.py",
       "        if out[d] == size:\n            b.factor(size, operands=[(0, d)], results=[(0, d)])",
       "        if True:\n            b.factor(size, operands=[(0, d)], results=[(0, d)])",
       RULES_TESTS),
    _m("dus-always-pass", "dynamic_update_slice's updated dim passes through",
       "rules/shape.py", "        if update[d] == size:", "        if True:", RULES_TESTS),
    _m("scatter-all-reduce-factor", "wrong factor kind (every scatter's index dim reduces)",
       "rules/indexing.py",
       'kind = FactorKind.REDUCE if op.primitive_name == "scatter-add" else REPLICATE',
       "kind = FactorKind.REDUCE", RULES_TESTS),
    _m("cumulative-wrong-axis", "wrong dim (prefix scan replicates dim 0)",
       "rules/reduction.py", 'return _along_axis(op, op.params["axis"])',
       "return _along_axis(op, 0)", RULES_TESTS),
    _m("reshape-min-not-gcd", "wrong factor size in reshape decomposition", "rules/shape.py",
       "        g = math.gcd(rest_a, rest_c)", "        g = min(rest_a, rest_c)", RULES_TESTS),
    _m("reduce-sum-replicate", "wrong factor kind (reduce_sum's reduced dims replicated)",
       "rules/reduction.py", 'return _reduce_like(op, op.params["axes"], FactorKind.REDUCE)\n',
       'return _reduce_like(op, op.params["axes"], FactorKind.REPLICATE)\n', RULES_TESTS),
    # ---- propagation ----
    _m("edges-sub-one", "sub linear in one operand (x - c split across shards)",
       "passes/edges.py", '"sub": "all"', '"sub": "one"', PROPAGATION_TESTS),
    _m("edges-div-all", "div linear in its divisor", "passes/edges.py", '"div": "first"',
       '"div": "one"', PROPAGATION_TESTS),
    _m("flow-all-check-dropped", "partial flows through x + c", "passes/propagate.py",
       "if mode is Linear.ALL and set(partial_idx) != set(range(len(operands))):",
       "if False and mode is Linear.ALL:", PROPAGATION_TESTS),
    _m("flow-reduction-kind-ignored", "a pending max flows through a linear op",
       "passes/propagate.py",
       "if kinds != {ReductionKind.SUM}:",
       "if False:", PROPAGATION_TESTS),
    _m("replicate-factor-claims", "a replicate factor is propagated", "passes/propagate.py",
       "isinstance(factor, Misaligned) or edge.rule.kind(factor) is FactorKind.REPLICATE:",
       "isinstance(factor, Misaligned):", PROPAGATION_TESTS),
    # ---- lowering and the collective optimizer ----
    _m("lower-reduction-kind-sum", "wrong reduction kind in lowering", "passes/lower_to_spmd.py",
       'kind = rule.reduction if reduce_axes else "sum"', 'kind = "sum"', LOWERING_TESTS),
    _m("rev-noop", "every rev lowered as a no-op", "passes/lower_to_spmd.py",
       'return all(shape[d] == 1 for d in op.params["dimensions"])', "return True",
       LOWERING_TESTS),
    _m("lower-carry-every-partial", "a product carries both operands' pending sums",
       "passes/lower_to_spmd.py", "if i in carriers.get(a, ()))", "if a in carried)",
       LOWERING_TESTS),
    _m("dynamic-slice-global-size", "dynamic_slice keeps its global slice size",
       "passes/localize.py", "local if size == full else size", "size",
       LOWERING_TESTS),
    _m("reduce-scatter-any-kind", "a max all_reduce fused into a sum reduce_scatter",
       "ir/spmd.py", 'and producer.kind.data == "sum"', "and True",
       LOWERING_TESTS),
    _m("rewrite-slice-drop-rest", "dropped all-reduce over the axes not scattered",
       "ir/spmd.py", "            value = inner.result",
       "            value = value", LOWERING_TESTS),
    # ---- simulator ----
    _m("gather-bytes-doubled", "doubled bytes (all_gather volume)", "simulator/collectives.py",
       "        return (n - 1) / n * volume_bytes", "        return 2 * (n - 1) / n * volume_bytes",
       SIMULATOR_TESTS),
    _m("allreduce-bytes-halved", "all_reduce counted as one ring pass", "simulator/collectives.py",
       "        return 2 * (n - 1) / n * volume_bytes", "        return (n - 1) / n * volume_bytes",
       SIMULATOR_TESTS),
    _m("all-to-all-bytes", "all_to_all volume not divided by n", "simulator/collectives.py",
       "        return (n - 1) / n**2 * volume_bytes", "        return (n - 1) / n * volume_bytes",
       SIMULATOR_TESTS),
    _m("nccl-steps", "all_reduce latency counted as n - 1 steps", "simulator/collectives.py",
       "steps = 2 * (n - 1) if all_reduce else n - 1", "steps = n - 1", SIMULATOR_TESTS),
    _m("roofline-max-min", "roofline takes the faster of compute and memory",
       "simulator/costs.py", "    t = max(t_math, t_mem)", "    t = min(t_math, t_mem)",
       SIMULATOR_TESTS),
    _m("transcendental-free", "transcendentals cost nothing", "simulator/costs.py",
       "work = c.flops + c.transcendentals * hardware.flops_per_transcendental",
       "work = c.flops", SIMULATOR_TESTS),
    _m("kernel-floor-dropped", "matrix kernels without their minimum time", "simulator/costs.py",
       "        t = max(t, hardware.min_kernel_time_s)", "        t = t", SIMULATOR_TESTS),
]  # fmt: skip
