"""The transformer zoo models ``gpt``, ``gpt_scan`` and ``moe`` (see `partir.testing.models`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from partir.testing._zoo import (
    Model,
    _build,
    _const,
    _dtype,
    _gelu,
    _Init,
    _layer_norm,
    _ln_init,
    _log_softmax,
    _make_config,
    _mse,
    _normal,
    _one_hot,
    _softmax,
    _stack,
    register_model,
)

# ----------------------------------------------------------------------------------------------
# gpt and gpt_scan


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Config of the ``gpt`` and ``gpt_scan`` models.

    Attributes:
      layers: number of transformer blocks (L).
      d_model: model width (d); must be divisible by ``heads``.
      heads: attention heads (H); head dim is ``d_model // heads``.
      seq: sequence length (S), also the size of the position table.
      batch: sequences per batch (B).
      vocab: vocabulary size; tokens are drawn from ``[0, vocab)``.
      d_ff: hidden width of the MLP (f).
      dtype: dtype name of params and activations; the loss is computed in float32.
      remat: recompute each block's activations in the backward pass (`jax.checkpoint`
        per block): only block inputs are kept, as large-model training does.
      dropout: drop probability on the attention probabilities and on each block's MLP
        output. Above 0 the step takes a PRNG key after the batch,
        ``fn(params, opt_state, batch, key)``, split into one key per layer (and per layer
        into one for attention, one for the MLP); at 0 (the default) the step and its
        program are exactly those of a model without dropout.
    """

    layers: int = 2
    d_model: int = 32
    heads: int = 4
    seq: int = 16
    batch: int = 8
    vocab: int = 64
    d_ff: int = 128
    dtype: str = "float32"
    remat: bool = False
    dropout: float = 0.0


def _gpt_spec(c: GPTConfig) -> tuple[dict, dict]:
    d, f, dt = c.d_model, c.d_ff, _dtype(c)

    def block() -> dict:
        attn = {name: _normal((d, d), 0.02, dt) for name in ("q", "k", "v", "o")}
        mlp = {
            "w_in": _normal((d, f), 0.02, dt),
            "b_in": _const((f,), 0.0, dt),
            "w_out": _normal((f, d), 0.02, dt),
            "b_out": _const((d,), 0.0, dt),
        }
        return {"ln1": _ln_init(d, dt), "attn": attn, "ln2": _ln_init(d, dt), "mlp": mlp}

    params = {
        "embed": {
            "tokens": _normal((c.vocab, d), 0.02, dt),
            "positions": _normal((c.seq, d), 0.02, dt),
        },
        "blocks": [block() for _ in range(c.layers)],
        "final_ln": _ln_init(d, dt),
        "head": _normal((d, c.vocab), 0.02, dt),
    }
    # next-token prediction: targets are the tokens shifted by one
    stream = _Init((c.batch, c.seq + 1), jnp.dtype(jnp.int32), "int", c.vocab)
    return params, {"stream": stream}


def _gpt_post(args: tuple[dict, dict], stacked: bool) -> tuple[dict, dict]:
    params, batch = args
    if stacked:
        params = {**params, "blocks": jax.tree.map(_stack, *params["blocks"])}
    stream = batch["stream"]
    return params, {"tokens": stream[:, :-1], "targets": stream[:, 1:]}


def _dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout: zero each element with probability `rate`, scale the rest up."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def _gpt_block(
    x: jax.Array, blk: dict, heads: int, dropout: float = 0.0, key: jax.Array | None = None
) -> jax.Array:
    b, s, d = x.shape
    dh = d // heads
    if dropout:
        assert key is not None, "a block with dropout needs a key"
        attn_key, mlp_key = jax.random.split(key)
    h = _layer_norm(x, blk["ln1"])
    q, k, v = ((h @ blk["attn"][name]).reshape(b, s, heads, dh) for name in "qkv")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    causal = jnp.tril(jnp.ones((s, s), dtype=bool))
    scores = jnp.where(causal, scores, jnp.asarray(-1e9, scores.dtype))
    probs = _softmax(scores)
    if dropout:
        probs = _dropout(probs, dropout, attn_key)
    attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, d)
    x = x + attn @ blk["attn"]["o"]
    h = _layer_norm(x, blk["ln2"])
    h = _gelu(h @ blk["mlp"]["w_in"] + blk["mlp"]["b_in"])
    if dropout:
        return x + _dropout(h @ blk["mlp"]["w_out"] + blk["mlp"]["b_out"], dropout, mlp_key)
    return x + h @ blk["mlp"]["w_out"] + blk["mlp"]["b_out"]


