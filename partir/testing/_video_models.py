"""Zoo models for sequence and expert parallelism: ``video_dit``, ``video_dit_scan`` (a
multi-dimensional transformer over ``[batch, time, space, d]``) and ``moe_top2`` (a
transformer whose MLP is a top-2 mixture of experts). See `partir.testing.models`.

The video models follow the spatial-temporal blocks of OpenSora and Latte (Ma et al. 2024,
"Latte: Latent Diffusion Transformer for Video Generation"): each block attends over the
spatial positions of every frame, then over the frames at every spatial position, then
applies an MLP. The residual stream entering each attention is named with
`jax.ad_checkpoint.checkpoint_name` (``"spatial_in"``, ``"temporal_in"``), so a tactic can
select it (`partir.tactics.sequence.DSP`); so are each attention's q, k, v and output in
their per-head layout (``"spatial_q"`` ... ``"temporal_out"``, for
`partir.tactics.sequence.Ulysses`).

Like `llama`, these builders are exported from `partir.testing.models` but not registered
in `MODELS`: the zoo-wide tests run every registered model under every reference schedule
(`partir.testing.schedules`), which has no layouts for them. Call them directly
(``video_dit()``, ``moe_top2(abstract=True, layers=4)``); `register` adds them to `MODELS`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from partir.testing._zoo import (
    MODELS,
    Model,
    _build,
    _const,
    _dtype,
    _gelu,
    _layer_norm,
    _ln_init,
    _make_config,
    _mse,
    _normal,
    _one_hot,
    _softmax,
    _stack,
    register_model,
)


def register() -> None:
    """Add ``video_dit``, ``video_dit_scan`` and ``moe_top2`` to `MODELS` (idempotent)."""
    for name, builder in (("video_dit", video_dit), ("video_dit_scan", video_dit_scan),
                          ("moe_top2", moe_top2)):  # fmt: skip
        if name not in MODELS:
            register_model(name)(builder)


# ----------------------------------------------------------------------------------------------
# video_dit and video_dit_scan


@dataclasses.dataclass(frozen=True)
class VideoDiTConfig:
    """Config of the ``video_dit`` and ``video_dit_scan`` models.

    Attributes:
      layers: number of spatial-temporal blocks (L).
      batch: videos per batch (B).
      time: frames per video (T), the sequence the temporal attention attends over.
      space: spatial positions (patches) per frame (S), attended over by the spatial one.
      d_model: model width (d); divisible by ``heads``.
      heads: attention heads (H) of both attentions.
      d_ff: hidden width of the MLP (f).
      dtype: dtype name of params and activations; the loss is computed in float32.
    """

    layers: int = 2
    batch: int = 8
    time: int = 8
    space: int = 8
    d_model: int = 32
    heads: int = 4
    d_ff: int = 64
    dtype: str = "float32"


def _attn_init(d: int, dt: Any) -> dict:
    return {"attn": {name: _normal((d, d), 1.0 / math.sqrt(d), dt) for name in "qkvo"}}


def _video_spec(c: VideoDiTConfig) -> tuple[dict, dict]:
    d, f, dt = c.d_model, c.d_ff, _dtype(c)

    def block() -> dict:
        return {
            "ln_s": _ln_init(d, dt),
            "spatial": _attn_init(d, dt),
            "ln_t": _ln_init(d, dt),
            "temporal": _attn_init(d, dt),
            "ln_m": _ln_init(d, dt),
            "mlp": {
                "w_in": _normal((d, f), 1.0 / math.sqrt(d), dt),
                "b_in": _const((f,), 0.0, dt),
                "w_out": _normal((f, d), 1.0 / math.sqrt(f), dt),
                "b_out": _const((d,), 0.0, dt),
            },
        }

    params = {
        "in_proj": _normal((d, d), 1.0 / math.sqrt(d), dt),
        "pos_time": _normal((c.time, d), 0.02, dt),
        "pos_space": _normal((c.space, d), 0.02, dt),
        "blocks": [block() for _ in range(c.layers)],
        "final_ln": _ln_init(d, dt),
        "out_proj": _normal((d, d), 1.0 / math.sqrt(d), dt),
    }
    shape = (c.batch, c.time, c.space, d)
    return params, {"x": _normal(shape, 1.0, dt), "y": _normal(shape, 1.0, dt)}


def _video_post(args: tuple[dict, dict], stacked: bool) -> tuple[dict, dict]:
    params, batch = args
    if stacked:
        params = {**params, "blocks": jax.tree.map(_stack, *params["blocks"])}
    return params, batch


def _attention(h: jax.Array, p: dict, heads: int, over: str, stage: str) -> jax.Array:
    """Multi-head self-attention of ``h: [B, T, S, d]`` over its time or space dim.

    q, k, v and the output are named ``<stage>_q``, ``<stage>_k``, ``<stage>_v`` and
    ``<stage>_out`` in their per-head layout ``[B, T, S, H, d / H]`` (with `named`), so
    a tactic can re-tile them to heads (`partir.tactics.sequence.Ulysses`).
    """
    b, t, s, d = h.shape
    dh = d // heads
    q, k, v = (
        named((h @ p[name]).reshape(b, t, s, heads, dh), f"{stage}_{name}") for name in "qkv"
    )
    if over == "space":  # per frame: queries and keys are spatial positions
        scores = jnp.einsum("btqhe,btkhe->bthqk", q, k) / math.sqrt(dh)
        out = jnp.einsum("bthqk,btkhe->btqhe", _softmax(scores), v)
    else:  # per spatial position: queries and keys are frames
        scores = jnp.einsum("bqshe,bkshe->bshqk", q, k) / math.sqrt(dh)
        out = jnp.einsum("bshqk,bkshe->bqshe", _softmax(scores), v)
    return named(out, f"{stage}_out").reshape(b, t, s, d) @ p["o"]


GRAD_SUFFIX = "_grad"
"""A named activation's cotangent is named ``<name>_grad`` (see `named`)."""


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def named(x: jax.Array, name: str) -> jax.Array:
    """`checkpoint_name` of `x`, whose cotangent is named ``name + "_grad"`` too.

    `checkpoint_name` leaves no mark in the backward pass (its transpose is the identity),
    so a tactic that lays out the named activation could not lay out its gradient; this
    names both, the backward one where the cotangent leaves the named value.
    """
    return checkpoint_name(x, name)


