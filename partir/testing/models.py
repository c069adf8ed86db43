"""A small model zoo: real training steps for tests, demos and benchmarks.

Every entry is a pure, un-jitted training step

    train_step(params, opt_state, batch) -> (new_params, new_opt_state, loss)

(a model that draws random numbers, ``gpt`` with ``dropout > 0``, takes a PRNG key last:
``train_step(params, opt_state, batch, key)``) that differentiates a loss with `jax.value_and_grad` and applies `optax.adamw`
(learning rate `LEARNING_RATE`, weight decay `WEIGHT_DECAY`). `loss` is the loss of the *input*
params. Models are written with `jax.numpy` and `jax.lax` only, so their jaxprs hold the primitives
a partitioner has to handle: `dot_general`, `gather`/`scatter-add` (embeddings), `scan`
(stacked layers), `top_k`/`cumsum` (mixture-of-experts routing), `conv_general_dilated` and
`reduce_window` (UNet).

Entries (see each builder for the exact parameter layout):

- ``mlp``: 3-layer GELU MLP regression.
- ``gpt``: GPT-style decoder with unrolled layers (``params/blocks/0/attn/q``).
- ``gpt_scan``: the same decoder with stacked layers run by `jax.lax.scan`
  (``params/blocks/attn/q: [L, d, d]``); same loss as ``gpt`` for the same weights.
- ``moe``: a GShard-style top-k mixture-of-experts layer with capacity.
- ``unet``: a small NHWC conv encoder-decoder with skip connections.

Library-built steps (not registered; `LIBRARY_MODELS`, in `_library_models`): ``nnx_decoder``
(also stacked by `nnx.vmap`/`nnx.scan`, and with `nnx.remat`), ``linen_encoder``,
``equinox_transformer``, ``haiku_transformer`` and ``maxtext_llama``, each a `LibraryModel`
carrying its parameters' logical axis names; `MEGATRON_RULES` maps them to a ``model`` axis.

Also exported, not registered: `llama` (RMSNorm, RoPE, SwiGLU, GQA, scanned layers; its
tactics in `llama_schedule`), for full-size plans with ``abstract=True``.

Use `get`:

    m = get("gpt", layers=4)                  # real arrays, deterministic from seed
    params, opt_state, loss = jax.jit(m.fn)(*m.args)
    m = get("gpt", abstract=True, layers=96)  # jax.ShapeDtypeStruct leaves, nothing allocated

Default configs are small (the step runs in well under a second on CPU) and every tensor
dimension is divisible by 8, so tests can shard any of them over meshes of 8 devices.

The code lives in private modules: `_zoo` (`Model`, the registry, the optimizer and the shared
plumbing), `_mlp_models`, `_transformer_models` (``gpt``, ``gpt_scan``, ``moe``) and
`_unet_models`. Importing this module imports them all, registering every builder; the import
order is the registration order, hence the order of `MODELS`.
"""

from __future__ import annotations

# Steps built with Flax NNX/Linen, Equinox, Haiku and a MaxText-style Llama; not
# registered (they need those libraries, imported only when a builder runs).
from partir.testing._library_models import EQUINOX_LOGICAL as EQUINOX_LOGICAL
from partir.testing._library_models import HAIKU_LOGICAL as HAIKU_LOGICAL
from partir.testing._library_models import LIBRARY_MODELS as LIBRARY_MODELS
from partir.testing._library_models import MAXTEXT_NAMES as MAXTEXT_NAMES
from partir.testing._library_models import MEGATRON_RULES as MEGATRON_RULES
from partir.testing._library_models import LibraryConfig as LibraryConfig
from partir.testing._library_models import LibraryModel as LibraryModel
from partir.testing._library_models import equinox_transformer as equinox_transformer
from partir.testing._library_models import haiku_transformer as haiku_transformer
from partir.testing._library_models import linen_encoder as linen_encoder
from partir.testing._library_models import maxtext_llama as maxtext_llama
from partir.testing._library_models import nnx_decoder as nnx_decoder

# The Llama-style decoder is exported but not registered (see its module doc).
from partir.testing._llama import LlamaConfig as LlamaConfig
from partir.testing._llama import llama as llama
from partir.testing._llama import llama_flops_per_token as llama_flops_per_token
from partir.testing._llama import llama_schedule as llama_schedule
from partir.testing._llama import llama_tactic as llama_tactic

# Registration order (= `MODELS` order): mlp, gpt, gpt_scan, moe, unet. The builder modules'
# names sort in that order, so the sorted imports below keep it.
from partir.testing._mlp_models import MLPConfig as MLPConfig
from partir.testing._mlp_models import mlp as mlp
from partir.testing._transformer_models import GPTConfig as GPTConfig
from partir.testing._transformer_models import MoEConfig as MoEConfig
from partir.testing._transformer_models import gpt as gpt
from partir.testing._transformer_models import gpt_scan as gpt_scan
from partir.testing._transformer_models import moe as moe
from partir.testing._unet_models import UNetConfig as UNetConfig
from partir.testing._unet_models import unet as unet

# Exported but not registered (no reference schedules for them; see their module doc).
from partir.testing._video_models import MoETop2Config as MoETop2Config
from partir.testing._video_models import VideoDiTConfig as VideoDiTConfig
from partir.testing._video_models import moe_top2 as moe_top2
from partir.testing._video_models import named as named
from partir.testing._video_models import video_dit as video_dit
from partir.testing._video_models import video_dit_scan as video_dit_scan
from partir.testing._zoo import LEARNING_RATE as LEARNING_RATE
from partir.testing._zoo import MODELS as MODELS
from partir.testing._zoo import WARM_NU as WARM_NU
from partir.testing._zoo import WARM_STEPS as WARM_STEPS
from partir.testing._zoo import WEIGHT_DECAY as WEIGHT_DECAY
from partir.testing._zoo import Model as Model
from partir.testing._zoo import get as get
from partir.testing._zoo import make_optimizer as make_optimizer
from partir.testing._zoo import register_model as register_model
from partir.testing._zoo import warm_state as warm_state
