"""Training steps of models built with the libraries people use: Flax NNX and Linen, Equinox,
Haiku, and a MaxText-style Llama block; each with `optax.adamw`, written the way each
library's own documentation writes it.

Every builder returns a `LibraryModel`: a zoo `Model` (``fn(params, opt_state, batch)`` ->
``(new_params, new_opt_state, loss)``, pure and not jitted) plus the logical axis names of
its parameters (``logical``: selector relative to ``params`` -> names, one per dim) as the
library states them (Flax ``sharding`` metadata, Linen ``LogicallyPartitioned`` boxes) or, for
Equinox and Haiku, which have no such metadata, as a user would write them by pattern.

The logical names follow MaxText: ``embed`` (the model width), ``heads``, ``kv`` (the head
dim), ``mlp`` (the hidden width of the MLP), ``vocab``, ``norm`` and ``layers`` (the stacked
layer dim). `MEGATRON_RULES` maps them to a ``model`` axis as Megatron-LM does.

Sizes are small (a step runs in well under a second on CPU) and every dim a rule shards is
divisible by 2 (the tensor-parallel axis of the tests' (4, 2) mesh) and the batch by 4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from partir.testing._zoo import Model, make_optimizer, warm_state

LogicalNames = tuple[str | None, ...]

MEGATRON_RULES: Mapping[str, str | None] = {
    "batch": "batch",
    "heads": "model",
    "mlp": "model",
    "embed": None,
    "kv": None,
    "vocab": None,
    "norm": None,
    "layers": None,
}
"""MaxText-style logical axis rules giving Megatron tensor parallelism on a ``model`` axis:
attention heads and the MLP hidden units split, everything else replicated."""


@dataclasses.dataclass(frozen=True)
class LibraryConfig:
    """Sizes shared by the library-built models."""

    vocab: int = 32
    d_model: int = 16
    heads: int = 2
    d_ff: int = 32
    seq: int = 8
    batch: int = 8
    layers: int = 2

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.d_model // self.heads


@dataclasses.dataclass(frozen=True)
class LibraryModel(Model):
    """A zoo `Model` built with a library, plus its parameters' logical axis names.

    Attributes:
      library: ``"nnx"``, ``"linen"``, ``"equinox"``, ``"haiku"`` or ``"maxtext"``.
      logical: selector relative to the ``params`` argument -> one logical name (or None)
        per dim, read from the library's metadata where it has any.
      layers: the number of transformer layers.
    """

    library: str = ""
    logical: Mapping[str, LogicalNames] = dataclasses.field(default_factory=dict)
    layers: int = 0


def _batch(c: LibraryConfig, seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, c.vocab, size=(c.batch, c.seq + 1))
    return {
        "tokens": jnp.asarray(tokens[:, :-1], jnp.int32),
        "targets": jnp.asarray(tokens[:, 1:], jnp.int32),
    }


def _step(apply: Callable[[Any, jax.Array], jax.Array]) -> Callable[..., Any]:
    """An AdamW step on next-token cross-entropy, for a pure ``apply(params, tokens) -> logits``."""
    opt = make_optimizer()

    def train_step(params, opt_state, batch):
        def loss_fn(p):
            logits = apply(p, batch["tokens"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def _finish(
    name: str,
    library: str,
    c: LibraryConfig,
    params: Any,
    apply: Callable[[Any, jax.Array], jax.Array],
    logical: Mapping[str, LogicalNames],
    seed: int,
) -> LibraryModel:
    opt_state = warm_state(make_optimizer().init(params))
    return LibraryModel(
        name, _step(apply), (params, opt_state, _batch(c, seed)), c, library, dict(logical),
        c.layers,
    )  # fmt: skip


# -- Flax NNX -----------------------------------------------------------------------------


def _nnx_block_class(c: LibraryConfig) -> type:
    from flax import nnx

    init = nnx.initializers.normal(0.1)
    zeros = nnx.initializers.zeros_init()
    part = nnx.with_partitioning

    class Block(nnx.Module):
        """Pre-norm decoder block, as the Flax NNX guides write one."""

        def __init__(self, rngs: nnx.Rngs):
            self.attn_norm = nnx.RMSNorm(c.d_model, scale_init=part(nnx.initializers.ones_init(), ("norm",)), rngs=rngs)  # fmt: skip
            self.attn = nnx.MultiHeadAttention(
                num_heads=c.heads, in_features=c.d_model, qkv_features=c.d_model,
                kernel_init=part(init, ("embed", "heads", "kv")),
                out_kernel_init=part(init, ("heads", "kv", "embed")),
                bias_init=part(zeros, ("heads", "kv")), out_bias_init=part(zeros, ("embed",)),
                decode=False, rngs=rngs,
            )  # fmt: skip
            self.mlp_norm = nnx.RMSNorm(c.d_model, scale_init=part(nnx.initializers.ones_init(), ("norm",)), rngs=rngs)  # fmt: skip
            self.up = nnx.Linear(c.d_model, c.d_ff, kernel_init=part(init, ("embed", "mlp")), bias_init=part(zeros, ("mlp",)), rngs=rngs)  # fmt: skip
            self.down = nnx.Linear(c.d_ff, c.d_model, kernel_init=part(init, ("mlp", "embed")), bias_init=part(zeros, ("embed",)), rngs=rngs)  # fmt: skip

        def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
            x = x + self.attn(self.attn_norm(x), mask=mask)
            return x + self.down(nnx.gelu(self.up(self.mlp_norm(x))))

    return Block


def nnx_decoder(*, seed: int = 0, stacked: bool = False, remat: bool = False, **overrides: Any) -> LibraryModel:  # fmt: skip
    """A Flax NNX decoder (`nnx.Embed`, `nnx.MultiHeadAttention`, `nnx.RMSNorm`, `nnx.Linear`),
    parameters split off with ``nnx.split(model, nnx.Param)``.

    Args:
      seed: initialisation and data seed.
      stacked: build the layers with `nnx.vmap` and run them with `nnx.scan` (parameters
        ``params/blocks/attn/query/kernel/value: [layers, d, heads, head_dim]``) instead of a
        list (``params/blocks/0/...``).
      remat: with `stacked`, rematerialise each layer (`nnx.remat`) in the backward pass.
      **overrides: `LibraryConfig` fields.

    Returns:
      The `LibraryModel`; ``logical`` comes from the parameters' ``sharding`` metadata.
    """
    from flax import nnx

    c = dataclasses.replace(LibraryConfig(), **overrides)
    Block = _nnx_block_class(c)
    part = nnx.with_partitioning

    class Decoder(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.embed = nnx.Embed(c.vocab, c.d_model, embedding_init=part(nnx.initializers.normal(0.1), ("vocab", "embed")), rngs=rngs)  # fmt: skip
            if stacked:

                @nnx.split_rngs(splits=c.layers)
                @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})  # fmt: skip
                def create_blocks(rngs: nnx.Rngs) -> Any:
                    return Block(rngs)

                self.blocks = create_blocks(rngs)
            else:
                self.blocks = nnx.List([Block(rngs) for _ in range(c.layers)])
            self.final_norm = nnx.RMSNorm(c.d_model, scale_init=part(nnx.initializers.ones_init(), ("norm",)), rngs=rngs)  # fmt: skip
            self.head = nnx.Linear(c.d_model, c.vocab, use_bias=False, kernel_init=part(nnx.initializers.normal(0.1), ("embed", "vocab")), rngs=rngs)  # fmt: skip

        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = self.embed(tokens)
            mask = nnx.make_causal_mask(tokens)
            if stacked:

                def layer(x: jax.Array, block: Any) -> jax.Array:
                    return block(x, mask)

                if remat:
                    layer = nnx.remat(layer)
                forward = nnx.scan(layer, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})  # fmt: skip
                x = forward(x, self.blocks)
            else:
                for block in self.blocks:
                    x = block(x, mask)
            return self.head(self.final_norm(x))

    with nnx.use_eager_sharding(False):
        model = Decoder(nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(p: Any, tokens: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, p)(tokens)

    from partir.plan.logical import logical_axes

    name = "nnx_decoder" + ("_scan" if stacked else "") + ("_remat" if remat else "")
    return _finish(name, "nnx", c, params, apply, logical_axes(params), seed)


# -- Flax Linen ---------------------------------------------------------------------------


def linen_encoder(*, seed: int = 0, **overrides: Any) -> LibraryModel:
    """A Flax Linen encoder (`nn.Embed`, `nn.MultiHeadDotProductAttention`, `nn.LayerNorm`,
    `nn.Dense`) whose kernels carry logical names through `nn.with_logical_partitioning`.

    The step takes the unboxed parameters (``nn.unbox``), as a Linen training loop does;
    ``logical`` is read from the `LogicallyPartitioned` boxes ``model.init`` returns.

    Args:
      seed: initialisation and data seed.
      **overrides: `LibraryConfig` fields.

    Returns:
      The `LibraryModel` (parameter paths ``params/params/block_0/attn/query/kernel``).
    """
    import flax.linen as nn

    c = dataclasses.replace(LibraryConfig(), **overrides)
    init = nn.initializers.normal(0.1)
    logical = nn.with_logical_partitioning

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            h = nn.LayerNorm(scale_init=logical(nn.initializers.ones, ("norm",)), bias_init=logical(nn.initializers.zeros, ("norm",)), name="attn_norm")(x)  # fmt: skip
            h = nn.MultiHeadDotProductAttention(
                num_heads=c.heads, qkv_features=c.d_model,
                kernel_init=logical(init, ("embed", "heads", "kv")),
                bias_init=logical(nn.initializers.zeros, ("heads", "kv")),
                out_kernel_init=logical(init, ("heads", "kv", "embed")),
                out_bias_init=logical(nn.initializers.zeros, ("embed",)), name="attn",
            )(h)  # fmt: skip
            x = x + h
            h = nn.LayerNorm(scale_init=logical(nn.initializers.ones, ("norm",)), bias_init=logical(nn.initializers.zeros, ("norm",)), name="mlp_norm")(x)  # fmt: skip
            h = nn.Dense(c.d_ff, kernel_init=logical(init, ("embed", "mlp")), bias_init=logical(nn.initializers.zeros, ("mlp",)), name="up")(h)  # fmt: skip
            h = nn.Dense(c.d_model, kernel_init=logical(init, ("mlp", "embed")), bias_init=logical(nn.initializers.zeros, ("embed",)), name="down")(nn.gelu(h))  # fmt: skip
            return x + h

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = nn.Embed(c.vocab, c.d_model, embedding_init=logical(init, ("vocab", "embed")), name="embed")(tokens)  # fmt: skip
            for i in range(c.layers):
                x = Block(name=f"block_{i}")(x)
            x = nn.LayerNorm(scale_init=logical(nn.initializers.ones, ("norm",)), bias_init=logical(nn.initializers.zeros, ("norm",)), name="final_norm")(x)  # fmt: skip
            return nn.Dense(c.vocab, use_bias=False, kernel_init=logical(init, ("embed", "vocab")), name="head")(x)  # fmt: skip

    model = Encoder()
    boxed = model.init(jax.random.key(seed), jnp.zeros((1, c.seq), jnp.int32))
    from partir.plan.logical import logical_axes

    names = logical_axes(boxed)
    apply: Any = model.apply
    return _finish("linen_encoder", "linen", c, nn.unbox(boxed), apply, names, seed)


# -- Equinox ------------------------------------------------------------------------------

EQUINOX_LOGICAL: Mapping[str, LogicalNames] = {
    # equinox Linear weights are [out, in]
    "**/attn/query_proj/weight": ("heads", "embed"),
    "**/attn/key_proj/weight": ("heads", "embed"),
    "**/attn/value_proj/weight": ("heads", "embed"),
    "**/attn/output_proj/weight": ("embed", "heads"),
    "**/up/weight": ("mlp", "embed"),
    "**/up/bias": ("mlp",),
    "**/down/weight": ("embed", "mlp"),
}
"""Logical names of the Equinox transformer's weights, by pattern (Equinox has no metadata)."""


