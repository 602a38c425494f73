"""Test set-up: 8 simulated CPU devices (set before jax is imported), float32 matmuls at highest precision, and
the package's jaxtyping annotations checked at run time (beartype), so a wrong shape or dtype at a module
boundary fails the test that passes it (EVA_TYPECHECK=0 turns the checks off, e.g. to time a test)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from jaxtyping import install_import_hook  # noqa: E402

if os.environ.get("EVA_TYPECHECK", "1") == "1":
    # Installed before any test imports the package; it stays installed for the session. Not on the config
    # dataclasses: their own validation answers bad values with a sentence, which the tests check.
    install_import_hook(["eva_jax.nn", "eva_jax.infer", "eva_jax.train", "eva_jax.parallel", "eva_jax.checkpoints",
                         "eva_jax.data", "eva_jax.api", "eva_jax.counts", "eva_jax.serve", "pallas_kernels"],
                        "beartype.beartype")

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def tiny_cfg():
    import eva_jax

    return eva_jax.load_config("v3_tiny")


@pytest.fixture(scope="session")
def tiny_params(tiny_cfg):
    import eva_jax

    return eva_jax.init_params(tiny_cfg, seed=0)
