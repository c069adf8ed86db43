"""Tactics: each decides shardings on one mesh axis, then propagation runs to a fixed point.

A schedule is a list of tactics applied in order; earlier tactics win.
"""

from partir.tactics.automatic import AutomaticPartition as AutomaticPartition
from partir.tactics.automatic import AutomaticRecord as AutomaticRecord
from partir.tactics.automatic import FoundSchedule as FoundSchedule
from partir.tactics.automatic import found_schedule as found_schedule
from partir.tactics.manual import REPLICATED as REPLICATED
from partir.tactics.manual import ManualPartition as ManualPartition
from partir.tactics.manual import TacticContext as TacticContext
from partir.tactics.manual import TacticRecord as TacticRecord
from partir.tactics.pipeline import PipelinePartition as PipelinePartition
from partir.tactics.pipeline import PipelineSpec as PipelineSpec
from partir.tactics.pipeline import pipeline_spec as pipeline_spec
from partir.tactics.selectors import select as select

TACTIC_TYPES: tuple[type, ...] = (ManualPartition, AutomaticPartition, PipelinePartition)
"""Everything a schedule may contain."""
from partir.tactics.presets import BP as BP  # noqa: E402
from partir.tactics.presets import EMB as EMB  # noqa: E402
from partir.tactics.presets import EP as EP  # noqa: E402
from partir.tactics.presets import MP as MP  # noqa: E402
from partir.tactics.presets import SP as SP  # noqa: E402
from partir.tactics.presets import Z2 as Z2  # noqa: E402
from partir.tactics.presets import Z3 as Z3  # noqa: E402
from partir.tactics.sequence import DSP as DSP  # noqa: E402
from partir.tactics.sequence import DSPPartition as DSPPartition  # noqa: E402
from partir.tactics.sequence import Ulysses as Ulysses  # noqa: E402
from partir.tactics.sequence import UlyssesPartition as UlyssesPartition  # noqa: E402
