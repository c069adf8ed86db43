"""Preset schedules: the usual parallelism strategies as lists of `ManualPartition`.

Every preset is a function that returns a ``list[ManualPartition]`` (usually of one
tactic), so schedules compose by concatenation, in precedence order (earlier tactics win)::

    schedule = [*BP(), *MP(), *Z3()]           # data, Megatron tensor, ZeRO-3 parallelism
    schedule = [*BP(), *MP(), *SP()]           # ... with Megatron sequence parallelism
    schedule = [*MP(stacked=True), *EMB()]     # the scanned GPT (stacked layer dim)

The defaults fit the zoo (`partir.testing.models`): parameters under ``params/``,
optimizer state under ``opt_state/<i>/mu`` and ``opt_state/<i>/nu`` with the parameter's
path below it, data under ``batch/``. Every preset takes keyword overrides for other
naming (selectors and dims) and an ``axis=`` (``"batch"`` for BP, Z2 and Z3, ``"model"``
for MP, SP, EMB and EP).

**Optimizer state follows its parameter unless told otherwise**: when MP, EMB or EP shards
a parameter ``params/X``, the same tactic shards ``opt_state/*/mu/X`` and
``opt_state/*/nu/X`` the same way (``with_optimizer_state=False`` turns that off; a
function without an optimizer state needs it, since a selector matching nothing is an
error). ``params_root`` and ``optimizer_state`` say where parameters and state live.

References:
  - Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models
    Using Model Parallelism", §3 (column- and row-parallel linear layers).
  - Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models" (sequence parallelism, §4.2.2).
  - Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
    Parameter Models" (stages 2 and 3: optimizer state, gradients and parameters sharded).
  - Lepikhin et al. 2020, "GShard: Scaling Giant Models with Conditional Computation and
    Automatic Sharding" (expert parallelism, all-to-all token dispatch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from partir.errors import TacticError
from partir.tactics.manual import (
    REPLICATED,
    ManualPartition,
    _Replicated,
)
from partir.tactics.preset_tactics import (
    PresetPartition as PresetPartition,
)
from partir.tactics.preset_tactics import (
    ZeroPartition as ZeroPartition,
)
from partir.tactics.preset_tactics import _check_selectors, _preset

Selectors = Sequence[str] | Mapping[str, int]
"""Selectors (each given a preset's default dim) or a mapping selector -> explicit dim."""

OPTIMIZER_STATE: tuple[str, ...] = ("opt_state/*/mu", "opt_state/*/nu")
"""Where the zoo's AdamW moments live: ``opt_state/0/mu/<param path without params/>``."""

MP_COLUMN: tuple[str, ...] = (
    "params/**/attn/q",
    "params/**/attn/k",
    "params/**/attn/v",
    "params/**/mlp/w_in",
)
"""Megatron column-parallel weights of the zoo's GPT (sharded on their output dim)."""
MP_ROW: tuple[str, ...] = ("params/**/attn/o", "params/**/mlp/w_out")
"""Megatron row-parallel weights of the zoo's GPT (sharded on their input dim)."""
MP_COLUMN_BIAS: tuple[str, ...] = ("params/**/mlp/b_in",)
"""Biases of column-parallel layers (sharded on their only dim, like the layer output)."""

SP_INPUTS: Mapping[str, int] = {"batch/tokens": 1, "batch/targets": 1}
"""The zoo GPT's data on its sequence dim."""

EP_EXPERTS: tuple[str, ...] = ("params/experts/w_in", "params/experts/w_out")
"""The zoo MoE's stacked expert weights, ``[experts, ...]``."""


def _dims(selectors: Selectors, default: int, offset: int) -> dict[str, int]:
    """selector -> dim, from a sequence (the default dim) or a mapping; plus the offset."""
    if isinstance(selectors, str):
        selectors = (selectors,)
    items = (
        selectors.items() if isinstance(selectors, Mapping) else ((s, default) for s in selectors)
    )
    out: dict[str, int] = {}
    for selector, dim in items:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TacticError(
                f"preset selector {selector!r} maps to {dim!r}; expected a dimension (int)."
            )
        out[selector] = dim + offset if dim >= 0 else dim
    return out


def _with_state(
    inputs: Mapping[str, int | _Replicated],
    *,
    preset: str,
    with_optimizer_state: bool,
    params_root: str,
    optimizer_state: Sequence[str],
) -> dict[str, int | _Replicated]:
    """`inputs` plus, for each selector under `params_root`, the same path under each state root."""
    out: dict[str, int | _Replicated] = dict(inputs)
    if not with_optimizer_state:
        return out
    root = params_root.strip("/") + "/"
    for selector, dim in inputs.items():
        if not selector.startswith(root):
            raise TacticError(
                f"{preset}: selector {selector!r} is not under params_root={params_root!r}, so "
                "the optimizer state that follows it cannot be named. Pass params_root= (the "
                "argument holding the parameters), or with_optimizer_state=False."
            )
        rest = selector[len(root) :]
        for state in optimizer_state:
            out.setdefault(f"{state.strip('/')}/{rest}", dim)
    return out


def _offset(preset: str, stacked: bool, layer_dim_offset: int) -> int:
    if stacked and layer_dim_offset not in (0, 1):
        raise TacticError(
            f"{preset}(stacked=True, layer_dim_offset={layer_dim_offset}): give one of them; "
            "stacked=True means layer_dim_offset=1."
        )
    return 1 if stacked else layer_dim_offset


def BP(axis: str = "batch", inputs: Mapping[str, int] | None = None) -> list[ManualPartition]:
    """Batch (data) parallelism: the data is split along its batch dim on `axis`.

    Propagation then runs every per-example computation on the local slice and makes each
    parameter gradient a pending sum over `axis` (one all-reduce per gradient, or a
    reduce-scatter under ZeRO).

    Args:
      axis: the mesh axis that splits the batch.
      inputs: selector -> dim of the data to split; default ``{"batch": 0}`` (every leaf
        under the ``batch`` argument on its dim 0). This is how to name the data of a
        step with other argument names: ``BP(inputs={"x": 0, "y": 0})`` for
        ``step(params, opt_state, x, y)``. When the default matches nothing the
        `SelectorError` says so.

    Returns:
      ``[ManualPartition(inputs, axis=axis)]`` (a `PresetPartition`).
    """
    if inputs is not None and not isinstance(inputs, Mapping):
        raise TacticError(
            f"BP(inputs={inputs!r}): expected a mapping selector -> batch dim, e.g. {{'x': 0}}."
        )
    _check_selectors("BP", "inputs", inputs or {})
    chosen = dict(inputs if inputs is not None else {"batch": 0})
    defaults = {"inputs"} if inputs is None else set()
    return [_preset("BP", chosen, axis, dict.fromkeys(chosen, "inputs"), defaults)]


def MP(
    axis: str = "model",
    column: Selectors = MP_COLUMN,
    row: Selectors = MP_ROW,
    column_bias: Selectors = MP_COLUMN_BIAS,
    *,
    layer_dim_offset: int = 0,
    stacked: bool = False,
    with_optimizer_state: bool = True,
    params_root: str = "params",
    optimizer_state: Sequence[str] = OPTIMIZER_STATE,
) -> list[ManualPartition]:
    """Megatron tensor (model) parallelism (Shoeybi et al. 2019, Megatron-LM §3).

    Column-parallel weights ``[in, out]`` (attention q/k/v, the MLP's up projection) are
    split along their output dim, row-parallel weights ``[in, out]`` (attention output, the
    MLP's down projection) along their input dim, so attention heads and the MLP hidden
    units are local; each block's output is a pending sum over `axis`. On a transformer
    step that gives the paper's two all-reduces per layer forward and two backward (the
    ``f``/``g`` operators); the rest of the activations stay replicated on `axis`.

    Args:
      axis: the mesh axis the weights are split on.
      column: column-parallel weights: selectors (sharded on dim 1, the output dim of a
        ``[in, out]`` weight) or a mapping selector -> dim. Default: the zoo GPT's
        ``params/**/attn/{q,k,v}`` and ``params/**/mlp/w_in``.
      row: row-parallel weights: selectors (sharded on dim 0, the input dim) or a mapping
        selector -> dim. Default ``params/**/attn/o`` and ``params/**/mlp/w_out``.
      column_bias: biases of column-parallel layers: selectors (dim 0) or a mapping.
        Default ``params/**/mlp/b_in``; pass ``()`` if there are none.
      layer_dim_offset: added to every non-negative dim, for weights stacked under leading
        dims (``[layers, in, out]`` needs 1). Explicit negative dims are left as they are.
      stacked: shorthand for ``layer_dim_offset=1`` (the zoo's ``gpt_scan``, whose
        ``params/blocks/attn/q`` is ``[layers, d, d]``).
      with_optimizer_state: also shard each parameter's optimizer state the same way
        (``opt_state/*/mu/<path>``, ``opt_state/*/nu/<path>``); turn off for a function
        without one.
      params_root: the argument holding the parameters (selectors must start with it when
        `with_optimizer_state` is on).
      optimizer_state: the roots under which the optimizer state repeats the parameters'
        paths.

    Returns:
      One `ManualPartition` on `axis`.
    """
    offset = _offset("MP", stacked, layer_dim_offset)
    inputs: dict[str, int] = {}
    origins: dict[str, str] = {}
    defaults = {
        n for n, v, d in (("column", column, MP_COLUMN), ("row", row, MP_ROW),
                          ("column_bias", column_bias, MP_COLUMN_BIAS)) if v is d
    }  # fmt: skip
    for arg, part, default in (("column", column, 1), ("row", row, 0), ("column_bias", column_bias, 0)):  # fmt: skip
        _check_selectors("MP", arg, part)
        dims = _dims(part, default, offset)
        inputs.update(dims)
        origins.update(dict.fromkeys(dims, arg))
    if not inputs:
        raise TacticError("MP(): column, row and column_bias are all empty; nothing to shard.")
    inputs_all = _with_state(
        inputs,
        preset="MP",
        with_optimizer_state=with_optimizer_state,
        params_root=params_root,
        optimizer_state=optimizer_state,
    )
    for selector in inputs_all:
        origins.setdefault(selector, "optimizer_state")
    return [_preset("MP", inputs_all, axis, origins, defaults)]


def SP(axis: str = "model", inputs: Mapping[str, int] | None = None) -> list[ManualPartition]:
    """Megatron sequence parallelism (Korthikanti et al. 2022, §4.2.2), to follow `MP`.

    Splits the data along its sequence dim on the tensor-parallel `axis`. Placed after
    `MP` on the same axis (``[*MP(), *SP()]``), propagation shards the residual stream,
    LayerNorms, embedding and head along the sequence, while MP's weights keep attention
    and the MLP tensor-parallel. Where the two meet, the earlier (MP) decision is the op's
    sharding: the sequence-sharded input of a column-parallel matmul is all-gathered
    (Megatron's ``g``), and the pending sum out of a row-parallel matmul, added to the
    sequence-sharded residual, is reduce-scattered (``g-bar``) instead of all-reduced.

    Placed before MP the sequence sharding would reach the weights' uses first, and the
    weights would be gathered (ZeRO-like) rather than kept split.

    In the backward pass the gradient entering each LayerNorm is a pending sum feeding both
    sequence-sharded ops and the bias gradient (a sum over batch and sequence);
    optimize-collectives reduce-scatters it once and all-reduces only the small bias sum,
    so SP+MP gives Megatron-SP's 4 all-gathers and 4 reduce-scatters per layer
    (`tests/passes/test_published_tables.py`).

    Args:
      axis: the tensor-parallel mesh axis (the one `MP` used).
      inputs: selector -> sequence dim of the data; default ``{"batch/tokens": 1,
        "batch/targets": 1}`` (the zoo GPT's ``[batch, seq]`` tokens).

    Returns:
      ``[ManualPartition(inputs, axis=axis)]`` (a `PresetPartition`).
    """
    if inputs is not None and not isinstance(inputs, Mapping):
        raise TacticError(
            f"SP(inputs={inputs!r}): expected a mapping selector -> sequence dim, e.g. "
            "{'batch/tokens': 1}."
        )
    _check_selectors("SP", "inputs", inputs or {})
    chosen = dict(inputs if inputs is not None else SP_INPUTS)
    defaults = {"inputs"} if inputs is None else set()
    return [_preset("SP", chosen, axis, dict.fromkeys(chosen, "inputs"), defaults)]


def _zero_dims(
    dims: Mapping[str, int | _Replicated | None] | None, preset: str
) -> tuple[tuple[str, int | _Replicated | None], ...]:
    if dims is None:
        return ()
    if not isinstance(dims, Mapping):
        raise TacticError(
            f"{preset}(dims={dims!r}): expected a mapping sub-path -> dim (or None to leave "
            "that sub-tree alone), e.g. {'blocks': 1}."
        )
    for sub, d in dims.items():
        if not isinstance(sub, str) or not (
            d is None
            or isinstance(d, _Replicated)
            or (isinstance(d, int) and not isinstance(d, bool))
        ):
            raise TacticError(
                f"{preset}(dims=...): {sub!r} -> {d!r}; expected a sub-path (str) mapped to a "
                "dim (int), None or partir.REPLICATED."
            )
    return tuple(dims.items())


def Z2(
    axis: str = "batch",
    dim: int | None = None,
    *,
    dims: Mapping[str, int | _Replicated | None] | None = None,
    optimizer_state: Sequence[str] = OPTIMIZER_STATE,
    replicated: Sequence[str] = ("params", "out/0"),
    strict: bool = False,
    min_bytes: int = 0,
) -> list[ManualPartition]:
    """ZeRO stage 2 (Rajbhandari et al. 2020): optimizer state sharded on the batch axis.

    After `BP`, each gradient is a pending sum over `axis`; consumed by the sharded
    optimizer update it becomes a reduce-scatter, and the updated parameter is gathered
    back. The parameters are pinned replicated at input and output (`replicated`),
    since AdamW's weight decay would otherwise carry the state's sharding into them (that
    would be ZeRO-3, `Z3`).

    Every state leaf goes on `dim` if given and divisible, else on its largest dim
    divisible by the axis; a leaf with none (a bias of 10 on 4 devices) is skipped and
    reported in the tactic's record (``plan.summary()``), or with ``strict=True`` raises.

    Args:
      axis: the mesh axis to shard over (the data-parallel one).
      dim: the preferred dim of every optimizer-state leaf (None: the largest divisible).
      dims: sub-path (relative to each optimizer-state root) -> dim, None (leave that
        sub-tree alone) or `partir.REPLICATED`; these *override* the default for the
        leaves they name (later entries win), the rest keep it. E.g. ``{"blocks": 1}`` for
        the zoo's ``gpt_scan`` (its stacked layer dim is too small to split).
      optimizer_state: the optimizer-state roots (default ``opt_state/*/mu`` and
        ``opt_state/*/nu``).
      replicated: selectors pinned replicated on `axis` (default the parameters and the
        step's first output, the new parameters); ``()`` for none.
      strict: raise `DimensionError` for a leaf of at least `min_bytes` with no divisible
        dim instead of skipping it.
      min_bytes: with `strict`, leaves smaller than this are still skipped.

    Returns:
      One `ZeroPartition` on `axis`.
    """
    return [
        ZeroPartition(
            dict.fromkeys(replicated, REPLICATED), axis, "Z2", tuple(optimizer_state), dim,
            _zero_dims(dims, "Z2"), strict, min_bytes, OPTIMIZER_STATE, ("params", "out/0"),
        )
    ]  # fmt: skip


def Z3(
    axis: str = "batch",
    dim: int | None = None,
    *,
    dims: Mapping[str, int | _Replicated | None] | None = None,
    params: str = "params",
    optimizer_state: Sequence[str] = OPTIMIZER_STATE,
    strict: bool = False,
    min_bytes: int = 0,
) -> list[ManualPartition]:
    """ZeRO stage 3 (Rajbhandari et al. 2020): parameters and optimizer state sharded.

    After `BP` on the same `axis`, every use of a parameter is a conflict, lowered to an
    all-gather of the parameter, and every gradient, a pending sum consumed sharded by the
    update, becomes a reduce-scatter: one all-gather per sharded parameter leaf, one
    reduce-scatter per gradient leaf.

    Every leaf goes on `dim` if given and divisible, else on its largest dim divisible by
    the axis; a leaf with none is skipped and reported in the tactic's record
    (``plan.summary()``, `TacticRecord.skipped`), or with ``strict=True`` raises.

    Args:
      axis: the mesh axis to shard over (the data-parallel one).
      dim: the preferred dim of every parameter and state leaf (None: the largest
        divisible one).
      dims: sub-path (relative to `params` and to each optimizer-state root) -> dim, None
        (leave that sub-tree alone) or `partir.REPLICATED`; these *override* the default
        for the leaves they name (later entries win), the rest keep it; e.g.
        ``{"blocks": 1}`` for ``gpt_scan``.
      params: the parameters' root selector.
      optimizer_state: the optimizer-state roots; ``()`` for a function without one.
      strict: raise `DimensionError` for a leaf of at least `min_bytes` with no divisible
        dim instead of skipping it.
      min_bytes: with `strict`, leaves smaller than this are still skipped.

    Returns:
      One `ZeroPartition` on `axis`.
    """
    return [
        ZeroPartition(
            {}, axis, "Z3", (params, *optimizer_state), dim, _zero_dims(dims, "Z3"), strict,
            min_bytes, ("params", *OPTIMIZER_STATE),
        )
    ]  # fmt: skip


def EMB(
    axis: str = "model",
    table: str | Sequence[str] = "params/embed/tokens",
    dim: int = 0,
    *,
    with_optimizer_state: bool = True,
    params_root: str = "params",
    optimizer_state: Sequence[str] = OPTIMIZER_STATE,
) -> list[ManualPartition]:
    """Embedding table split along its vocabulary dim (Shoeybi et al. 2019, §3).

    Each device stores ``vocab / |axis|`` rows of the table and of its optimizer state, and
    updates only those. The lookup itself does not run vocabulary-parallel today: in
    partir's `gather` rule the indexed dim is a replicate factor, so lowering all-gathers
    the table for the lookup, and the gradient (a scatter-add computed whole) is sliced
    for the sharded update. Megatron's masked local lookup followed by an all-reduce of
    the embeddings is not what propagation produces.

    Args:
      axis: the mesh axis the table is split on.
      table: the table's selector (or several); default ``params/embed/tokens``.
      dim: the vocabulary dim of the table.
      with_optimizer_state: also shard the table's optimizer state the same way.
      params_root: the argument holding the parameters.
      optimizer_state: the optimizer-state roots.

    Returns:
      One `ManualPartition` on `axis`.
    """
    _check_selectors("EMB", "table", table)
    tables = (table,) if isinstance(table, str) else tuple(table)
    inputs = _with_state(
        {t: dim for t in tables},
        preset="EMB",
        with_optimizer_state=with_optimizer_state,
        params_root=params_root,
        optimizer_state=optimizer_state,
    )
    origins = {s: ("table" if s in tables else "optimizer_state") for s in inputs}
    defaults = {"table"} if table == "params/embed/tokens" else set()
    return [_preset("EMB", inputs, axis, origins, defaults)]


def EP(
    axis: str = "model",
    experts: str | Sequence[str] = EP_EXPERTS,
    dim: int = 0,
    *,
    with_optimizer_state: bool = True,
    params_root: str = "params",
    optimizer_state: Sequence[str] = OPTIMIZER_STATE,
) -> list[ManualPartition]:
    """Expert parallelism (Lepikhin et al. 2020, GShard): experts split on their expert dim.

    Each device holds ``experts / |axis|`` experts (and their optimizer state). What that
    makes of the token traffic depends on the axis:

    - on the data axis after `BP` (``[*BP(), *EP(axis="batch")]``): GShard's dispatch.
      BP plans the expert region batch-tiled, and the expert einsums meet weights tiled
      along the experts; lowering runs them expert-tiled because that re-tiles the tokens
      (one all-to-all) instead of gathering every expert's weights
      (`partir.passes.resolve`). So the step has four all-to-alls of the ``[E, B, C, d]``
      token slab (dispatch and combine, forward and backward), and the expert weights and
      their gradients never move.
    - on an axis the data is not split on (``[*BP(), *EP(axis="model")]``, the default),
      every device of `axis` already has its batch shard's tokens; it runs its local
      experts on them and the combine einsum is a pending sum, all-reduced over `axis`.
      Propagation also carries the expert dim back into the router logits and
      probabilities, so routing adds small all-reduces and an all-gather before `top_k`.

    Args:
      axis: the mesh axis the experts are split on.
      experts: the stacked expert weights' selectors; default the zoo MoE's
        ``params/experts/w_in`` and ``params/experts/w_out``.
      dim: the expert dim of those weights.
      with_optimizer_state: also shard the experts' optimizer state the same way.
      params_root: the argument holding the parameters.
      optimizer_state: the optimizer-state roots.

    Returns:
      One `ManualPartition` on `axis`.
    """
    _check_selectors("EP", "experts", experts)
    selectors = (experts,) if isinstance(experts, str) else tuple(experts)
    inputs = _with_state(
        {s: dim for s in selectors},
        preset="EP",
        with_optimizer_state=with_optimizer_state,
        params_root=params_root,
        optimizer_state=optimizer_state,
    )
    origins = {s: ("experts" if s in selectors else "optimizer_state") for s in inputs}
    defaults = {"experts"} if experts is EP_EXPERTS else set()
    return [_preset("EP", inputs, axis, origins, defaults)]


__all__ = ["BP", "EMB", "EP", "MP", "SP", "Z2", "Z3", "PresetPartition", "ZeroPartition"]