def equinox_transformer(*, seed: int = 0, **overrides: Any) -> LibraryModel:
    """An Equinox decoder (`eqx.nn.Embedding`, `eqx.nn.MultiheadAttention`, `eqx.nn.LayerNorm`,
    `eqx.nn.Linear`), written per example and `jax.vmap`-ed over the batch as the Equinox
    docs do; the parameters are the arrays of ``eqx.partition(model, eqx.is_array)``.

    Args:
      seed: initialisation and data seed.
      **overrides: `LibraryConfig` fields.

    Returns:
      The `LibraryModel`; ``logical`` is `EQUINOX_LOGICAL` (note the ``[out, in]`` weights).
    """
    import equinox as eqx

    c = dataclasses.replace(LibraryConfig(), **overrides)

    class Block(eqx.Module):
        attn_norm: eqx.nn.LayerNorm
        attn: eqx.nn.MultiheadAttention
        mlp_norm: eqx.nn.LayerNorm
        up: eqx.nn.Linear
        down: eqx.nn.Linear

        def __init__(self, key: jax.Array):
            k1, k2, k3 = jax.random.split(key, 3)
            self.attn_norm = eqx.nn.LayerNorm(c.d_model)
            self.attn = eqx.nn.MultiheadAttention(c.heads, c.d_model, key=k1)
            self.mlp_norm = eqx.nn.LayerNorm(c.d_model)
            self.up = eqx.nn.Linear(c.d_model, c.d_ff, key=k2)
            self.down = eqx.nn.Linear(c.d_ff, c.d_model, key=k3)

        def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
            h = jax.vmap(self.attn_norm)(x)
            x = x + self.attn(h, h, h, mask=mask)
            h = jax.vmap(self.mlp_norm)(x)
            return x + jax.vmap(self.down)(jax.nn.gelu(jax.vmap(self.up)(h)))

    class Transformer(eqx.Module):
        embed: eqx.nn.Embedding
        blocks: list
        final_norm: eqx.nn.LayerNorm
        head: eqx.nn.Linear

        def __init__(self, key: jax.Array):
            keys = jax.random.split(key, c.layers + 2)
            self.embed = eqx.nn.Embedding(c.vocab, c.d_model, key=keys[0])
            self.blocks = [Block(k) for k in keys[1:-1]]
            self.final_norm = eqx.nn.LayerNorm(c.d_model)
            self.head = eqx.nn.Linear(c.d_model, c.vocab, use_bias=False, key=keys[-1])

        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = jax.vmap(self.embed)(tokens)
            mask = jnp.tril(jnp.ones((tokens.shape[0], tokens.shape[0]), bool))
            for block in self.blocks:
                x = block(x, mask)
            return jax.vmap(self.head)(jax.vmap(self.final_norm)(x))

    model = Transformer(jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_array)

    def apply(p: Any, tokens: jax.Array) -> jax.Array:
        return jax.vmap(eqx.combine(p, static))(tokens)

    return _finish("equinox_transformer", "equinox", c, params, apply, EQUINOX_LOGICAL, seed)


