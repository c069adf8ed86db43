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
