"""Factor sharding rules, one per JAX primitive family, looked up by primitive name.

Importing this package registers every rule (`constraints`, `elementwise`, `fft`,
`indexing`, `linalg`, `naming`, `random`, `reduction`, `shape`); the data structure, notation and
registry live in `core`.
"""

from partir.rules import constraints as constraints
from partir.rules import elementwise as elementwise
from partir.rules import fft as fft
from partir.rules import indexing as indexing
from partir.rules import linalg as linalg
from partir.rules import naming as naming
from partir.rules import random as random
from partir.rules import reduction as reduction
from partir.rules import shape as shape
from partir.rules.core import NO_RULE_PRIMITIVES as NO_RULE_PRIMITIVES
from partir.rules.core import RULES as RULES
from partir.rules.core import FactorKind as FactorKind
from partir.rules.core import OpRule as OpRule
from partir.rules.core import RuleBuilder as RuleBuilder
from partir.rules.core import get_rule as get_rule
from partir.rules.core import register_rule as register_rule

__all__ = [
    "NO_RULE_PRIMITIVES",
    "RULES",
    "FactorKind",
    "OpRule",
    "RuleBuilder",
    "get_rule",
    "register_rule",
]
