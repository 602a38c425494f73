"""Load and save Hugging Face DeepSeek-V3 / V2 checkpoints (config.json + safetensors, BF16/FP32 or FP8).

Loading goes tensor by tensor through memory maps: each Eva leaf is assembled in a host buffer, moved to the
device and released, so peak host memory stays near the size of the result plus one leaf.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eva_jax.api import Params, abstract_params, model_config
from eva_jax.checkpoints import hf_names
from eva_jax.checkpoints.hf_config import model_config_from_hf, model_config_to_hf
from eva_jax.checkpoints.safetensors_io import CheckpointError, CheckpointReader, ShardedWriter, read_json
from eva_jax.config import ComputeConfig, Config, ModelConfig
from pallas_kernels.quant import dequantize_blocks, quantize_blocks

SCALE_SUFFIX = "_scale_inv"
DEFAULT_SHARD_BYTES = 5 * 2**30


def _dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


def _block_size(hf_config: dict[str, Any]) -> int:
    block = (hf_config.get("quantization_config") or {}).get("weight_block_size", [128, 128])
    if len(block) != 2 or block[0] != block[1]:
        raise CheckpointError(f"quantization_config.weight_block_size={block} is not supported; expected square blocks")
    return int(block[0])


def _read(reader: CheckpointReader, name: str, block: int) -> np.ndarray:
    """A tensor as stored, or dequantised to float32 when it is FP8 (1-byte elements with a scale sibling)."""
    x = reader.get(name)
    if x.dtype.itemsize == 1 and x.dtype.kind not in "iub":
        if name + SCALE_SUFFIX not in reader:
            raise CheckpointError(f"FP8 tensor {name} has no {name + SCALE_SUFFIX} scale tensor")
        return dequantize_blocks(x, reader.get(name + SCALE_SUFFIX), block)
    return x


def _mtp_present(cfg: ModelConfig, reader: CheckpointReader) -> int:
    """MTP depth actually stored: a checkpoint written by transformers' main model carries none."""
    prefix = f"model.layers.{cfg.num_layers}."
    return cfg.num_mtp_layers if any(n.startswith(prefix) for n in reader.names()) else 0


@functools.lru_cache(maxsize=8)  # tracing the abstract init leaves garbage that would count against streaming
def _leaf_shapes(cfg: Config) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract_params(cfg)))[0]
    return {tuple(p.key for p in path): leaf for path, leaf in flat}


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def load_params(config: Config, reader: CheckpointReader, block: int = 128) -> Params:
    """Eva parameters for `config` (in its compute.param_dtype) from the checkpoint's tensors, with named errors
    for missing or misshapen ones."""
    cfg, shapes = config.model, _leaf_shapes(config)
    groups: dict[tuple[str, ...], list[hf_names.Entry]] = defaultdict(list)
    for entry in hf_names.entries(cfg):
        groups[entry.path].append(entry)
    if set(groups) != set(shapes):
        raise AssertionError(f"name map and model disagree: {sorted(set(groups) ^ set(shapes))}")
    params: Params = {}
    for path, group in groups.items():
        leaf = shapes[path]
        buffer = np.empty(leaf.shape, leaf.dtype)
        for entry in group:
            if entry.hf_name not in reader:
                raise CheckpointError(f"checkpoint is missing tensor {entry.hf_name}")
            x = _read(reader, entry.hf_name, block)
            expected = hf_names.hf_shape(leaf.shape[len(entry.index):], entry.layout)
            if tuple(x.shape) != expected:
                raise CheckpointError(f"tensor {entry.hf_name} has shape {tuple(x.shape)}, expected {expected}")
            buffer[entry.index] = hf_names.to_eva(x, entry.layout, cfg.num_heads).astype(leaf.dtype)
        # A copy into memory the runtime owns (jnp.asarray may alias an aligned numpy buffer and keep it alive),
        # finished before the buffer goes: the copy is dispatched asynchronously and holds the buffer until it
        # is done, so on a busy machine several leaves' buffers would otherwise be alive at once.
        _set(params, path, jnp.array(buffer, copy=True).block_until_ready())
        del buffer
    _warn_unused(cfg, reader)
    return params