# -- Haiku --------------------------------------------------------------------------------

HAIKU_LOGICAL: Mapping[str, LogicalNames] = {
    # Haiku module names hold `/`, escaped in partir paths (`block_0\/mha\/query`)
    "*mha\\/query/w": ("embed", "heads"),
    "*mha\\/key/w": ("embed", "heads"),
    "*mha\\/value/w": ("embed", "heads"),
    "*mha\\/query/b": ("heads",),
    "*mha\\/key/b": ("heads",),
    "*mha\\/value/b": ("heads",),
    "*mha\\/linear/w": ("heads", "embed"),
    "*mlp\\/up/w": ("embed", "mlp"),
    "*mlp\\/up/b": ("mlp",),
    "*mlp\\/down/w": ("mlp", "embed"),
}
"""Logical names of the Haiku transformer's weights, by pattern (Haiku has no metadata)."""


def haiku_transformer(*, seed: int = 0, **overrides: Any) -> LibraryModel:
    """A Haiku decoder (`hk.Embed`, `hk.MultiHeadAttention`, `hk.LayerNorm`, `hk.Linear`) under
    `hk.transform`; parameter keys like ``block_0/mha/query`` (a `/` inside the key).

    Args:
      seed: initialisation and data seed.
      **overrides: `LibraryConfig` fields.

    Returns:
      The `LibraryModel`; ``logical`` is `HAIKU_LOGICAL`.
    """
    import haiku as hk

    c = dataclasses.replace(LibraryConfig(), **overrides)

    def forward(tokens: jax.Array) -> jax.Array:
        init = hk.initializers.RandomNormal(0.1)
        x = hk.Embed(c.vocab, c.d_model, w_init=init, name="embed")(tokens)
        mask = jnp.tril(jnp.ones((tokens.shape[1], tokens.shape[1]), bool))[None, None]
        for i in range(c.layers):
            with hk.name_scope(f"block_{i}"):
                h = hk.LayerNorm(-1, True, True, name="attn_norm")(x)
                x = x + hk.MultiHeadAttention(c.heads, c.head_dim, w_init=init, name="mha")(h, h, h, mask=mask)  # fmt: skip
                h = hk.LayerNorm(-1, True, True, name="mlp_norm")(x)
                with hk.name_scope("mlp"):
                    h = jax.nn.gelu(hk.Linear(c.d_ff, w_init=init, name="up")(h))
                    x = x + hk.Linear(c.d_model, w_init=init, name="down")(h)
        x = hk.LayerNorm(-1, True, True, name="final_norm")(x)
        return hk.Linear(c.vocab, with_bias=False, w_init=init, name="head")(x)

    model: Any = hk.without_apply_rng(hk.transform(forward))
    params = model.init(jax.random.key(seed), jnp.zeros((1, c.seq), jnp.int32))
    return _finish("haiku_transformer", "haiku", c, params, model.apply, HAIKU_LOGICAL, seed)


