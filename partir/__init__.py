"""partir: compiler-style SPMD partitioning for JAX.

Trace a JAX function into partir's IR, rewrite it with a schedule of tactics, and run it
back on a device mesh as `jax.sharding` annotations.
"""

from partir import errors as errors
from partir.api.compare import compare as compare
from partir.api.partition import Partitioned as Partitioned
from partir.api.partition import partition as partition
from partir.api.plan import Plan as Plan
from partir.backend import jax_compat as _jax_compat
from partir.plan.logical import logical_axes as logical_axes
from partir.plan.program import Program as Program
from partir.plan.program import parse as parse
from partir.plan.program import trace as trace
from partir.tactics import DSP as DSP
from partir.tactics import REPLICATED as REPLICATED
from partir.tactics import AutomaticPartition as AutomaticPartition
from partir.tactics import ManualPartition as ManualPartition
from partir.tactics import PipelinePartition as PipelinePartition
from partir.tactics import Ulysses as Ulysses
from partir.tactics.logical import LogicalPartition as LogicalPartition

# A JAX outside the tested range warns once, naming the range (partir/backend/jax_compat.py).
_jax_compat.check_version()