def _named_fwd(x: jax.Array, name: str) -> tuple[jax.Array, None]:
    return checkpoint_name(x, name), None


def _named_bwd(name: str, _: None, g: jax.Array) -> tuple[jax.Array]:
    return (checkpoint_name(g, name + GRAD_SUFFIX),)


named.defvjp(_named_fwd, _named_bwd)


def _video_block(x: jax.Array, blk: dict, heads: int) -> jax.Array:
    # the residual stream entering each attention is named, so DSP can lay it out
    x = named(x, "spatial_in")
    x = x + _attention(
        _layer_norm(x, blk["ln_s"]), blk["spatial"]["attn"], heads, "space", "spatial"
    )
    x = named(x, "temporal_in")
    x = x + _attention(
        _layer_norm(x, blk["ln_t"]), blk["temporal"]["attn"], heads, "time", "temporal"
    )
    h = _gelu(_layer_norm(x, blk["ln_m"]) @ blk["mlp"]["w_in"] + blk["mlp"]["b_in"])
    return x + h @ blk["mlp"]["w_out"] + blk["mlp"]["b_out"]


def _video_loss(params: dict, batch: dict, c: VideoDiTConfig, *, stacked: bool) -> jax.Array:
    x = batch["x"] @ params["in_proj"]
    x = x + params["pos_time"][None, :, None, :] + params["pos_space"][None, None, :, :]
    block = functools.partial(_video_block, heads=c.heads)
    if stacked:
        x, _ = jax.lax.scan(lambda h, blk: (block(h, blk), None), x, params["blocks"])
    else:
        for blk in params["blocks"]:
            x = block(x, blk)
    out = _layer_norm(x, params["final_ln"]) @ params["out_proj"]
    return _mse(out, batch["y"])


def _video_builder(name: str, stacked: bool, abstract: bool, seed: int, overrides: dict) -> Model:
    c = _make_config(VideoDiTConfig, overrides)
    if c.d_model % c.heads:
        raise ValueError(f"VideoDiTConfig.d_model={c.d_model} is not divisible by heads={c.heads}")
    return _build(
        name,
        c,
        abstract=abstract,
        seed=seed,
        spec=_video_spec(c),
        post=functools.partial(_video_post, stacked=stacked),
        loss_fn=functools.partial(_video_loss, stacked=stacked),
    )