# -- MaxText-style Llama ------------------------------------------------------------------

MAXTEXT_NAMES: tuple[str, ...] = (
    "decoder_layer_input", "query_proj", "key_proj", "value_proj", "out_proj", "mlpwi",
    "mlpwo",
)  # fmt: skip
"""The `checkpoint_name` names each MaxText Llama layer puts on its activations."""


def _rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding of ``x: [batch, seq, heads, head_dim]`` (Su et al. 2021),
    rotating the two halves of the head dim as MaxText's ``RotaryEmbedding`` does."""
    half = x.shape[-1] // 2
    freq = 10_000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[:, :, None, None].astype(jnp.float32) * freq
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def maxtext_llama(*, seed: int = 0, remat: bool = False, **overrides: Any) -> LibraryModel:
    """A MaxText-style Llama decoder in Flax Linen: RMSNorm, RoPE, SwiGLU MLP, logical axis
    names on every kernel, `checkpoint_name` on the activations as MaxText's
    ``DecoderLayer`` puts them (`MAXTEXT_NAMES`), layers stacked by `nn.scan`.

    Args:
      seed: initialisation and data seed.
      remat: rematerialise each layer (``nn.remat`` saving only ``out_proj`` and
        ``mlpwo``, like MaxText's ``remat_policy``).
      **overrides: `LibraryConfig` fields.

    Returns:
      The `LibraryModel` (parameters ``params/params/decoder/layers/query/kernel:
      [d, layers, heads, head_dim]``: Linen's scan puts the layer dim where
      ``metadata_params`` says, here dim 1 as MaxText's ``param_scan_axis``).
    """
    import flax.linen as nn
    from jax.ad_checkpoint import checkpoint_name

    c = dataclasses.replace(LibraryConfig(), **overrides)
    init = nn.initializers.normal(0.1)
    logical = nn.with_logical_partitioning

    def dense(features: Any, axis: Any, names: LogicalNames, name: str) -> nn.Module:
        return nn.DenseGeneral(features, axis=axis, use_bias=False, kernel_init=logical(init, names), name=name)  # fmt: skip

    class DecoderLayer(nn.Module):
        @nn.compact
        def __call__(self, inputs: jax.Array, positions: jax.Array) -> tuple[jax.Array, None]:
            inputs = checkpoint_name(inputs, "decoder_layer_input")
            lnx = nn.RMSNorm(scale_init=logical(nn.initializers.ones, ("norm",)), name="pre_self_attention_layer_norm")(inputs)  # fmt: skip
            heads = (c.heads, c.head_dim)
            q = checkpoint_name(dense(heads, -1, ("embed", "heads", "kv"), "query")(lnx), "query_proj")  # fmt: skip
            k = checkpoint_name(dense(heads, -1, ("embed", "heads", "kv"), "key")(lnx), "key_proj")  # fmt: skip
            v = checkpoint_name(dense(heads, -1, ("embed", "heads", "kv"), "value")(lnx), "value_proj")  # fmt: skip
            q, k = _rope(q, positions), _rope(k, positions)
            mask = nn.make_causal_mask(positions)
            attn = nn.dot_product_attention(q, k, v, mask=mask)
            out = checkpoint_name(dense(c.d_model, (-2, -1), ("heads", "kv", "embed"), "out")(attn), "out_proj")  # fmt: skip
            x = out + inputs
            h = nn.RMSNorm(scale_init=logical(nn.initializers.ones, ("norm",)), name="post_self_attention_layer_norm")(x)  # fmt: skip
            gate = dense(c.d_ff, -1, ("embed", "mlp"), "wi_0")(h)
            up = dense(c.d_ff, -1, ("embed", "mlp"), "wi_1")(h)
            h = checkpoint_name(nn.silu(gate) * up, "mlpwi")
            h = checkpoint_name(dense(c.d_model, -1, ("mlp", "embed"), "wo")(h), "mlpwo")
            return x + h, None

    layer: Any = DecoderLayer
    if remat:
        policy = jax.checkpoint_policies.save_only_these_names("out_proj", "mlpwo")
        layer = nn.remat(DecoderLayer, policy=policy, prevent_cse=False)

    class Decoder(nn.Module):
        @nn.compact
        def __call__(self, tokens: jax.Array) -> jax.Array:
            x = nn.Embed(c.vocab, c.d_model, embedding_init=logical(init, ("vocab", "embed")), name="token_embedder")(tokens)  # fmt: skip
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
            layers = nn.scan(
                layer, variable_axes={"params": 1}, split_rngs={"params": True},
                in_axes=(nn.broadcast,), length=c.layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )  # fmt: skip
            x, _ = layers(name="layers")(x, positions)
            x = nn.RMSNorm(scale_init=logical(nn.initializers.ones, ("norm",)), name="decoder_norm")(x)  # fmt: skip
            return dense(c.vocab, -1, ("embed", "vocab"), "logits_dense")(x)

    model = Decoder()
    boxed = model.init(jax.random.key(seed), jnp.zeros((1, c.seq), jnp.int32))
    from partir.plan.logical import logical_axes

    names = logical_axes(boxed)
    name = "maxtext_llama" + ("_remat" if remat else "")
    apply: Any = model.apply
    return _finish(name, "maxtext", c, nn.unbox(boxed), apply, names, seed)


LIBRARY_MODELS: dict[str, Callable[..., LibraryModel]] = {
    "nnx_decoder": nnx_decoder,
    "nnx_decoder_scan": lambda **kw: nnx_decoder(stacked=True, **kw),
    "nnx_decoder_remat": lambda **kw: nnx_decoder(stacked=True, remat=True, **kw),
    "linen_encoder": linen_encoder,
    "equinox_transformer": equinox_transformer,
    "haiku_transformer": haiku_transformer,
    "maxtext_llama": maxtext_llama,
}
"""Name -> builder ``(*, seed=0, **LibraryConfig overrides) -> LibraryModel``."""
