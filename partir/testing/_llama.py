"""A Llama-style decoder for the zoo: RMSNorm, rotary position embeddings (RoPE), a SwiGLU MLP
and grouped-query attention (GQA), with stacked layers run by `jax.lax.scan`.

Its purpose is full-size planning and simulation: ``llama(abstract=True, layers=80,
d_model=8192, ...)`` holds `jax.ShapeDtypeStruct` leaves only, and since the layers are one
scan, the traced program has one layer body whatever the depth (tracing Llama 3 405B costs what
tracing 2 layers does). The default config is tiny, so the same model also runs on the CPU mesh
for numerics tests.

It is not registered in `partir.testing.models.MODELS` (whose every entry each zoo-wide test
runs with the `partir.testing.schedules` presets); `llama_schedule` gives its BP, MP (Megatron),
Z1 (optimizer state), Z3 (FSDP) and SP (sequence-parallel activations) tactics.

Layer (Touvron et al. 2023, "Llama 2", §2.2; Dubey et al. 2024, "The Llama 3 Herd of Models",
§3.2): ``x += o(attn(rope(q(n(x))), rope(k(n(x))), v(n(x))))``; ``x += down(silu(gate(n(x))) *
up(n(x)))`` with ``n`` an RMSNorm; untied output head.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from partir.tactics import REPLICATED, ManualPartition
from partir.testing._zoo import (
    Model,
    _build,
    _const,
    _dtype,
    _Init,
    _log_softmax,
    _make_config,
    _normal,
    _softmax,
)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Config of the ``llama`` model.

    Attributes:
      layers: transformer blocks (L).
      d_model: model width (d); divisible by ``heads``.
      heads: query heads (H); head dim ``d_model // heads``, even (RoPE rotates pairs).
      kv_heads: key/value heads (GQA); divides ``heads`` (``heads`` itself: plain multi-head).
      d_ff: SwiGLU hidden width (f).
      seq: sequence length (S).
      batch: sequences per batch (B).
      vocab: vocabulary size.
      dtype: dtype name of params and activations; the loss is computed in float32.
      remat: recompute each block in the backward pass (`jax.checkpoint` per block).
      rope_theta: RoPE base frequency (Llama 2: 1e4; Llama 3: 5e5).
      norm_eps: RMSNorm epsilon.
    """

    layers: int = 2
    d_model: int = 32
    heads: int = 4
    kv_heads: int = 2
    d_ff: int = 64
    seq: int = 16
    batch: int = 8
    vocab: int = 64
    dtype: str = "float32"
    remat: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        """Per-head width, ``d_model // heads``."""
        return self.d_model // self.heads


def _spec(c: LlamaConfig) -> tuple[dict, dict]:
    d, f, dt, dh, L = c.d_model, c.d_ff, _dtype(c), c.head_dim, c.layers
    scale = 0.02
    blocks = {
        "attn_norm": _const((L, d), 1.0, dt),
        "attn": {
            "q": _normal((L, d, c.heads * dh), scale, dt),
            "k": _normal((L, d, c.kv_heads * dh), scale, dt),
            "v": _normal((L, d, c.kv_heads * dh), scale, dt),
            "o": _normal((L, c.heads * dh, d), scale, dt),
        },
        "mlp_norm": _const((L, d), 1.0, dt),
        "mlp": {
            "gate": _normal((L, d, f), scale, dt),
            "up": _normal((L, d, f), scale, dt),
            "down": _normal((L, f, d), scale, dt),
        },
    }
    params = {
        "embed": _normal((c.vocab, d), scale, dt),
        "blocks": blocks,
        "final_norm": _const((d,), 1.0, dt),
        "head": _normal((d, c.vocab), scale, dt),
    }
    stream = _Init((c.batch, c.seq + 1), jnp.dtype(jnp.int32), "int", c.vocab)
    return params, {"stream": stream}


def _post(args: tuple[dict, dict]) -> tuple[dict, dict]:
    params, batch = args
    stream = batch["stream"]
    return params, {"tokens": stream[:, :-1], "targets": stream[:, 1:]}


