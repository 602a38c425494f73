"""Logical axis names → mesh axes: parameter rules and optimizer-state rules (ZeRO-1); activations follow the
batch axes (eva_jax.parallel.mesh.BATCH_AXES) through the step's in/out shardings. Every parameter declares
logical names (eva_jax.param_logical_axes); a rule table maps each name to candidate mesh-axis tuples, the
first whose axes are still free in that parameter wins. Mesh axes of size 1
are dropped, so one table serves every mesh: a layout is a config change (mesh sizes, mesh.rules, mesh.zero1).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from eva_jax.config import Config
from eva_jax.parallel.mesh import BATCH_AXES, axis_size

Rules = dict[str, tuple[tuple[str, ...], ...]]

# Tensor parallelism (Megatron-style column/row splits) is available in both tables through `tensor`;
# DeepSeek-V3 used none (mesh.tensor=1).
_TENSOR: Rules = {
    "heads": (("tensor",),), "mlp": (("tensor",),), "shared_mlp": (("tensor",),),
    "expert_mlp": (("tensor",),), "vocab": (("tensor",),),
}
PARAM_RULES: dict[str, Rules] = {
    # DeepSeek-V3: routed experts split over `expert`, everything else replicated (ZeRO-1 shards only the
    # optimizer state).
    "zero1": {"expert": (("expert",),), **_TENSOR},
    # ZeRO-3 / FSDP: every parameter's model dimension is also split over the data-parallel devices, those of
    # the expert axis included where the expert dimension does not already use it.
    "fsdp": {"expert": (("expert",),), **{name: (("fsdp", "expert"), ("fsdp",)) for name in
                                          ("embed", "q_lora", "kv_lora")}, **_TENSOR},
}


class ShardingError(ValueError):
    """A dimension that its mesh axes do not divide."""


def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def spec_for(name: str, shape: tuple[int, ...], logical: tuple[str | None, ...], rules: Rules,
             mesh) -> P:
    """The PartitionSpec of one array from its logical names; raises ShardingError naming the array, the
    dimension, its size and the mesh axes when they do not divide it."""
    used: set[str] = set()
    out: list[Any] = []
    for dim, (size, logical_name) in enumerate(zip(shape, logical)):
        chosen: tuple[str, ...] = ()
        for candidate in rules.get(logical_name, ()) if logical_name else ():
            live = tuple(a for a in candidate if axis_size(mesh, a) > 1)
            if live and not used.intersection(live):
                chosen = live
                break
        ways = math.prod(axis_size(mesh, a) for a in chosen)
        if size % ways:
            sizes = ", ".join(f"{a}={axis_size(mesh, a)}" for a in chosen)
            raise ShardingError(f"{name}: dimension {dim} ({logical_name!r}, size {size}) is not divisible by "
                                f"mesh axes ({sizes}) of total size {ways}; change the mesh or mesh.rules")
        used.update(chosen)
        out.append(chosen[0] if len(chosen) == 1 else (chosen or None))
    return P(*out)


def param_specs(cfg: Config, mesh, boxed: Any) -> Any:
    """PartitionSpecs for the parameter tree of `cfg` on `mesh`, from its boxed abstract parameters
    (eva_jax.api.abstract_params: each leaf carries its logical axis names)."""
    rules = PARAM_RULES[cfg.mesh.rules]

    def one(path, leaf):
        return spec_for(_path_name(path), leaf.value.shape, tuple(leaf.names), rules, mesh)

    return jax.tree_util.tree_map_with_path(one, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def zero1_spec(spec: P, shape: tuple[int, ...], mesh) -> P:
    """`spec` further split over the data-parallel axes it leaves replicated, on the largest dimension that
    they divide (dropping innermost axes until one does): each replica keeps 1/N of the optimizer state."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    used = {a for e in entries if e for a in ((e,) if isinstance(e, str) else e)}
    extra = tuple(a for a in BATCH_AXES if a not in used and axis_size(mesh, a) > 1)
    while extra:
        ways = math.prod(axis_size(mesh, a) for a in extra)
        best = None
        for dim, size in enumerate(shape):
            current = entries[dim]
            axes = () if current is None else ((current,) if isinstance(current, str) else tuple(current))
            local = size // math.prod(axis_size(mesh, a) for a in axes)
            if local % ways == 0 and (best is None or local > best[1]):
                best = (dim, local, axes)
        if best is not None:
            dim, _, axes = best
            joined = axes + extra
            entries[dim] = joined[0] if len(joined) == 1 else joined
            return P(*entries)
        extra = extra[:-1]
    return P(*entries)


def _param_key(path) -> tuple[str, ...]:
    """The trailing dict keys of an optimizer-state path: the path of the parameter it mirrors."""
    keys: list[str] = []
    for p in reversed(path):
        if not isinstance(p, jax.tree_util.DictKey):
            break
        keys.append(str(p.key))
    return tuple(reversed(keys))


def opt_state_specs(opt_state: Any, params: Any, p_specs: Any, mesh, zero1: bool) -> Any:
    """Specs for every optimizer-state leaf: a leaf mirroring a parameter (same path suffix and shape) lies
    like it, split further by ZeRO-1 when `zero1`; counters and scalars are replicated."""
    table = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        table[_param_key(path)] = (leaf.shape, path)
    spec_of = {tuple(_param_key(p)): s for p, s in jax.tree_util.tree_flatten_with_path(
        p_specs, is_leaf=lambda x: isinstance(x, P))[0]}

    def one(path, leaf):
        key = _param_key(path)
        shape = getattr(leaf, "shape", ())
        if key in table and table[key][0] == shape:
            spec = spec_of[key]
            return zero1_spec(spec, shape, mesh) if zero1 else spec
        return P()

    return jax.tree_util.tree_map_with_path(one, opt_state)


def named(mesh, specs: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def flat_specs(specs: Any) -> list[tuple[str, P]]:
    """(path, spec) pairs in tree order, for the golden file and reports."""
    return [(_path_name(p), s) for p, s in jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, P))[0]]


@dataclasses.dataclass(frozen=True)
class MeshRules:
    """The mesh a step is traced for and the parameter rules it shards by, handed to the model as a module
    attribute (never found in a context). With it, every parameter is constrained to its spec where it is
    declared — inside the layer scan, so a scanned layer's weights are gathered and its gradients
    reduce-scattered one layer at a time instead of GSPMD materialising whole [L, ...] stacks — and the MoE
    dispatches over the `expert` axis when that axis is larger than 1."""

    mesh: Any  # jax.sharding.Mesh or AbstractMesh
    rules: str = "zero1"

    @classmethod
    def of(cls, cfg: Config, mesh) -> MeshRules:
        return cls(mesh, cfg.mesh.rules)

    @property
    def table(self) -> Rules:
        return PARAM_RULES[self.rules]

    def axis(self, name: str) -> int:
        return axis_size(self.mesh, name)

    @property
    def batch_shards(self) -> int:
        return math.prod(self.axis(a) for a in BATCH_AXES)

    def constrain_param(self, value: jax.Array, logical: tuple[str, ...]) -> jax.Array:
        spec = spec_for("parameter", value.shape, logical, self.table, self.mesh)
        return jax.lax.with_sharding_constraint(value, NamedSharding(self.mesh, spec))


def constrain_tree(tree: Any, specs: Any, mesh) -> Any:
    """A parameter-shaped tree (gradients, their accumulator) pinned to the parameters' specs, so it stays as
    sharded as the parameters (FSDP) instead of whatever GSPMD infers."""
    return jax.tree_util.tree_map(lambda x, s: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, s)),
                                  tree, specs)
