"""Expert-parallel routed experts: dispatch and combine inside shard_map over the `expert` mesh axis.

Per device: its tokens are grouped by destination expert shard (a token travels once to each shard that
hosts at least one of its experts), exchanged with all_to_all, run through the model's grouped matmul
(passed in: this layer holds only the collectives) on the shard's local experts, combined there with their
routing weights, sent back with a
second all_to_all and summed over shards.

Dropless by construction: the send buffer holds every token for every destination ([P, n, D]), so whatever
the routing, nothing is cut. That is the worst case a static shape must allow, the same bound MaxText uses
for its ragged exchange; ragged_all_to_all would send fewer bytes on GPU/TPU but needs the same receive
buffer, and CPU has no implementation, so this exact all_to_all path runs everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, Int

from eva_jax.parallel.mesh import BATCH_AXES, axis_size
from eva_jax.parallel.rules import MeshRules

# (rows [M, D], local expert ids [M, K'] with El meaning "none", their weights [M, K'], w_gate, w_up, w_down)
# -> Σ_k w_k·Expert_k(row) [M, D] in float32: the model's grouped matmul, run on one shard's local experts.
LocalExperts = Callable[..., Array]


def applies(sharding: MeshRules | None, batch: int) -> bool:
    """Expert parallelism runs when the model was given a mesh whose expert axis is > 1 and the batch splits
    over the batch axes (decoding a single row, say, falls back to the GSPMD path)."""
    return sharding is not None and sharding.axis("expert") > 1 and batch % sharding.batch_shards == 0


def _local(x: Float[Array, "n D"], experts: Int[Array, "n K"], weights: Float[Array, "n K"],
           w_gate: Float[Array, "El D F"], w_up: Float[Array, "El D F"], w_down: Float[Array, "El F D"],
           local_experts: LocalExperts, p: int, tensor_parallel: bool) -> Float[Array, "n D"]:
    """One device's share (inside shard_map over `p` expert shards): experts are global ids, the weights the
    local experts."""
    n, k = experts.shape
    e_loc = w_gate.shape[0]
    dest = experts // e_loc  # [n, K] destination shard of each choice
    shards = jnp.arange(p, dtype=experts.dtype)[:, None, None]
    on = dest[None] == shards  # [P, n, K]
    # Local expert id at the destination, or e_loc: the grouped layouts' null expert (padding rows are
    # never computed by "ragged"/"tiled" and come out zero).
    send_e = jnp.where(on, experts[None] - shards * e_loc, e_loc)
    send_w = jnp.where(on, weights[None], 0.0)
    send_x = jnp.where(on.any(-1)[..., None], x[None], jnp.zeros((), x.dtype))
    recv_x = jax.lax.all_to_all(send_x, "expert", 0, 0, tiled=True)
    recv_e = jax.lax.all_to_all(send_e, "expert", 0, 0, tiled=True)
    recv_w = jax.lax.all_to_all(send_w, "expert", 0, 0, tiled=True)
    rows_x = recv_x.reshape(p * n, -1)
    # A token picks distinct experts, so at most min(K, e_loc) of its choices are local: keep those slots.
    k_loc = min(k, e_loc)
    order = jnp.argsort(recv_e.reshape(p * n, k), axis=-1)[:, :k_loc]
    local_e = jnp.take_along_axis(recv_e.reshape(p * n, k), order, -1)
    local_w = jnp.take_along_axis(recv_w.reshape(p * n, k), order, -1)
    # The compute is the caller's (the model's grouped matmul); expert e_loc is its null expert.
    out = local_experts(rows_x, local_e, local_w, w_gate, w_up, w_down)
    if tensor_parallel:
        out = jax.lax.psum(out, "tensor")  # the down projection was split over its F dimension
    back = jax.lax.all_to_all(out.astype(x.dtype).reshape(p, n, -1), "expert", 0, 0, tiled=True)
    return back.astype(jnp.float32).sum(0)


def routed_experts_ep(x: Float[Array, "B T D"], experts: Int[Array, "B T K"], weights: Float[Array, "B T K"],
                      w_gate: Float[Array, "E D F"], w_up: Float[Array, "E D F"], w_down: Float[Array, "E F D"],
                      local_experts: LocalExperts, mesh, chunk: int = 0) -> Float[Array, "B T D"]:
    """Σ_k w_k·Expert_{e_k}(x) with the experts split over `expert`; float32 out, like the single-device path.
    `chunk` > 0 dispatches each device's tokens in blocks of that many (compute.moe_chunk_tokens)."""
    batch = P(BATCH_AXES)
    tp = "tensor" if axis_size(mesh, "tensor") > 1 else None
    p = axis_size(mesh, "expert")

    def body(x, experts, weights, w_gate, w_up, w_down):
        b, t, d = x.shape
        n = b * t
        flat = (x.reshape(n, d), experts.reshape(n, -1), weights.reshape(n, -1))
        if not 0 < chunk < n:
            return _local(*flat, w_gate, w_up, w_down, local_experts, p, tp is not None).reshape(b, t, d)

        # Blocks of `chunk` tokens, one exchange each, recomputed in the backward pass: the dispatch buffers
        # (P·chunk·K' rows) replace P·n·K' ones. Padding tokens (a last partial block) carry zero routing
        # weights, so they add nothing, and their rows are dropped.
        @jax.checkpoint
        def block(args):
            return _local(*args, w_gate, w_up, w_down, local_experts, p, tp is not None)

        blocks = -(-n // chunk)
        padded = (jnp.pad(a, [(0, blocks * chunk - n)] + [(0, 0)] * (a.ndim - 1)) for a in flat)
        out = jax.lax.map(block, tuple(a.reshape(blocks, chunk, *a.shape[1:]) for a in padded))
        return out.reshape(blocks * chunk, d)[:n].reshape(b, t, d)

    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(batch, batch, batch, P("expert", None, tp), P("expert", None, tp), P("expert", tp, None)),
        out_specs=batch,
    )(x, experts, weights, w_gate, w_up, w_down)