def _gpt_loss(
    params: dict, batch: dict, c: GPTConfig, key: jax.Array | None = None, *, stacked: bool
) -> jax.Array:
    tokens = batch["tokens"]
    x = params["embed"]["tokens"][tokens]  # gather; its gradient is a scatter-add
    x = x + params["embed"]["positions"][None, : tokens.shape[1]]
    block: Callable[..., jax.Array] = functools.partial(
        _gpt_block, heads=c.heads, dropout=c.dropout
    )
    if c.remat:
        block = jax.checkpoint(block)
    if c.dropout:
        assert key is not None, "GPT with dropout needs a key"
        layer_keys = jax.random.split(key, c.layers)  # one key per layer
        if stacked:
            step = lambda h, xs: (block(h, xs[0], key=xs[1]), None)  # noqa: E731
            x, _ = jax.lax.scan(step, x, (params["blocks"], layer_keys))
        else:
            for i, blk in enumerate(params["blocks"]):
                x = block(x, blk, key=layer_keys[i])
    elif stacked:
        x, _ = jax.lax.scan(lambda h, blk: (block(h, blk), None), x, params["blocks"])
    else:
        for blk in params["blocks"]:
            x = block(x, blk)
    x = _layer_norm(x, params["final_ln"])
    logits = (x @ params["head"]).astype(jnp.float32)
    logp = _log_softmax(logits)
    return -jnp.mean(jnp.sum(logp * _one_hot(batch["targets"], c.vocab, logp.dtype), axis=-1))


def _gpt_builder(name: str, stacked: bool, abstract: bool, seed: int, overrides: dict) -> Model:
    c = _make_config(GPTConfig, overrides)
    if c.d_model % c.heads:
        raise ValueError(f"GPTConfig.d_model={c.d_model} is not divisible by heads={c.heads}")
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"GPTConfig.dropout={c.dropout} must be in [0, 1)")
    return _build(
        name,
        c,
        abstract=abstract,
        seed=seed,
        spec=_gpt_spec(c),
        post=functools.partial(_gpt_post, stacked=stacked),
        loss_fn=functools.partial(_gpt_loss, stacked=stacked),
        takes_key=bool(c.dropout),
    )


