"""The machinery of `partir.AutomaticPartition`: decision space, scoring, ILP and search.

See README.md in this folder. `partir.tactics.automatic` holds the tactic itself.
"""

from partir.tactics.auto.classes import UnionFind as UnionFind
from partir.tactics.auto.classes import dimension_classes as dimension_classes
from partir.tactics.auto.classes import op_rules as op_rules
from partir.tactics.auto.classes import param_path as param_path
from partir.tactics.auto.driver import SearchReport as SearchReport
from partir.tactics.auto.driver import decide as decide
from partir.tactics.auto.evaluate import Evaluator as Evaluator
from partir.tactics.auto.evaluate import Score as Score
from partir.tactics.auto.evaluate import compact_selectors as compact_selectors
from partir.tactics.auto.ilp import IlpResult as IlpResult
from partir.tactics.auto.ilp import Model as Model
from partir.tactics.auto.ilp import fit as fit
from partir.tactics.auto.ilp import solve as solve
from partir.tactics.auto.progress import Progress as Progress
from partir.tactics.auto.search import Budget as Budget
from partir.tactics.auto.search import beam_search as beam_search
from partir.tactics.auto.space import Group as Group
from partir.tactics.auto.space import Space as Space
from partir.tactics.auto.space import build_space as build_space
from partir.tactics.auto.space import zero_entries as zero_entries
