"""Test-session set-up: 8 emulated CPU devices and the hypothesis profiles."""

import os

import jax

# Before any JAX op: the backend reads this once, when it is first initialised.
jax.config.update("jax_num_cpu_devices", 8)

# One XLA compilation cache for the run: many tests compile the same zoo step under the same
# schedule (the numerics, preset, notebook and docs tests), and a cache hit skips XLA's
# compile (24 s -> 6 s for the GPT step in both modes). Set in the environment too, so the
# docs' and notebooks' fresh interpreters share it. It lives in the checkout (git-ignored):
# a clean clone starts cold. Tests that watch XLA's compiler itself turn it off.
CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR",
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"),
    ),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
os.environ.update(CACHE_ENV)
jax.config.update("jax_compilation_cache_dir", CACHE_ENV["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

# The `cpu` profile is the built-in default in tests, whatever `partir calibrate` measured
# on this machine (tests that need a profile file set their own).
os.environ["PARTIR_CPU_PROFILE"] = os.path.join(os.path.dirname(__file__), "no-cpu-profile.json")
# Every module is verified after each pass, so a rewrite that breaks the IR fails where it
# happens rather than only in a numerical comparison.
os.environ["PARTIR_VERIFY_IR"] = "1"

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# tests/mutation/run.py: ci's derandomized draws, as many as it asks for (fewer for a quick run)
settings.register_profile(
    "mutation",
    max_examples=int(os.environ.get("PARTIR_MUTATION_EXAMPLES", "300")),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    + ([] if os.environ.get("PARTIR_MUTATION_NO_SHRINK") else [Phase.shrink, Phase.explain]),
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def mesh():
    """The suite's usual mesh: the 8 devices as 4 x 2, axes ("batch", "model"), Auto. A
    module that needs another mesh defines its own `mesh` fixture."""
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


@pytest.fixture(scope="session")
def gpt():
    """The zoo's GPT step at 2 layers (``partir.testing.models.get("gpt", layers=2)``)."""
    from partir.testing import models

    return models.get("gpt", layers=2)
