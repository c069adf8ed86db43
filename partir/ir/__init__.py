"""partir's IR: the `partir` (global view) and `spmd` (device-local) xDSL dialects.

Everyone imports from here, not from the submodules.
"""

from partir.ir.attrs import REDUCTIONS as REDUCTIONS
from partir.ir.attrs import MeshAttr as MeshAttr
from partir.ir.attrs import Sharding as Sharding
from partir.ir.attrs import ShardingAttr as ShardingAttr
from partir.ir.context import make_context as make_context
from partir.ir.context import parse_module as parse_module
from partir.ir.dtypes import ITEMSIZE as ITEMSIZE
from partir.ir.dtypes import UnsupportedDtypeError as UnsupportedDtypeError
from partir.ir.dtypes import dtype_of as dtype_of
from partir.ir.dtypes import nbytes_of as nbytes_of
from partir.ir.dtypes import shape_of as shape_of
from partir.ir.dtypes import tensor_type as tensor_type
from partir.ir.locations import library_location_of as library_location_of
from partir.ir.locations import location_of as location_of
from partir.ir.ops import COMPACT as COMPACT
from partir.ir.ops import REGION_OPS as REGION_OPS
from partir.ir.ops import CondOp as CondOp
from partir.ir.ops import ConstantOp as ConstantOp
from partir.ir.ops import Partir as Partir
from partir.ir.ops import PrimOp as PrimOp
from partir.ir.ops import RegionPrimOp as RegionPrimOp
from partir.ir.ops import RematOp as RematOp
from partir.ir.ops import ScanOp as ScanOp
from partir.ir.ops import WhileOp as WhileOp
from partir.ir.ops import YieldOp as YieldOp
from partir.ir.ops import module_mesh as module_mesh
from partir.ir.params import OPAQUE_VALUES as OPAQUE_VALUES
from partir.ir.params import Dtype as Dtype
from partir.ir.params import EnumValue as EnumValue
from partir.ir.params import Opaque as Opaque
from partir.ir.params import ParamsAttr as ParamsAttr
from partir.ir.params import Record as Record
from partir.ir.params import TensorSpec as TensorSpec
from partir.ir.params import keep_opaque as keep_opaque
from partir.ir.spmd import COLLECTIVES as COLLECTIVES
from partir.ir.spmd import AllGatherOp as AllGatherOp
from partir.ir.spmd import AllReduceOp as AllReduceOp
from partir.ir.spmd import AllSliceOp as AllSliceOp
from partir.ir.spmd import AllToAllOp as AllToAllOp
from partir.ir.spmd import CollectiveOp as CollectiveOp
from partir.ir.spmd import CollectivePermuteOp as CollectivePermuteOp
from partir.ir.spmd import FuseSliceOfCollective as FuseSliceOfCollective
from partir.ir.spmd import ReduceScatterOp as ReduceScatterOp
from partir.ir.spmd import SplitReduce as SplitReduce
from partir.ir.spmd import Spmd as Spmd
from partir.ir.spmd import copy_why as copy_why
from partir.ir.spmd import single_use as single_use
from partir.ir.verify import check_sharding as check_sharding
from partir.ir.verify import verify_if_enabled as verify_if_enabled
from partir.ir.verify import verify_module as verify_module
