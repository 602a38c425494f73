"""Test set-up: 8 simulated CPU devices (set before jax is imported), float32 matmuls at highest precision."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def tiny_cfg():
    import eva_jax

    return eva_jax.load_config("v3_tiny")


@pytest.fixture(scope="session")
def tiny_params(tiny_cfg):
    import eva_jax

    return eva_jax.init_params(tiny_cfg, seed=0)
