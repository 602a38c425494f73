"""`python -m eva_jax.train --config=NAME --dry-run`: lower and compile the full train step for the config's
mesh on simulated devices, without allocating parameters, and report memory and FLOPs per device.

The step is the real one (gradient accumulation scan over micro-batches, AdamW with ZeRO-1/FSDP shardings,
expert-parallel MoE, bias update) at the real per-device shapes; only the number of micro-batches is cut to
one, which the scan makes irrelevant to program size and per-device memory (the accumulator is carried, not
stacked). CPU devices are simulated with XLA's host platform, so a child process is started when this one
has fewer devices than the mesh needs; figures are XLA:CPU's buffer assignment for one device's program.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from eva_jax.api import abstract_params
from eva_jax.config import Config, ConfigError
from eva_jax.counts import param_counts
from eva_jax.parallel.mesh import BATCH_AXES, batch_shards, describe_shape, make_mesh, resolve_shape
from eva_jax.parallel.sharding import batch_spec, check_batch
from eva_jax.train.checkpoint import config_record
from eva_jax.train.metrics import train_flops_per_token
from eva_jax.train.optim import make_optimizer
from eva_jax.train.state_sharding import state_shardings
from eva_jax.train.step import make_train_step

DEFAULT_DEVICES = 256
GB = 1e9


def fits_devices(cfg: Config, devices: int) -> str | None:
    """Why the config's mesh cannot be laid over `devices` devices (None when it can): the axis sizes must
    multiply to it and the micro-batch must split over the data-parallel axes."""
    try:
        shape = resolve_shape(cfg.mesh, devices)
    except ConfigError as err:
        return str(err)
    shards = math.prod(shape[a] for a in BATCH_AXES)
    if cfg.train.micro_batch % shards:
        return (f"train.micro_batch={cfg.train.micro_batch} sequences cannot split over the {shards} "
                f"data-parallel devices of the mesh on {devices} devices")
    return None


def default_devices(cfg: Config) -> int:
    """A pod slice of 256 chips, or the largest power of two below it the config's mesh and micro-batch fit
    (a config sized for one host, such as v3_small, dry-runs on the devices its micro-batch splits over)."""
    for devices in (2 ** k for k in range(int(math.log2(DEFAULT_DEVICES)), -1, -1)):
        if fits_devices(cfg, devices) is None:
            return devices
    raise ConfigError(f"no device count up to {DEFAULT_DEVICES} fits mesh {cfg.mesh.shape} with "
                      f"train.micro_batch={cfg.train.micro_batch}; pass --devices")


def dry_run(cfg: Config, devices: int | None = None, hbm_gb: float = 95.0) -> str:
    """The report for `devices` simulated devices (default: $EVA_DRY_RUN_DEVICES, else `default_devices`)."""
    devices = devices or int(os.environ.get("EVA_DRY_RUN_DEVICES", 0)) or default_devices(cfg)
    problem = fits_devices(cfg, devices)
    if problem:
        raise ConfigError(f"dry run on {devices} devices: {problem}")
    if jax.device_count() >= devices:
        return _report(cfg, devices, hbm_gb)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"}
    code = ("import json, sys; from eva_jax.overrides import from_dict; from eva_jax.config import Config; "
            "from eva_jax.train.dry_run import _report; "
            f"print(_report(from_dict(Config, json.loads(sys.stdin.read())), {devices}, {hbm_gb}))")
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(config_record(cfg)), env=env,
                          capture_output=True, text=True, cwd=os.getcwd())
    if done.returncode:
        raise RuntimeError(f"dry-run child failed:\n{done.stderr[-4000:]}")
    return done.stdout.rstrip("\n")


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _report(cfg: Config, devices: int, hbm_gb: float) -> str:

    began = time.perf_counter()
    mesh = make_mesh(cfg.mesh, jax.devices()[:devices])
    check_batch(cfg, mesh)
    boxed = abstract_params(cfg)
    tx = make_optimizer(cfg, np.zeros((1,), np.float32), nn.unbox(boxed))
    state_sh, abstract = state_shardings(cfg, mesh, tx, boxed)
    state_in = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                      abstract, state_sh)
    t, micro = cfg.train.seq_len, cfg.train.micro_batch
    batch = {name: jax.ShapeDtypeStruct((1, micro, t), dtype, sharding=NamedSharding(mesh, batch_spec(3)))
             for name, dtype in (("inputs", jnp.int32), ("targets", jnp.int32), ("target_mask", jnp.bool_))}
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    step = make_train_step(cfg, tx, mesh)
    lowered = step.lower(state_in, batch, scalar, scalar)
    lowered_s = time.perf_counter() - began
    compiled = lowered.compile()
    compile_s = time.perf_counter() - began - lowered_s
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    counts = param_counts(cfg)
    leaves = lambda tree: jax.tree_util.tree_leaves(tree)  # noqa: E731
    per_device = lambda tree, sh: sum(  # noqa: E731
        int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize for a, s in zip(leaves(tree), leaves(sh)))
    params_b = per_device(abstract.params, state_sh.params)
    opt_b = per_device(abstract.opt_state, state_sh.opt_state)
    args_b, temp_b = mem.argument_size_in_bytes, mem.temp_size_in_bytes
    out_b, alias_b = mem.output_size_in_bytes, mem.alias_size_in_bytes
    peak = args_b + temp_b + out_b - alias_b
    unit, scale = ("GB", GB) if peak >= GB else ("MB", 1e6)
    tokens = micro * t
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    model_flops = train_flops_per_token(cfg) * tokens / batch_shards(mesh)
    c = cfg.compute
    lines = [
        f"dry run: {cfg.name} on mesh {describe_shape(mesh)} ({devices} simulated devices), "
        f"mesh.rules={cfg.mesh.rules}, "
        f"zero1={cfg.mesh.zero1}, moe_impl={c.moe_impl}, remat={c.remat_policy}, matmul={c.matmul}",
        f"parameters: {_count(counts['total'])} total / {_count(counts['activated'])} activated per token "
        f"(+{_count(counts['mtp'])} in the MTP modules)",
        f"micro-batch: {micro} × {t} tokens ({tokens // batch_shards(mesh)} tokens per device); "
        f"global batch {cfg.train.global_batch} = {cfg.train.global_batch // micro} micro-batches (compiled with 1: "
        f"the accumulation scan carries, it does not stack)",
        f"per-device memory ({unit}):",
        f"  parameters       {params_b / scale:8.2f}  (param_dtype={c.param_dtype})",
        f"  optimizer state  {opt_b / scale:8.2f}  (moment_dtype={cfg.optim.moment_dtype})",
        f"  arguments        {args_b / scale:8.2f}  (state + batch)",
        f"  temporaries      {temp_b / scale:8.2f}  (gradient accumulator, activations, dispatch buffers)",
        f"  outputs          {out_b / scale:8.2f}  (aliased with donated inputs: {alias_b / scale:.2f})",
        f"  peak estimate    {peak / scale:8.2f}  of {hbm_gb * GB / scale:.0f} {unit} -> "
        f"{'FITS' if peak <= hbm_gb * GB else 'DOES NOT FIT'}",
        f"FLOPs per device per micro-batch: {model_flops:.3e} model (6·activated + attention, "
        f"{train_flops_per_token(cfg) / 1e9:.3g} GFLOP/token; with remat=full the step also recomputes the "
        f"forward); XLA cost analysis: {flops:.3e} (counts each loop body once)",
        f"time: lower {lowered_s:.1f}s, compile {compile_s:.1f}s",
    ]
    return "\n".join(lines)
