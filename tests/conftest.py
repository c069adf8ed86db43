"""Test-session set-up: 8 emulated CPU devices and the hypothesis profiles."""

import os

import jax

# Before any JAX op: the backend reads this once, when it is first initialised.
jax.config.update("jax_num_cpu_devices", 8)

# The `cpu` profile is the built-in default in tests, whatever `partir calibrate` measured
# on this machine (tests that need a profile file set their own).
os.environ["PARTIR_CPU_PROFILE"] = os.path.join(os.path.dirname(__file__), "no-cpu-profile.json")
# Every module is verified after each pass, so a rewrite that breaks the IR fails where it
# happens rather than only in a numerical comparison.
os.environ["PARTIR_VERIFY_IR"] = "1"

from hypothesis import HealthCheck, Phase, settings  # noqa: E402

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
