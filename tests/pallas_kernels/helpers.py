"""Shared by the kernel tests: seeded inputs with the seed in every failure message, and a fast-compiling jit."""

from __future__ import annotations

import jax
import numpy as np

# Interpret-mode kernels become large XLA:CPU programs whose compile time dominates these tests; LLVM's heavy
# optimisation buys nothing for arrays this small.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


class Check:
    """A seeded generator plus comparisons whose failure messages carry the seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def rel_err(self, actual, expected) -> float:
        """max |actual − expected| / max |expected|, in float64 (the tests' notion of relative error)."""
        a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
        return float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-30))

    def close(self, actual, expected, rel: float, what: str) -> None:
        a = np.asarray(actual, np.float64)
        assert a.shape == np.shape(expected), f"{what}: shape {a.shape} != {np.shape(expected)} (seed {self.seed})"
        assert np.all(np.isfinite(a)), f"{what}: non-finite output, e.g. an unwritten element (seed {self.seed})"
        err = self.rel_err(a, expected)
        assert err <= rel, f"{what}: relative error {err:.3g} > {rel:g} (seed {self.seed})"

    def msg(self, text: str) -> str:
        return f"{text} (seed {self.seed})"