@register_model("gpt")
def gpt(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """GPT-style decoder, layers unrolled; cross-entropy next-token loss.

    Token embedding by gather, learned positions, pre-LayerNorm blocks with causal multi-head
    attention and a GELU MLP, final LayerNorm, untied head. params::

        {"embed": {"tokens": [vocab, d], "positions": [seq, d]},
         "blocks": [{"ln1": {"scale": [d], "bias": [d]},
                     "attn": {"q": [d, d], "k": [d, d], "v": [d, d], "o": [d, d]},
                     "ln2": {"scale": [d], "bias": [d]},
                     "mlp": {"w_in": [d, f], "b_in": [f], "w_out": [f, d], "b_out": [d]}},
                    ...],                       # one dict per layer: params/blocks/0/attn/q
         "final_ln": {"scale": [d], "bias": [d]},
         "head": [d, vocab]}

    batch: ``{"tokens": int32[B, S], "targets": int32[B, S]}``, values in ``[0, vocab)``.
    With ``dropout > 0`` the step is ``fn(params, opt_state, batch, key)`` and ``args`` ends
    with a ``jax.random.key`` (see `GPTConfig.dropout`).

    Args: ``abstract``, ``seed`` and `GPTConfig` overrides, as in `get`.
    """
    return _gpt_builder("gpt", False, abstract, seed, overrides)


@register_model("gpt_scan")
def gpt_scan(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """The ``gpt`` model with stacked layers, run with `jax.lax.scan`.

    Same layout as ``gpt`` except ``params["blocks"]`` is one dict whose leaves have a leading
    layer dim, e.g. ``blocks/attn/q: [L, d, d]``, ``blocks/mlp/b_in: [L, f]``. For the same
    ``seed`` and config its params are exactly ``gpt``'s blocks stacked, and its loss equals
    ``gpt``'s.

    Args: ``abstract``, ``seed`` and `GPTConfig` overrides, as in `get`.
    """
    return _gpt_builder("gpt_scan", True, abstract, seed, overrides)


# ----------------------------------------------------------------------------------------------
# moe


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Config of the ``moe`` model.

    Each sequence is one routing group (GShard): tokens compete for expert capacity only within
    their own sequence, so the batch dim stays independent.

    Attributes:
      batch: sequences per batch (B), i.e. routing groups.
      seq: tokens per sequence (S).
      d_model: model width (d).
      experts: number of experts (E).
      d_ff: expert hidden width (f).
      top_k: experts chosen per token (k <= E).
      capacity_factor: expert capacity is ``ceil(capacity_factor * top_k * seq / experts)``
        tokens per group; tokens beyond it are dropped (pass through the residual only).
      aux_loss_coef: weight of the GShard load-balancing loss added to the MSE.
      dtype: dtype name of params and activations; routing runs in float32.
    """

    batch: int = 8
    seq: int = 32
    d_model: int = 32
    experts: int = 8
    d_ff: int = 64
    top_k: int = 2
    capacity_factor: float = 2.0
    aux_loss_coef: float = 0.01
    dtype: str = "float32"

    @property
    def capacity(self) -> int:
        """Expert capacity per group (C)."""
        return max(1, math.ceil(self.capacity_factor * self.top_k * self.seq / self.experts))


def _moe_spec(c: MoEConfig) -> tuple[dict, dict]:
    d, e, f, dt = c.d_model, c.experts, c.d_ff, _dtype(c)
    params = {
        "in_proj": _normal((d, d), 1.0 / math.sqrt(d), dt),
        "ln": _ln_init(d, dt),
        "router": _normal((d, e), 0.02, dt),
        "experts": {
            "w_in": _normal((e, d, f), 1.0 / math.sqrt(d), dt),
            "w_out": _normal((e, f, d), 1.0 / math.sqrt(f), dt),
        },
    }
    shape = (c.batch, c.seq, d)
    return params, {"x": _normal(shape, 1.0, dt), "y": _normal(shape, 1.0, dt)}


def _moe_loss(params: dict, batch: dict, c: MoEConfig) -> jax.Array:
    b, s, _ = batch["x"].shape
    e, k, cap, dt = c.experts, c.top_k, c.capacity, _dtype(c)
    h = batch["x"] @ params["in_proj"]
    hn = _layer_norm(h, params["ln"])
    probs = _softmax((hn @ params["router"]).astype(jnp.float32))  # [B, S, E]
    gates, choice = jax.lax.top_k(probs, k)  # [B, S, k]
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    assigned = _one_hot(choice, e, jnp.float32)  # [B, S, k, E]
    # Position in expert: every token's 1st choice is served before any 2nd choice, then in
    # sequence order; the running count over (k, S) is a cumsum of the one-hot assignments.
    order = assigned.transpose(0, 2, 1, 3).reshape(b, k * s, e)
    position = jnp.cumsum(order, axis=1).reshape(b, k, s, e).transpose(0, 2, 1, 3) - 1.0
    kept = assigned * (position < cap)  # [B, S, k, E], drops tokens over capacity
    slot = _one_hot(jnp.sum(position * kept, axis=-1).astype(jnp.int32), cap, jnp.float32)
    dispatch = jnp.einsum("bske,bskc->bsec", kept, slot)  # [B, S, E, C], 0/1
    combine = jnp.einsum("bsk,bske,bskc->bsec", gates, kept, slot)  # [B, S, E, C]
    expert_in = jnp.einsum("bsec,bsd->ebcd", dispatch.astype(dt), hn)  # [E, B, C, d]
    hidden = _gelu(jnp.einsum("ebcd,edf->ebcf", expert_in, params["experts"]["w_in"]))
    expert_out = jnp.einsum("ebcf,efd->ebcd", hidden, params["experts"]["w_out"])
    out = h + jnp.einsum("bsec,ebcd->bsd", combine.astype(dt), expert_out)  # residual
    # GShard load balancing: fraction of 1st choices per expert times mean router probability.
    balance = jnp.mean(jnp.sum(jnp.mean(assigned[:, :, 0], 1) * jnp.mean(probs, 1), -1)) * e
    return _mse(out, batch["y"]) + c.aux_loss_coef * balance


@register_model("moe")
def moe(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """GShard-style top-k mixture-of-experts layer with capacity; MSE loss.

    ``h = x @ in_proj``; ``out = h + MoE(LayerNorm(h))``. Routing: softmax router probabilities,
    `jax.lax.top_k`, position in expert via `jnp.cumsum` of one-hot assignments, a dispatch and a
    combine tensor ``[B, S, E, C]`` (per group: ``[tokens, E, C]``), experts applied with einsum on
    ``[E, B, C, d]``. params::

        {"in_proj": [d, d], "ln": {"scale": [d], "bias": [d]}, "router": [d, E],
         "experts": {"w_in": [E, d, f], "w_out": [E, f, d]}}

    batch: ``{"x": [B, S, d], "y": [B, S, d]}``.

    Args: ``abstract``, ``seed`` and `MoEConfig` overrides, as in `get`.
    """
    c = _make_config(MoEConfig, overrides)
    if not 1 <= c.top_k <= c.experts:
        raise ValueError(f"MoEConfig.top_k={c.top_k} must be in [1, experts={c.experts}]")
    return _build("moe", c, abstract=abstract, seed=seed, spec=_moe_spec(c), loss_fn=_moe_loss)
