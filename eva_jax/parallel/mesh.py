"""Device meshes with the axes data, fsdp, expert, tensor, pipeline, sized from `Config.mesh`.

Every axis is `AxisType.Auto`, deliberately: the model is written for GSPMD propagation (jit with in/out
shardings and a few constraints), and Explicit axes (jax.make_mesh's default in JAX 0.10) would make every
einsum whose operand shardings disagree a type error instead of a resharding. The one place with explicit
collectives, the expert dispatch, uses shard_map, which makes its axes Manual inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from eva_jax.config import MESH_AXES, ConfigError, MeshConfig

# Axes whose devices hold different tokens: a batch is split over all three (expert-parallel ranks are data
# parallel for everything but the routed experts, as in DeepSeek-V3).
BATCH_AXES = ("data", "fsdp", "expert")


def resolve_shape(mesh_cfg: MeshConfig, device_count: int) -> dict[str, int]:
    """Axis sizes with the -1 axis filled so that they multiply to `device_count`."""
    shape = dict(mesh_cfg.shape)
    fixed = math.prod(v for v in shape.values() if v != -1)
    free = [a for a, v in shape.items() if v == -1]
    if free:
        if device_count % fixed:
            raise ConfigError(f"mesh {_fmt(shape)} cannot fill {device_count} devices: the fixed axes multiply to "
                              f"{fixed}, which does not divide {device_count}")
        shape[free[0]] = device_count // fixed
    if math.prod(shape.values()) != device_count:
        raise ConfigError(f"mesh {_fmt(shape)} has {math.prod(shape.values())} devices but {device_count} are "
                          f"available; set one axis to -1 to take the rest")
    return shape


def _fmt(shape: dict[str, int]) -> str:
    return "×".join(f"{a}={v}" for a, v in shape.items() if v != 1) or "1 device"


def make_mesh(mesh_cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh over `devices` (default: all devices of all processes).

    With dcn_* sizes > 1 (multi-slice), the outer part of each split axis runs across slices and the inner
    part within a slice, via mesh_utils.create_hybrid_device_mesh; otherwise jax.make_mesh orders devices
    for the physical topology."""
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_shape(mesh_cfg, len(devices))
    dcn = mesh_cfg.dcn_shape
    types = (AxisType.Auto,) * len(MESH_AXES)
    if math.prod(dcn.values()) == 1:
        return jax.make_mesh(tuple(shape[a] for a in MESH_AXES), MESH_AXES, axis_types=types, devices=devices)
    ici = ici_shape(shape, dcn)
    # CPU and GPU devices have no slice_index; there each process is one "slice" (granule).
    granule_is_process = not hasattr(devices[0], "slice_index")
    grid = mesh_utils.create_hybrid_device_mesh([ici[a] for a in MESH_AXES], [dcn[a] for a in MESH_AXES],
                                                devices, process_is_granule=granule_is_process)
    return Mesh(grid, MESH_AXES, axis_types=types)


def ici_shape(shape: dict[str, int], dcn: dict[str, int]) -> dict[str, int]:
    """The within-slice part of each axis: total size / across-slice size."""
    for axis in MESH_AXES:
        if shape[axis] % dcn[axis]:
            raise ConfigError(f"mesh.{axis}={shape[axis]} is not divisible by mesh.dcn_{axis}={dcn[axis]}")
    return {a: shape[a] // dcn[a] for a in MESH_AXES}


def axis_size(mesh: Mesh | jax.sharding.AbstractMesh, axis: str) -> int:
    return dict(zip(mesh.axis_names, mesh.axis_sizes)).get(axis, 1)


def batch_shards(mesh: Mesh | jax.sharding.AbstractMesh) -> int:
    """How many ways a batch is split."""
    return math.prod(axis_size(mesh, a) for a in BATCH_AXES)


def describe_shape(mesh: Mesh | jax.sharding.AbstractMesh) -> str:
    """"data=4×expert=64"-style name of a mesh."""
    return _fmt(dict(zip(mesh.axis_names, mesh.axis_sizes)))




def abstract_mesh(mesh_cfg: MeshConfig, device_count: int) -> jax.sharding.AbstractMesh:
    """The mesh's shape without devices: enough for sharding rules and golden files."""
    shape = resolve_shape(mesh_cfg, device_count)
    return jax.sharding.AbstractMesh(tuple(shape[a] for a in MESH_AXES), MESH_AXES,
                                     axis_types=(AxisType.Auto,) * len(MESH_AXES))
