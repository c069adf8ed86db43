"""Test-session set-up: 8 emulated CPU devices and the hypothesis profiles."""

import os

import jax

# Before any JAX op: the backend reads this once, when it is first initialised.
jax.config.update("jax_num_cpu_devices", 8)

# The `cpu` profile is the built-in default in tests, whatever `partir calibrate` measured
# on this machine (tests that need a profile file set their own).
os.environ["PARTIR_CPU_PROFILE"] = os.path.join(os.path.dirname(__file__), "no-cpu-profile.json")

from hypothesis import HealthCheck, settings  # noqa: E402

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
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