def _warn_unused(cfg: ModelConfig, reader: CheckpointReader) -> None:
    used = {e.hf_name for e in hf_names.entries(cfg)} | hf_names.ignored_names(cfg)
    extra = [n for n in reader.names() if n not in used and not n.endswith(SCALE_SUFFIX)
             and not n.startswith(f"model.layers.{cfg.num_layers + cfg.num_mtp_layers}.")]
    if extra:
        warnings.warn(f"{len(extra)} checkpoint tensor(s) not used by the model, e.g. {extra[:3]}", stacklevel=3)


def from_hf(path: str | Path, dtype: Any = "float32") -> tuple[Config, Params]:
    """(Config, params) from a Hugging Face DeepSeek-V3 or V2 checkpoint directory; params in `dtype`
    (the router and its bias stay float32). FP8 weights are dequantised with their block scales."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory; expected a Hugging Face checkpoint directory")
    config_path = directory / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{directory} has no config.json; expected a Hugging Face checkpoint directory")
    hf_config = read_json(config_path)
    mc = model_config_from_hf(hf_config)
    reader = CheckpointReader(directory)
    mtp = _mtp_present(mc, reader)
    if mtp != mc.num_mtp_layers:
        mc = ModelConfig(**{**mc.__dict__, "num_mtp_layers": mtp})
    dt = _dtype_name(dtype)
    config = Config(name=directory.name, model=mc, compute=ComputeConfig(dtype=dt, param_dtype=dt))
    return config, load_params(config, reader, _block_size(hf_config))


def _fp8_eligible(entry: hf_names.Entry, x: np.ndarray) -> bool:
    # DeepSeek quantises the linear layers only: not embeddings, head, router, norms or biases.
    return x.ndim == 2 and entry.layout != "copy" and entry.path[-1] not in ("router", "lm_head")


def to_hf(cfg: Config | ModelConfig, params: Params, out_dir: str | Path, dtype: Any = "bfloat16",
          fp8: bool = False, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Writes config.json and safetensors shards in DeepSeek's published layout (per-expert tensors, MTP at
    layer num_hidden_layers with its embedding/head copies). `fp8=True` writes E4M3 linears with 128×128
    `weight_scale_inv` blocks, as DeepSeek-V3 ships."""
    mc = model_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = np.dtype(jnp.dtype(dtype))
    hf_config = model_config_to_hf(mc, _dtype_name(dtype))
    if fp8:
        hf_config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                            "weight_block_size": [128, 128]}
    writer = ShardedWriter(out, max_shard_bytes)
    for entry in hf_names.entries(mc):
        x = hf_names.to_hf(np.asarray(_get(params, entry.path)[entry.index]), entry.layout)
        if entry.path[-1] in ("router", "router_bias"):
            writer.add(entry.hf_name, x.astype(np.float32))  # HF keeps the gate in fp32
        elif fp8 and _fp8_eligible(entry, x):
            wq, scale = quantize_blocks(x)
            writer.add(entry.hf_name, wq)
            writer.add(entry.hf_name + SCALE_SUFFIX, scale)
        else:
            writer.add(entry.hf_name, x.astype(np_dtype))
    for k in range(mc.num_mtp_layers):  # DeepSeek's checkpoints repeat embedding and head under the MTP layer
        hf = f"model.layers.{mc.num_layers + k}"
        writer.add(f"{hf}.embed_tokens.weight", np.asarray(params["embed"]).astype(np_dtype))
        writer.add(f"{hf}.shared_head.head.weight", np.asarray(params["lm_head"]).T.astype(np_dtype))
    writer.close()
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    return out