def video_dit(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """A video diffusion-transformer step (OpenSora/Latte-style), layers unrolled; MSE loss.

    ``x = batch.x @ in_proj + pos_time + pos_space`` on ``[B, T, S, d]``; each block is
    pre-LayerNorm spatial attention (over S, per frame), temporal attention (over T, per
    position) and a GELU MLP, each residual; then a final LayerNorm and ``out_proj``. The
    stream entering the spatial attention is named ``"spatial_in"`` and the one entering the
    temporal attention ``"temporal_in"`` (`jax.ad_checkpoint.checkpoint_name`); each
    attention's q, k, v and output, ``[B, T, S, H, d / H]``, are named ``"spatial_q"``,
    ``"spatial_k"``, ``"spatial_v"``, ``"spatial_out"`` and likewise ``"temporal_*"``.
    params::

        {"in_proj": [d, d], "pos_time": [T, d], "pos_space": [S, d],
         "blocks": [{"ln_s", "ln_t", "ln_m": {"scale": [d], "bias": [d]},
                     "spatial": {"attn": {"q", "k", "v", "o": [d, d]}},
                     "temporal": {"attn": {"q", "k", "v", "o": [d, d]}},
                     "mlp": {"w_in": [d, f], "b_in": [f], "w_out": [f, d], "b_out": [d]}},
                    ...],
         "final_ln": {"scale": [d], "bias": [d]}, "out_proj": [d, d]}

    The attention and MLP weights sit under ``.../attn/{q,k,v,o}`` and ``.../mlp/...``, so
    the `MP` preset's default selectors fit. batch: ``{"x": [B, T, S, d], "y": [B, T, S, d]}``.

    Args: ``abstract``, ``seed`` and `VideoDiTConfig` overrides, as in `get`.
    """
    return _video_builder("video_dit", False, abstract, seed, overrides)


def video_dit_scan(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """The ``video_dit`` model with stacked blocks, run with `jax.lax.scan`.

    ``params["blocks"]`` is one dict whose leaves have a leading layer dim
    (``blocks/spatial/attn/q: [L, d, d]``); for the same seed and config the loss equals
    ``video_dit``'s.

    Args: ``abstract``, ``seed`` and `VideoDiTConfig` overrides, as in `get`.
    """
    return _video_builder("video_dit_scan", True, abstract, seed, overrides)


# ----------------------------------------------------------------------------------------------
# moe_top2


@dataclasses.dataclass(frozen=True)
class MoETop2Config:
    """Config of the ``moe_top2`` model.

    Attributes:
      layers: transformer blocks (L), each attention then a mixture-of-experts MLP.
      batch: sequences per batch (B); each sequence is one routing group.
      seq: tokens per sequence (S).
      d_model: model width (d); divisible by ``heads``.
      heads: attention heads (H).
      experts: experts per layer (E).
      d_ff: hidden width of each expert's MLP (f).
      capacity_factor: each expert takes at most
        ``ceil(capacity_factor * 2 * seq / experts)`` tokens per group; the rest are dropped
        (they pass through the residual only).
      aux_loss_coef: weight of the load-balancing loss.
      dtype: dtype name of params and activations; routing runs in float32.
    """

    layers: int = 2
    batch: int = 8
    seq: int = 16
    d_model: int = 32
    heads: int = 4
    experts: int = 8
    d_ff: int = 64
    capacity_factor: float = 1.0
    aux_loss_coef: float = 0.01
    dtype: str = "float32"

    @property
    def capacity(self) -> int:
        """Expert capacity per group (C)."""
        return max(1, math.ceil(self.capacity_factor * 2 * self.seq / self.experts))


def _moe2_spec(c: MoETop2Config) -> tuple[dict, dict]:
    d, e, f, dt = c.d_model, c.experts, c.d_ff, _dtype(c)

    def block() -> dict:
        return {
            "ln1": _ln_init(d, dt),
            "attn": {name: _normal((d, d), 1.0 / math.sqrt(d), dt) for name in "qkvo"},
            "ln2": _ln_init(d, dt),
            "router": _normal((d, e), 0.02, dt),
            "experts": {
                "w_in": _normal((e, d, f), 1.0 / math.sqrt(d), dt),
                "w_out": _normal((e, f, d), 1.0 / math.sqrt(f), dt),
            },
        }

    params = {"in_proj": _normal((d, d), 1.0 / math.sqrt(d), dt),
              "blocks": [block() for _ in range(c.layers)]}  # fmt: skip
    shape = (c.batch, c.seq, d)
    return params, {"x": _normal(shape, 1.0, dt), "y": _normal(shape, 1.0, dt)}


def _top2_moe(h: jax.Array, blk: dict, c: MoETop2Config) -> tuple[jax.Array, jax.Array]:
    """GShard top-2 routing with capacity: (expert output [B, S, d], balance loss)."""
    b, s, _ = h.shape
    e, k, cap, dt = c.experts, 2, c.capacity, h.dtype
    probs = _softmax((h @ blk["router"]).astype(jnp.float32))  # [B, S, E]
    gates, choice = jax.lax.top_k(probs, k)  # [B, S, 2]
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    assigned = _one_hot(choice, e, jnp.float32)  # [B, S, 2, E]
    # first choices are served before second choices, each in sequence order
    order = assigned.transpose(0, 2, 1, 3).reshape(b, k * s, e)
    position = jnp.cumsum(order, axis=1).reshape(b, k, s, e).transpose(0, 2, 1, 3) - 1.0
    kept = assigned * (position < cap)
    slot = _one_hot(jnp.sum(position * kept, axis=-1).astype(jnp.int32), cap, jnp.float32)
    dispatch = jnp.einsum("bske,bskc->bsec", kept, slot)
    combine = jnp.einsum("bsk,bske,bskc->bsec", gates, kept, slot)
    expert_in = jnp.einsum("bsec,bsd->ebcd", dispatch.astype(dt), h)  # [E, B, C, d]
    hidden = _gelu(jnp.einsum("ebcd,edf->ebcf", expert_in, blk["experts"]["w_in"]))
    expert_out = jnp.einsum("ebcf,efd->ebcd", hidden, blk["experts"]["w_out"])
    out = jnp.einsum("bsec,ebcd->bsd", combine.astype(dt), expert_out)
    balance = jnp.mean(jnp.sum(jnp.mean(assigned[:, :, 0], 1) * jnp.mean(probs, 1), -1)) * e
    return out, balance


def _moe2_loss(params: dict, batch: dict, c: MoETop2Config) -> jax.Array:
    x = batch["x"] @ params["in_proj"]
    b, s, d = x.shape
    dh = d // c.heads
    balance = jnp.zeros((), jnp.float32)
    causal = jnp.tril(jnp.ones((s, s), dtype=bool))
    for blk in params["blocks"]:
        h = _layer_norm(x, blk["ln1"])
        q, k, v = ((h @ blk["attn"][n]).reshape(b, s, c.heads, dh) for n in "qkv")
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(dh)
        scores = jnp.where(causal, scores, jnp.asarray(-1e9, scores.dtype))
        attn = jnp.einsum("bhqk,bkhe->bqhe", _softmax(scores), v).reshape(b, s, d)
        x = x + attn @ blk["attn"]["o"]
        out, aux = _top2_moe(_layer_norm(x, blk["ln2"]), blk, c)
        x = x + out
        balance = balance + aux
    return _mse(x, batch["y"]) + c.aux_loss_coef * balance


def moe_top2(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """A transformer whose MLPs are top-2 mixtures of experts with capacity; MSE loss.

    Each block: pre-LayerNorm causal attention, then a GShard top-2 MoE (softmax router,
    `jax.lax.top_k`, capacity ``ceil(capacity_factor * 2 * S / E)`` per sequence, dispatch
    and combine tensors ``[B, S, E, C]``, experts applied by einsum on ``[E, B, C, d]``).
    params::

        {"in_proj": [d, d],
         "blocks": [{"ln1", "ln2": {"scale": [d], "bias": [d]},
                     "attn": {"q", "k", "v", "o": [d, d]}, "router": [d, E],
                     "experts": {"w_in": [E, d, f], "w_out": [E, f, d]}}, ...]}

    batch: ``{"x": [B, S, d], "y": [B, S, d]}``. The expert weights are
    ``params/blocks/<i>/experts/w_in`` (``EP(experts=("params/**/experts/w_in",
    "params/**/experts/w_out"))``), each expert's MLP split on ``f`` by ``MP``-style
    column/row selectors ``{"params/**/experts/w_in": 2, "params/**/experts/w_out": 1}``.

    Args: ``abstract``, ``seed`` and `MoETop2Config` overrides, as in `get`.
    """
    c = _make_config(MoETop2Config, overrides)
    if c.d_model % c.heads:
        raise ValueError(f"MoETop2Config.d_model={c.d_model} is not divisible by heads={c.heads}")
    if c.experts < 2:
        raise ValueError(f"MoETop2Config.experts={c.experts}: top-2 routing needs at least 2")
    return _build("moe_top2", c, abstract=abstract, seed=seed, spec=_moe2_spec(c),
                  loss_fn=_moe2_loss)  # fmt: skip
