"""SwiGLU feed-forward: the dense layers and the shared experts (reference §4.2)."""

from __future__ import annotations

import flax.linen as nn
import jax
from jaxtyping import Array, Float

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn.layers import kernel, linear
from eva_jax.parallel.rules import MeshRules


def swiglu(x: Float[Array, "... D"], w_gate: Float[Array, "D F"], w_up: Float[Array, "D F"],
           w_down: Float[Array, "F D"]) -> Float[Array, "... D"]:
    return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down


class MLP(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig
    width: int
    axis: str = "mlp"
    sharding: MeshRules | None = None

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        compute, d, f = self.compute, self.cfg.hidden_size, self.width
        w_gate = kernel(self, "gate", (d, f), ("embed", self.axis))
        w_up = kernel(self, "up", (d, f), ("embed", self.axis))
        w_down = kernel(self, "down", (f, d), (self.axis, "embed"))
        if compute.matmul == "fp8":
            return linear(jax.nn.silu(linear(x, w_gate, compute)) * linear(x, w_up, compute), w_down, compute)
        return swiglu(x, w_gate, w_up, w_down)
