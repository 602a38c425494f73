"""SwiGLU feed-forward: the dense layers and the shared experts (reference §4.2)."""

from __future__ import annotations

import flax.linen as nn
import jax
from jaxtyping import Array, Float

from eva_jax.config import ModelConfig
from eva_jax.nn.layers import kernel, linear
from eva_jax.parallel.rules import MeshRules


def swiglu(x: Float[Array, "... D"], w_gate: Float[Array, "D F"], w_up: Float[Array, "D F"],
           w_down: Float[Array, "F D"]) -> Float[Array, "... D"]:
    return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down


class MLP(nn.Module):
    cfg: ModelConfig
    width: int
    axis: str = "mlp"
    sharding: MeshRules | None = None

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        cfg, d, f = self.cfg, self.cfg.hidden_size, self.width
        w_gate = kernel(self, cfg, "gate", (d, f), ("embed", self.axis))
        w_up = kernel(self, cfg, "up", (d, f), ("embed", self.axis))
        w_down = kernel(self, cfg, "down", (f, d), (self.axis, "embed"))
        if cfg.matmul == "fp8":
            return linear(jax.nn.silu(linear(x, w_gate, cfg)) * linear(x, w_up, cfg), w_down, cfg)
        return swiglu(x, w_gate, w_up, w_down)