def _rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    # statistics in float32, as Llama's reference code computes them
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * scale


def _rope(x: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x: [B, S, heads, dh]`` (pairs ``(i, i + dh/2)``, as GPT-NeoX and
    Hugging Face's Llama rotate them)."""
    _, s, _, dh = x.shape
    half = dh // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = jnp.arange(s, dtype=jnp.float32)[:, None] * freq[None, :]  # [S, dh/2]
    cos = jnp.cos(angle)[None, :, None, :].astype(x.dtype)
    sin = jnp.sin(angle)[None, :, None, :].astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _block(x: jax.Array, blk: dict, c: LlamaConfig) -> jax.Array:
    b, s, _ = x.shape
    dh, kv, group = c.head_dim, c.kv_heads, c.heads // c.kv_heads
    h = _rms_norm(x, blk["attn_norm"], c.norm_eps)
    q = _rope((h @ blk["attn"]["q"]).reshape(b, s, c.heads, dh), c.rope_theta)
    k = _rope((h @ blk["attn"]["k"]).reshape(b, s, kv, dh), c.rope_theta)
    v = (h @ blk["attn"]["v"]).reshape(b, s, kv, dh)
    q = q.reshape(b, s, kv, group, dh)  # each key/value head serves `group` query heads
    scores = jnp.einsum("bqkgd,btkd->bkgqt", q, k) / math.sqrt(dh)
    # an additive [S, S] mask: a select against a broadcast constant would make the backward
    # pass build a zeros tensor of the scores' full shape outside the layer scan
    causal = jnp.tril(jnp.ones((s, s), dtype=bool))
    scores = scores + jnp.where(causal, 0.0, -1e9).astype(scores.dtype)
    probs = _softmax(scores.astype(jnp.float32)).astype(x.dtype)
    attn = jnp.einsum("bkgqt,btkd->bqkgd", probs, v).reshape(b, s, c.heads * dh)
    x = x + attn @ blk["attn"]["o"]
    h = _rms_norm(x, blk["mlp_norm"], c.norm_eps)
    gate = h @ blk["mlp"]["gate"]
    silu = gate * jax.lax.logistic(gate)  # SiLU (Swish), written with a plain primitive
    return x + (silu * (h @ blk["mlp"]["up"])) @ blk["mlp"]["down"]


def _loss(params: dict, batch: dict, c: LlamaConfig) -> jax.Array:
    tokens = batch["tokens"]
    x = params["embed"][tokens]
    block: Any = functools.partial(_block, c=c)
    if c.remat:
        block = jax.checkpoint(block)
    x, _ = jax.lax.scan(lambda h, blk: (block(h, blk), None), x, params["blocks"])
    x = _rms_norm(x, params["final_norm"], c.norm_eps)
    logits = (x @ params["head"]).astype(jnp.float32)
    logp = _log_softmax(logits)
    # the target's log-probability by a gather, not a one-hot product: a [B, S, vocab] one-hot
    # would cost more than the model at Llama 3's 128K vocabulary
    picked = jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)
    return -jnp.mean(picked)


def llama(*, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """Llama-style decoder (RMSNorm, RoPE, SwiGLU, GQA), stacked layers under `jax.lax.scan`.

    params::

        {"embed": [vocab, d],
         "blocks": {"attn_norm": [L, d],
                    "attn": {"q": [L, d, H*dh], "k": [L, d, KV*dh], "v": [L, d, KV*dh],
                             "o": [L, H*dh, d]},
                    "mlp_norm": [L, d],
                    "mlp": {"gate": [L, d, f], "up": [L, d, f], "down": [L, f, d]}},
         "final_norm": [d],
         "head": [d, vocab]}

    batch: ``{"tokens": int32[B, S], "targets": int32[B, S]}``. The step is the zoo's:
    ``fn(params, opt_state, batch) -> (new_params, new_opt_state, loss)`` with AdamW.

    Args:
      abstract: `jax.ShapeDtypeStruct` leaves only (nothing allocated), for full-size plans.
      seed: the seed of the parameters and the batch.
      **overrides: `LlamaConfig` fields.
    """
    c = _make_config(LlamaConfig, overrides)
    if c.d_model % c.heads or c.head_dim % 2:
        raise ValueError(
            f"LlamaConfig: d_model={c.d_model} must be divisible by heads={c.heads} into an "
            "even head dim (RoPE rotates pairs)"
        )
    if c.kv_heads < 1 or c.heads % c.kv_heads:
        raise ValueError(f"LlamaConfig: kv_heads={c.kv_heads} must divide heads={c.heads}")
    return _build("llama", c, abstract=abstract, seed=seed, spec=_spec(c), post=_post,
                  loss_fn=_loss)  # fmt: skip


def llama_flops_per_token(c: LlamaConfig, *, causal: bool = True) -> float:
    """Model FLOPs per token of one training step (forward and backward, no recomputation):
    ``6 N`` over the matmul parameters plus attention's ``12 L S d`` (halved when `causal`,
    MaxText's convention since its PR #1988; PaLM's Appendix B counts the full square).

    Args:
      c: the config.
      causal: count only the causal half of the attention scores.
    """
    d, dh = c.d_model, c.head_dim
    per_layer = d * c.heads * dh * 2 + d * c.kv_heads * dh * 2 + 3 * d * c.d_ff
    matmul_params = c.layers * per_layer + d * c.vocab  # the head; the embedding is a gather
    attention = 12 * c.layers * c.seq * c.heads * dh * (0.5 if causal else 1.0)
    return 6 * matmul_params + attention


# Megatron layout: q/k/v, gate and up column-parallel; o and down row-parallel.
_MP = {
    "params/blocks/attn/q": 2, "params/blocks/attn/k": 2, "params/blocks/attn/v": 2,
    "params/blocks/attn/o": 1, "params/blocks/mlp/gate": 2, "params/blocks/mlp/up": 2,
    "params/blocks/mlp/down": 1,
}  # fmt: skip
# ZeRO / FSDP: shard each parameter (and its moments) along one dim on the data axis.
_ZERO = {"blocks": 1, "embed": 1, "final_norm": 0, "head": 0}


def _zero(roots: tuple[str, ...]) -> dict[str, int]:
    return {f"{root}/{sub}": dim for root in roots for sub, dim in _ZERO.items()}


def llama_tactic(
    name: str, *, batch_axis: str = "batch", model_axis: str = "model"
) -> ManualPartition:
    """One tactic for the ``llama`` model: BP (batch), MP (Megatron tensor parallel), Z1
    (optimizer moments on the batch axis, parameters replicated), Z3 (FSDP: parameters and
    moments on the batch axis) or EMB (the embedding table on the model axis).

    Args:
      name: the tactic's name.
      batch_axis: the data-parallel mesh axis.
      model_axis: the tensor-parallel mesh axis.
    """
    if name == "BP":
        return ManualPartition({"batch": 0}, axis=batch_axis)
    if name == "MP":
        return ManualPartition(_MP, axis=model_axis)
    if name == "Z1":
        pins = {"params": REPLICATED, "out/0": REPLICATED}
        return ManualPartition(
            {**_zero(("opt_state/*/mu", "opt_state/*/nu")), **pins}, axis=batch_axis
        )
    if name == "Z3":
        return ManualPartition(
            _zero(("params", "opt_state/*/mu", "opt_state/*/nu")), axis=batch_axis
        )
    if name == "EMB":
        return ManualPartition({"params/embed": 0}, axis=model_axis)
    raise KeyError(f"unknown llama tactic {name!r}; known: BP, MP, Z1, Z3, EMB")


def llama_schedule(
    name: str, *, batch_axis: str = "batch", model_axis: str = "model"
) -> list[ManualPartition]:
    """A ``+``-joined schedule of `llama_tactic` names, e.g. ``"BP+MP+Z3"``.

    Args:
      name: the schedule.
      batch_axis: the data-parallel mesh axis.
      model_axis: the tensor-parallel mesh axis.
    """
    return [
        llama_tactic(part, batch_axis=batch_axis, model_axis=model_axis) for part in name.split("+")
    ]
